/**
 * The HTTP client every networked hx command shares (fetch now; Bulk export
 * and ingest later): undici with connect / first-byte / idle-body timeouts,
 * retries with backoff (see `retry.ts`), pacing to a server's announced
 * rate limit (see `rateLimit.ts`), credentials sent only to one origin, and
 * messages with every secret masked.
 *
 *     const client = new HttpClient({ trustedOrigin: base, credentials: () => ({ authorization: `Bearer ${t}` }) });
 *     const res = await client.fetch({ url, what: 'Patient page 1' });   // 2xx; the body is the caller's to read
 *     const { value } = await client.json({ url, method: 'POST', body });  // retried as a whole, body included
 *     await client.retrying('page 3', (attempt) => …);                     // a caller's own retried unit
 *
 * A status that retrying cannot cure (400, 401, 403, 404, …) fails at once
 * with an `HttpError` that says what to do.
 */
import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from './undici.js';
import { HxError } from '../errors.js';
import { RateLimitGate } from './rateLimit.js';
import { Redactor } from './redact.js';
import { DEFAULT_RETRY, RETRYABLE_STATUS, RetryableError, hasCode, parseRetryAfter, retryDelay, sleep, type RetryPolicy } from './retry.js';

export interface Timeouts {
  /** TCP (and TLS) connect. */
  connectMs: number;
  /** From sending the request to the response headers (a server may think long before it streams). */
  firstByteMs: number;
  /** Longest silence while a body is being read; no limit on the whole download. */
  idleMs: number;
}

/** Suited to multi-GB downloads: no overall limit, generous waits for a slow first byte. */
export const DEFAULT_TIMEOUTS: Timeouts = { connectMs: 30_000, firstByteMs: 300_000, idleMs: 120_000 };

export interface RetryNotice {
  what: string;
  /** The attempt that failed (1 = the first). */
  attempt: number;
  delayMs: number;
  reason: string;
}

export interface HttpClientOptions {
  /** The one origin (`scheme://host:port`) that receives `credentials()`; never any other. */
  trustedOrigin?: string;
  /** Headers that authenticate (and scope) a request; asked per request, since tokens expire. */
  credentials?: () => Record<string, string>;
  /** Headers for every request (Accept, User-Agent). */
  headers?: Record<string, string>;
  timeouts?: Partial<Timeouts>;
  retry?: Partial<RetryPolicy>;
  redactor?: Redactor;
  /** Told before each wait for a retry. */
  onRetry?: (notice: RetryNotice) => void;
  /** Told when requests wait for the server's rate-limit window to reset (once per wait, however many requests wait). */
  onRateLimit?: (waitMs: number) => void;
  /** Advice for a status that fails at once, by status; overrides the generic advice. */
  advice?: Partial<Record<number, string>>;
}

export interface HttpRequest {
  url: string | URL;
  method?: Dispatcher.HttpMethod;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** What this is, for messages ("Observation page 3"); the redacted URL when absent. */
  what?: string;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body, streamed; read it to the end or destroy it. */
  body: Readable;
  url: string;
}

/** A status that another attempt would not change. */
export class HttpError extends HxError {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

const GENERIC_ADVICE: Record<number, string> = {
  400: 'the server refused the request as invalid; check the parameters',
  401: 'the credentials are missing, invalid or expired',
  403: 'the credentials do not allow this',
  404: 'not found; check the base URL and the resource',
  413: 'the request body is too large',
};

/** How much of an error body is read for its message. */
const ERROR_BODY_BYTES = 64 * 1024;

export class HttpClient {
  readonly redactor: Redactor;
  readonly retryPolicy: RetryPolicy;
  /** Requests sent and retries made, for the run's account. */
  readonly stats = { requests: 0, retries: 0 };
  /** Paces requests to the limit a server announces; shared with callers that make their own requests (bulk files). */
  readonly rateLimit: RateLimitGate;
  private readonly agent: Agent;
  private readonly trustedOrigin: string | undefined;

  /**
   * Whether a server has answered this client yet. Until one has, a refused
   * connection means nothing listens at the address (a wrong URL, a server
   * not started): failing at once says so, where retrying with backoff would
   * keep the user waiting a minute and more for the same answer. Once a
   * server has answered, a refusal is a restart under way and is retried.
   */
  private answered = false;

  constructor(private readonly options: HttpClientOptions = {}) {
    const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    this.agent = new Agent({
      connect: { timeout: timeouts.connectMs },
      headersTimeout: timeouts.firstByteMs,
      bodyTimeout: timeouts.idleMs,
    });
    this.redactor = options.redactor ?? new Redactor();
    this.retryPolicy = { ...DEFAULT_RETRY, ...options.retry };
    this.rateLimit = new RateLimitGate(this.retryPolicy.maxRetryAfterMs, options.onRateLimit);
    this.trustedOrigin = options.trustedOrigin === undefined ? undefined : new URL(options.trustedOrigin).origin;
  }

  /** Whether `url` may receive the credentials. */
  isTrusted(url: string | URL): boolean {
    return this.trustedOrigin !== undefined && new URL(url).origin === this.trustedOrigin;
  }

  /**
   * One attempt: resolves with a 2xx response, or throws a `RetryableError`
   * (429, 5xx, network failure), or an `HttpError` (any other status).
   */
  async attempt(req: HttpRequest): Promise<HttpResponse> {
    const url = new URL(req.url);
    const headers = { ...this.options.headers, ...req.headers, ...(this.isTrusted(url) ? this.options.credentials?.() : {}) };
    await this.rateLimit.before(url.origin, req.signal);
    this.stats.requests++;
    // A network failure is thrown as is: `retryDelay` classifies it by its code.
    const res = await request(url, { dispatcher: this.agent, method: req.method ?? 'GET', headers, body: req.body, signal: req.signal });
    this.answered = true;
    this.rateLimit.observe(url.origin, res.headers);
    const response: HttpResponse = { status: res.statusCode, headers: res.headers, body: res.body, url: url.toString() };
    if (res.statusCode >= 200 && res.statusCode < 300) return response;
    const detail = await errorDetail(res.body);
    const what = this.what(req);
    const serverSays = detail ? `; the server says: ${this.redactor.text(detail)}` : '';
    if (RETRYABLE_STATUS.has(res.statusCode)) {
      const retryAfter = parseRetryAfter(res.headers['retry-after'], Date.now(), this.retryPolicy.maxRetryAfterMs);
      throw new RetryableError(`${what}: HTTP ${res.statusCode}${serverSays}`, retryAfter, res.statusCode);
    }
    const advice = this.options.advice?.[res.statusCode] ?? GENERIC_ADVICE[res.statusCode];
    throw new HttpError(`${what}: HTTP ${res.statusCode}${advice ? ` — ${advice}` : ''}${serverSays}`, res.statusCode);
  }

  /** `attempt` until it succeeds or the retries run out: a 2xx response whose body is the caller's. */
  fetch(req: HttpRequest): Promise<HttpResponse> {
    return this.retrying(this.what(req), () => this.attempt(req), req.signal);
  }

  /** A request whose JSON response is small: retried as a whole, body included. */
  json<T = unknown>(req: HttpRequest): Promise<{ status: number; headers: HttpResponse['headers']; value: T }> {
    return this.retrying(
      this.what(req),
      async () => {
        const res = await this.attempt({ ...req, headers: { accept: 'application/json', ...req.headers } });
        let text: string;
        try {
          text = await (res.body as unknown as { text(): Promise<string> }).text();
        } catch (err) {
          res.body.destroy();
          throw err;
        }
        const value = text === '' ? undefined : parseJson(text, this.what(req));
        return { status: res.status, headers: res.headers, value: value as T };
      },
      req.signal,
    );
  }

  /**
   * Runs `unit` until it succeeds, waiting between attempts as the policy
   * says. `unit` may be more than a request (a page read to its end); it
   * signals a curable failure by throwing a `RetryableError` or a network error.
   */
  async retrying<T>(what: string, unit: (attempt: number) => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await unit(attempt);
      } catch (err) {
        const delay = this.delayAfter(err, attempt, what);
        if (delay === undefined) throw this.finalError(err, attempt, what);
        await sleep(delay, signal);
      }
    }
  }

  /**
   * For callers running their own retry loop (a generator cannot be wrapped
   * by `retrying`): the wait before the next attempt, announced, or
   * undefined when the failure is final.
   */
  delayAfter(err: unknown, attempt: number, what: string): number | undefined {
    if (this.nothingListens(err)) return undefined;
    const delay = retryDelay(err, attempt, this.retryPolicy);
    if (delay === undefined) return undefined;
    this.stats.retries++;
    this.options.onRetry?.({ what, attempt, delayMs: delay, reason: this.reason(err) });
    return delay;
  }

  /** The error to throw when retrying stops: user-facing, secrets masked, attempts counted. */
  finalError(err: unknown, attempt: number, what: string): Error {
    // HttpError messages are built redacted; an abort is the caller's own doing.
    if (err instanceof HxError || (err as Error)?.name === 'AbortError') return err as Error;
    const tries = attempt > 1 ? ` (gave up after ${attempt} attempts)` : '';
    const hint = this.nothingListens(err) ? ': nothing answers at that address (is the server running, and is the URL right?)' : '';
    const reason = this.reason(err) + hint;
    return new HxError(`${reason.startsWith(what) ? reason : `${what}: ${reason}`}${tries}`);
  }

  /** A refused connection before any server has answered this client (see `answered`). */
  private nothingListens(err: unknown): boolean {
    return !this.answered && hasCode(err, 'ECONNREFUSED');
  }

  reason(err: unknown): string {
    const e = err as { code?: string; message?: string };
    const text = e?.message ?? String(err);
    return this.redactor.text(e?.code && !text.includes(e.code) ? `${text} (${e.code})` : text);
  }

  what(req: HttpRequest): string {
    return req.what ?? `${req.method ?? 'GET'} ${this.redactor.url(req.url)}`;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/** The text of an error response: an OperationOutcome's issues, or the start of a plain-text body. */
async function errorDetail(body: Readable): Promise<string | undefined> {
  const parts: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of body) {
      parts.push(chunk as Buffer);
      bytes += (chunk as Buffer).length;
      if (bytes >= ERROR_BODY_BYTES) break;
    }
  } catch {
    return undefined;
  } finally {
    body.destroy();
  }
  const text = Buffer.concat(parts).toString('utf8').trim();
  if (!text) return undefined;
  try {
    const value = JSON.parse(text) as { resourceType?: string; issue?: { diagnostics?: string; details?: { text?: string } }[] };
    if (value?.resourceType === 'OperationOutcome' && Array.isArray(value.issue)) {
      const said = value.issue.map((i) => i?.diagnostics ?? i?.details?.text).filter(Boolean);
      return said.length ? clip(said.join('; ')) : undefined;
    }
    return undefined;
  } catch {
    // An HTML error page says nothing a user needs beyond its status.
    return /^</.test(text) ? undefined : clip(text.replace(/\s+/g, ' '));
  }
}

function clip(text: string): string {
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new HxError(`${what}: the response is not JSON`);
  }
}
