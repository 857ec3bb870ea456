/**
 * Where and how `hx ingest`, `hx import` and `hx export-healthex --import`
 * post: the URL, the headers of each mode, and the HTTP client that sends
 * them. Secrets (the step-up secret and every token minted from it) are
 * registered with the client's redactor, so no message can print them.
 */
import { HttpClient } from '../http/client.js';
import { rateLimitNotice } from '../http/rateLimit.js';
import { UsageError } from '../errors.js';
import { StepUpTokens, checkTenant } from '../healthclaw/stepUp.js';
import type { IngestMode } from '../../transforms/postIngest.js';

export const DEFAULT_BASE_URL = 'http://localhost:5000/r6/fhir';

export interface IngestTarget {
  base: string;
  mode: IngestMode;
  tenant?: string;
  /** Step-up secret; required for HealthClaw's ingest. */
  secret?: string;
}

/** Checks the target before any request: base URL, tenant pattern, secret. */
export function checkTarget(target: IngestTarget): IngestTarget {
  if (!URL.canParse(target.base) || !/^https?:$/.test(new URL(target.base).protocol)) {
    throw new UsageError('--base-url must be an http(s) URL, such as http://localhost:5000/r6/fhir');
  }
  const base = target.base.replace(/\/+$/, '');
  if (target.tenant !== undefined) checkTenant(target.tenant);
  if (target.mode === 'ingest') {
    if (target.tenant === undefined) throw new UsageError('--tenant-id is required with --mode ingest');
    if (!target.secret) {
      throw new UsageError('STEP_UP_SECRET is required. Pass --step-up-secret or set the STEP_UP_SECRET environment variable.');
    }
  }
  return { ...target, base };
}

/** The URL each chunk is posted to. */
export function postUrl(target: IngestTarget): string {
  return target.mode === 'ingest' ? `${target.base}/Bundle/$ingest-context` : target.base;
}

/** The headers every post carries; `mask` shows the token as `***` (dry runs). */
export function postHeaders(target: IngestTarget, token: () => string): Record<string, string> {
  const headers: Record<string, string> = { 'Content-Type': 'application/fhir+json' };
  if (target.tenant !== undefined) headers['X-Tenant-ID'] = target.tenant;
  if (target.secret) headers['X-Step-Up-Token'] = token();
  if (target.mode === 'ingest' || target.secret) headers['X-Human-Confirmed'] = 'true';
  return headers;
}

/**
 * The client for posting: credentials go to the base URL's origin only, and
 * the token is asked for per attempt, so a retry after a long Retry-After
 * wait still carries a live token (StepUpTokens renews it a minute early).
 */
export function ingestClient(target: IngestTarget, onMessage: (text: string) => void, clock: () => number = Date.now): HttpClient {
  let client: HttpClient | undefined = undefined;
  const tokens = target.secret
    ? new StepUpTokens({ secret: target.secret, tenant: target.tenant!, subject: 'hx-ingest' }, (token) => client?.redactor.add(token), clock)
    : undefined;
  client = new HttpClient({
    trustedOrigin: target.base,
    credentials: () => {
      const headers = postHeaders(target, () => tokens!.current());
      delete headers['Content-Type'];
      return headers;
    },
    onRetry: (n) => onMessage(`${n.what}: ${n.reason}; retrying in ${Math.round(n.delayMs / 100) / 10} s (attempt ${n.attempt + 1})`),
    onRateLimit: (ms) => onMessage(rateLimitNotice(ms)),
    advice: {
      401: 'the step-up token was refused: check --step-up-secret (the server\'s STEP_UP_SECRET) and the tenant',
      400: 'the server refused the Bundle',
    },
  });
  client.redactor.add(target.secret);
  return client;
}
