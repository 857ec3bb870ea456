/**
 * One attempt at an export file, following redirects by hand: the shared
 * `HttpClient` does not follow them, and files are often served from
 * storage on another host. `Authorization` goes to the manifest's own
 * origin only and is dropped as soon as a redirect changes the origin (a
 * signed storage URL must not see the FHIR token).
 */
import { Agent, request } from '../http/undici.js';
import { HxError } from '../errors.js';
import type { HttpClient, HttpResponse } from '../http/client.js';
import { RETRYABLE_STATUS, RetryableError, parseRetryAfter } from '../http/retry.js';
import { DEFAULT_TIMEOUTS, type Timeouts } from '../http/client.js';
import { header } from './kickoff.js';

const MAX_REDIRECTS = 5;

/** Thrown for 401 on a file, so the caller can renew the token and try again. */
export class Unauthorized extends HxError {}

export class FileFetcher {
  private readonly agent: Agent;

  constructor(
    private readonly client: HttpClient,
    timeouts: Partial<Timeouts> = {},
  ) {
    const t = { ...DEFAULT_TIMEOUTS, ...timeouts };
    this.agent = new Agent({ connect: { timeout: t.connectMs }, headersTimeout: t.firstByteMs, bodyTimeout: t.idleMs });
  }

  /**
   * A 2xx response (the body is the caller's), or throws: `RetryableError`
   * for 429/5xx, `Unauthorized` for 401, `HxError` otherwise (410: expired).
   */
  async attempt(url: string, headers: Record<string, string>, auth: Record<string, string>, what: string, signal?: AbortSignal): Promise<HttpResponse> {
    const origin = new URL(url).origin;
    let current = url;
    for (let hop = 0; ; hop++) {
      const currentOrigin = new URL(current).origin;
      const sendAuth = currentOrigin === origin;
      await this.client.rateLimit.before(currentOrigin, signal);
      this.client.stats.requests++;
      const res = await request(current, { dispatcher: this.agent, headers: { ...headers, ...(sendAuth ? auth : {}) }, signal });
      this.client.rateLimit.observe(currentOrigin, res.headers);
      const location = header(res.headers['location']);
      if (res.statusCode >= 300 && res.statusCode < 400 && location) {
        res.body.resume();
        if (hop >= MAX_REDIRECTS) throw new HxError(`${what}: more than ${MAX_REDIRECTS} redirects`);
        current = new URL(location, current).toString();
        continue;
      }
      if (res.statusCode >= 200 && res.statusCode < 300) return { status: res.statusCode, headers: res.headers, body: res.body, url: current };
      const said = await serverSays(res.body, this.client);
      const message = `${what}: HTTP ${res.statusCode}${said}`;
      if (RETRYABLE_STATUS.has(res.statusCode)) {
        throw new RetryableError(message, parseRetryAfter(res.headers['retry-after'], Date.now(), this.client.retryPolicy.maxRetryAfterMs), res.statusCode);
      }
      if (res.statusCode === 401) throw new Unauthorized(`${message} — the access token was refused`);
      if (res.statusCode === 410) throw new HxError(`${message} — the file has expired; start a new export`);
      throw new HxError(message);
    }
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/** The diagnostics of an OperationOutcome error body (or its plain text), clipped and redacted. */
async function serverSays(body: NodeJS.ReadableStream & { text(): Promise<string> }, client: HttpClient): Promise<string> {
  let text: string;
  try {
    text = (await body.text()).slice(0, 64 * 1024).trim();
  } catch {
    return '';
  }
  if (!text || text.startsWith('<')) return '';
  let said = text.replace(/\s+/g, ' ');
  try {
    const value = JSON.parse(text) as { issue?: { diagnostics?: string; details?: { text?: string } }[] };
    if (Array.isArray(value?.issue)) said = value.issue.map((i) => i?.diagnostics ?? i?.details?.text).filter(Boolean).join('; ');
  } catch {
    // plain text
  }
  return said ? `; the server says: ${client.redactor.text(said.length > 300 ? `${said.slice(0, 300)}…` : said)}` : '';
}
