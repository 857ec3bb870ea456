/**
 * When to try a request again and how long to wait first.
 *
 * Retried: HTTP 429, 500, 502, 503, 504 and network failures (reset,
 * refused, timeouts, a body cut short). The wait honours `Retry-After`
 * (delta seconds or an HTTP date) when it is plausible; otherwise, and for
 * network failures, it is exponential backoff with jitter, capped.
 */
export interface RetryPolicy {
  /** Retries after the first attempt. */
  retries: number;
  /** First backoff delay; doubles each attempt. */
  baseMs: number;
  /** Longest backoff delay. */
  maxMs: number;
  /** Longest `Retry-After` honoured; a longer (or absurd) value is treated as absent. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 6, baseMs: 500, maxMs: 30_000, maxRetryAfterMs: 15 * 60_000 };

/** Statuses worth another try: rate limited, or a server/gateway that may recover. */
export const RETRYABLE_STATUS = new Set([429, 500, 502, 503, 504]);

/** A failure that another attempt may cure. `retryAfterMs` is the server's wish, when it gave one. */
export class RetryableError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'RetryableError';
  }
}

/** Network error codes (Node and undici) that a new connection may cure. */
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

export function isRetryable(err: unknown): boolean {
  return err instanceof RetryableError || someCode(err, (code) => RETRYABLE_CODES.has(code));
}

/** Whether `err` or one of its causes carries `code`. */
export function hasCode(err: unknown, code: string): boolean {
  return someCode(err, (c) => c === code);
}

/** Looks at the codes of `err` and its causes, a few levels down (undici wraps errors). */
function someCode(err: unknown, test: (code: string) => boolean): boolean {
  for (let e = err as { code?: string; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (e.code && test(e.code)) return true;
  }
  return false;
}

/**
 * `Retry-After` in milliseconds, or undefined when absent or implausible:
 * negative, unparsable, or further away than `maxMs` (an absolute epoch sent
 * as seconds, a date years ahead). A date in the past means "now".
 */
export function parseRetryAfter(value: string | string[] | undefined, now: number, maxMs: number): number | undefined {
  if (Array.isArray(value)) value = value[0];
  if (value === undefined) return undefined;
  const text = value.trim();
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    const date = Date.parse(text);
    if (Number.isNaN(date) || !/[a-z]/i.test(text)) return undefined;
    ms = Math.max(0, date - now);
  }
  return ms <= maxMs ? ms : undefined;
}

/** Exponential backoff with "equal jitter": half fixed, half random, so waits never collapse to zero. */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * How long to wait before attempt `attempt + 1` after `err`, or undefined
 * when `err` is not worth retrying or the retries are used up.
 */
export function retryDelay(err: unknown, attempt: number, policy: RetryPolicy): number | undefined {
  if (attempt > policy.retries || !isRetryable(err)) return undefined;
  const asked = err instanceof RetryableError ? err.retryAfterMs : undefined;
  return asked ?? backoffMs(attempt, policy);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
