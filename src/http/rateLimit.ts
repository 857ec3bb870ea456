/**
 * Pacing for servers that announce their rate limit. HealthClaw allows 120
 * requests per 60 s and says on every response how many are left
 * (`X-RateLimit-Remaining`) and when its window resets (`X-RateLimit-Reset`).
 * When the window's requests are used up, the next request to that origin
 * waits for the reset instead of drawing a 429. A 429 can still happen (a
 * server that counts differently, requests already in flight); it is retried,
 * honouring `Retry-After`, as before.
 *
 * `X-RateLimit-Reset` is read as epoch seconds when it is that large (GitHub,
 * Flask-Limiter), otherwise as seconds from now (the IETF draft); a reset
 * further away than `maxWaitMs` is ignored as implausible.
 */
import { sleep } from './retry.js';

interface Window {
  /** When the server's window resets (epoch ms). */
  resetAt: number;
  /** Requests we may still send before then. */
  left: number;
}

/** Above this a reset is epoch seconds (2001-09-09), below it seconds from now. */
const EPOCH_SECONDS_FROM = 1e9;

export class RateLimitGate {
  /** Waits made and their total length, for the account. */
  readonly stats = { waits: 0, waitedMs: 0 };
  private readonly windows = new Map<string, Window>();
  /** The reset last announced per origin: requests waiting for the same reset make one notice. */
  private readonly announced = new Map<string, number>();

  constructor(
    private readonly maxWaitMs: number,
    private readonly onWait?: (waitMs: number, origin: string) => void,
  ) {}

  /** Resolves when a request to `origin` may be sent, and counts it against the window. */
  async before(origin: string, signal?: AbortSignal): Promise<void> {
    for (;;) {
      const window = this.windows.get(origin);
      if (!window) return;
      const now = Date.now();
      if (now >= window.resetAt) {
        this.windows.delete(origin);
        return;
      }
      if (window.left > 0) {
        window.left--;
        return;
      }
      const ms = window.resetAt - now;
      if (this.announced.get(origin) !== window.resetAt) {
        this.announced.set(origin, window.resetAt);
        this.stats.waits++;
        this.stats.waitedMs += ms;
        this.onWait?.(ms, origin);
      }
      await sleep(ms, signal);
    }
  }

  /** Reads the limit a response announced. */
  observe(origin: string, headers: Record<string, string | string[] | undefined>, now = Date.now()): void {
    const remaining = integer(headers['x-ratelimit-remaining']);
    const reset = integer(headers['x-ratelimit-reset']);
    if (remaining === undefined || reset === undefined) return;
    const resetAt = reset >= EPOCH_SECONDS_FROM ? reset * 1000 : now + reset * 1000;
    if (resetAt <= now || resetAt - now > this.maxWaitMs) return;
    const window = this.windows.get(origin);
    // A response of an earlier window (it was in flight across the reset) says nothing about this one.
    if (window && resetAt < window.resetAt) return;
    if (window && resetAt === window.resetAt) window.left = Math.min(window.left, remaining);
    else this.windows.set(origin, { resetAt, left: remaining });
  }
}

/** The stderr line for a wait. */
export function rateLimitNotice(waitMs: number): string {
  return `the server's rate limit is used up for now; waiting ${(waitMs / 1000).toFixed(1)} s for its window to reset`;
}

function integer(value: string | string[] | undefined): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  return text && /^\d+$/.test(text) ? Number(text) : undefined;
}
