/**
 * HealthClaw's rate limit as the test servers play it: a fixed window per
 * tenant (120 requests per 60 s on the real server), opened by the first
 * request; every answer carries `X-RateLimit-Limit`, `-Remaining` and
 * `-Reset` (epoch seconds, rounded up), and a request over the limit gets
 * 429 with `Retry-After` (seconds, rounded up). With `announce: false` only
 * the 429 says anything (a server that does not announce its limit).
 */
export interface RateLimit {
  requests: number;
  windowMs: number;
  /** Send the X-RateLimit headers (default true). */
  announce?: boolean;
}

export class FixedWindowLimiter {
  private readonly windows = new Map<string, { endsAt: number; used: number }>();

  constructor(private readonly limit: RateLimit) {}

  /** Counts a request of `key`: whether it is allowed, and the headers to answer with. */
  take(key: string, now = Date.now()): { allowed: boolean; headers: Record<string, string> } {
    let window = this.windows.get(key);
    if (!window || now >= window.endsAt) {
      window = { endsAt: now + this.limit.windowMs, used: 0 };
      this.windows.set(key, window);
    }
    const allowed = window.used < this.limit.requests;
    if (allowed) window.used++;
    const headers: Record<string, string> =
      this.limit.announce === false
        ? {}
        : {
            'x-ratelimit-limit': String(this.limit.requests),
            'x-ratelimit-remaining': String(this.limit.requests - window.used),
            'x-ratelimit-reset': String(Math.ceil(window.endsAt / 1000)),
          };
    if (!allowed) headers['retry-after'] = String(Math.ceil((window.endsAt - now) / 1000));
    return { allowed, headers };
  }
}

/** `120/60` → 120 requests per 60 s. */
export function parseRateLimit(text: string): RateLimit {
  const [requests, seconds] = text.split('/').map(Number);
  if (!requests || !seconds) throw new Error(`--rate-limit wants REQUESTS/SECONDS, not ${text}`);
  return { requests, windowMs: seconds * 1000 };
}
