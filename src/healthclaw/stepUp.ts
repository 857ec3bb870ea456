/**
 * HealthClaw step-up tokens and tenant ids, exactly as the server checks
 * them (see `shared/contracts/healthclaw.md`, "Step-up tokens"):
 *
 *     token   = payload "." signature
 *     payload = base64url, WITH its `=` padding, of the compact JSON
 *               {"exp":…,"tid":"…","sub":"…","nonce":"…"} (keys in that
 *               order, non-ASCII escaped as \uXXXX, as Python's json.dumps)
 *     signature = hex HMAC-SHA256 over the payload *string*, keyed with the
 *               UTF-8 bytes of the secret
 *
 * The server's decoder needs the padding, so Node's `base64url` encoding
 * (which drops it) must not be used as is.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';

/** What the server accepts in `X-Tenant-ID` (a full match). */
export const TENANT_PATTERN = /^[a-zA-Z0-9_-]{1,64}$/;

/** Seconds a token is valid; the server rejects `exp` in the past. */
export const STEP_UP_TTL_SECONDS = 300;

/** Returns the tenant, or throws before any request is made. The id itself is not PHI. */
export function checkTenant(tenant: string): string {
  if (!TENANT_PATTERN.test(tenant)) {
    throw new UsageError(`tenant id must be 1 to 64 letters, digits, "_" or "-" (got ${JSON.stringify(tenant.slice(0, 80))})`);
  }
  return tenant;
}

export interface StepUpClaims {
  /** Expiry, epoch seconds. */
  exp: number;
  /** Tenant the token is bound to. */
  tid: string;
  /** Agent id. */
  sub: string;
  /** 16 random bytes as 32 lowercase hex characters. */
  nonce: string;
}

/** Signs the claims with the secret. Pure: the caller picks exp and nonce. */
export function signStepUpToken(claims: StepUpClaims, secret: string): string {
  const json = asciiJson({ exp: claims.exp, tid: claims.tid, sub: claims.sub, nonce: claims.nonce });
  const payload = Buffer.from(json, 'utf8').toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
  const signature = createHmac('sha256', Buffer.from(secret, 'utf8')).update(payload, 'latin1').digest('hex');
  return `${payload}.${signature}`;
}

export interface MintOptions {
  secret: string;
  tenant: string;
  /** Agent id (`sub`); `hx` by default. */
  subject?: string;
  /** Clock, epoch milliseconds (tests). */
  now?: number;
  ttlSeconds?: number;
}

/** A fresh token for `tenant`, valid for five minutes. */
export function mintStepUpToken(options: MintOptions): string {
  const now = options.now ?? Date.now();
  return signStepUpToken(
    {
      exp: Math.floor(now / 1000) + (options.ttlSeconds ?? STEP_UP_TTL_SECONDS),
      tid: checkTenant(options.tenant),
      sub: options.subject ?? 'hx',
      nonce: randomBytes(16).toString('hex'),
    },
    options.secret,
  );
}

/**
 * Hands out a token, minting a new one when the current one has less than a
 * minute left, so a long run never sends an expired token.
 */
export class StepUpTokens {
  private token = '';
  private mintedAt = -Infinity;

  constructor(
    private readonly options: Omit<MintOptions, 'now'>,
    private readonly onMint: (token: string) => void = () => {},
    private readonly clock: () => number = Date.now,
  ) {
    checkTenant(options.tenant);
  }

  current(): string {
    const now = this.clock();
    const ttl = (this.options.ttlSeconds ?? STEP_UP_TTL_SECONDS) * 1000;
    if (now - this.mintedAt > ttl - 60_000) {
      this.token = mintStepUpToken({ ...this.options, now });
      this.mintedAt = now;
      this.onMint(this.token);
    }
    return this.token;
  }
}

/** JSON.stringify, with every UTF-16 unit outside printable ASCII (DEL and above) written as a lowercase \uXXXX escape (Python's ensure_ascii). */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}
