import { execFileSync } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HxError } from '../src/errors.js';
import { HttpClient, HttpError } from '../src/http/client.js';
import { RateLimitGate } from '../src/http/rateLimit.js';
import { Redactor } from '../src/http/redact.js';
import { backoffMs, DEFAULT_RETRY, isRetryable, parseRetryAfter, retryDelay, RetryableError } from '../src/http/retry.js';
import { request } from '../src/http/undici.js';
import { bodyChunks } from '../src/http/bodyChunks.js';
import { PassThrough, Readable } from 'node:stream';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { brokenBody, decodedBody } from '../src/http/contentEncoding.js';
import { HX } from './support/cli.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

/** A loopback server answering with `handler`; `seen` logs each request's headers. */
async function server(handler: Handler): Promise<{ url: string; seen: IncomingMessage['headers'][] }> {
  const seen: IncomingMessage['headers'][] = [];
  const s = createServer((req, res) => {
    seen.push(req.headers);
    handler(req, res, seen.length);
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => { s.closeAllConnections(); s.close(() => resolve()); }));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}/x`, seen };
}

const FAST = { retries: 3, baseMs: 1, maxMs: 5 };

describe('Retry-After', () => {
  const now = Date.parse('2026-03-01T10:00:00Z');
  const max = DEFAULT_RETRY.maxRetryAfterMs;
  it('reads delta seconds and HTTP dates', () => {
    expect(parseRetryAfter('0', now, max)).toBe(0);
    expect(parseRetryAfter(' 12 ', now, max)).toBe(12_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 10:00:30 GMT', now, max)).toBe(30_000);
    expect(parseRetryAfter('Sun, 01 Mar 2026 09:00:00 GMT', now, max)).toBe(0); // past: now
    expect(parseRetryAfter(['7'], now, max)).toBe(7000);
  });
  it('treats absent, malformed and implausible values as absent', () => {
    expect(parseRetryAfter(undefined, now, max)).toBeUndefined();
    expect(parseRetryAfter('soon', now, max)).toBeUndefined();
    expect(parseRetryAfter('-5', now, max)).toBeUndefined();
    expect(parseRetryAfter('1.5', now, max)).toBeUndefined();
    expect(parseRetryAfter('1772359200', now, max)).toBeUndefined(); // an absolute epoch sent as seconds
    expect(parseRetryAfter('Fri, 01 Mar 2030 10:00:00 GMT', now, max)).toBeUndefined(); // years ahead
  });
});

describe('backoff', () => {
  it('doubles from the base, with jitter between half and all of it, capped', () => {
    const policy = { ...DEFAULT_RETRY, baseMs: 100, maxMs: 1000 };
    expect(backoffMs(1, policy, () => 0)).toBe(50);
    expect(backoffMs(1, policy, () => 1)).toBe(100);
    expect(backoffMs(3, policy, () => 1)).toBe(400);
    expect(backoffMs(10, policy, () => 1)).toBe(1000);
    expect(backoffMs(10, policy, () => 0)).toBe(500);
  });
  it('honours the server, else backs off; stops after the last retry or on a final error', () => {
    const policy = { ...DEFAULT_RETRY, retries: 2 };
    expect(retryDelay(new RetryableError('429', 3000, 429), 1, policy)).toBe(3000);
    expect(retryDelay(new RetryableError('503', undefined, 503), 2, policy)).toBeGreaterThan(0);
    expect(retryDelay(new RetryableError('503'), 3, policy)).toBeUndefined();
    expect(retryDelay(new HxError('401'), 1, policy)).toBeUndefined();
  });
  it('retries network failures by code, also when wrapped', () => {
    expect(isRetryable(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('x'), { cause: { code: 'UND_ERR_SOCKET' } }))).toBe(true);
    expect(isRetryable(Object.assign(new Error('dns'), { code: 'ENOTFOUND' }))).toBe(false);
  });
});

describe('rate limit pacing', () => {
  const origin = 'http://127.0.0.1:1';
  const limit = (remaining: number, reset: number | string) => ({ 'x-ratelimit-limit': '120', 'x-ratelimit-remaining': String(remaining), 'x-ratelimit-reset': String(reset) });
  /** Whether `promise` has settled once pending timers up to now have run. */
  const settled = async (promise: Promise<unknown>) => {
    let done = false;
    void promise.then(() => (done = true));
    await vi.advanceTimersByTimeAsync(0);
    return done;
  };
  afterEach(() => vi.useRealTimers());

  it('lets the requests left in the window through, then waits for the reset (epoch seconds) once for all waiters', async () => {
    vi.useFakeTimers({ now: Date.parse('2026-03-01T10:00:00.000Z') });
    const waits: number[] = [];
    const gate = new RateLimitGate(DEFAULT_RETRY.maxRetryAfterMs, (ms) => waits.push(ms));
    gate.observe(origin, limit(2, Date.parse('2026-03-01T10:00:30Z') / 1000));
    expect(await settled(gate.before(origin))).toBe(true);
    expect(await settled(gate.before(origin))).toBe(true);
    const third = gate.before(origin);
    const fourth = gate.before(origin);
    // A waiter whose run is stopped leaves at once; the others keep waiting.
    const controller = new AbortController();
    const stopped = gate.before(origin, controller.signal);
    controller.abort(new Error('stopped'));
    await expect(stopped).rejects.toThrow('stopped');
    expect(await settled(third)).toBe(false);
    await vi.advanceTimersByTimeAsync(29_999);
    expect(await settled(fourth)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(third)).toBe(true);
    expect(await settled(fourth)).toBe(true);
    expect(waits).toEqual([30_000]);
    expect(gate.stats).toEqual({ waits: 1, waitedMs: 30_000 });
    // Another origin was never limited.
    expect(await settled(gate.before('http://127.0.0.1:2'))).toBe(true);
  });

  it('reads a small reset as seconds from now, and ignores absent, malformed, stale and implausible announcements', async () => {
    vi.useFakeTimers({ now: Date.parse('2026-03-01T10:00:00.000Z') });
    const gate = new RateLimitGate(60_000);
    gate.observe(origin, limit(0, 5));
    const waiting = gate.before(origin);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(await settled(waiting)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(waiting)).toBe(true);
    for (const headers of [{}, { 'x-ratelimit-remaining': '0' }, limit(0, 'soon'), limit(0, 3600), limit(0, Date.now() / 1000 - 10)]) {
      const fresh = new RateLimitGate(60_000);
      fresh.observe(origin, headers);
      expect(await settled(fresh.before(origin))).toBe(true);
    }
    // A response of the window before (its reset earlier than the one known) does not close the current one.
    const now = Date.now() / 1000;
    gate.observe(origin, limit(5, now + 20));
    gate.observe(origin, limit(0, now + 10));
    expect(await settled(gate.before(origin))).toBe(true);
    // Within one window the lower count wins (responses may arrive out of order).
    gate.observe(origin, limit(0, now + 20));
    gate.observe(origin, limit(3, now + 20));
    expect(await settled(gate.before(origin))).toBe(false);
  });
});

describe('undici, in part', () => {
  it('loads the Agent and request without undici\'s index, and requests through them', async () => {
    const script =
      `await import(${JSON.stringify(HX.replace('cli/main.js', 'http/undici.js'))});` +
      `const { createRequire } = await import('node:module');` +
      `console.log(Object.keys(createRequire(import.meta.url).cache).filter((p) => /undici.index\\.js$/.test(p)).length);`;
    expect(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })).toBe('0\n');
    const s = await server((req, res) => res.writeHead(200).end(`${req.method} ${req.url}`));
    const res = await request(`${s.url}?a=1`, { method: 'POST', body: 'x' });
    expect([res.statusCode, await res.body.text()]).toEqual([200, 'POST /x?a=1']);
  });
});

describe('bodyChunks', () => {
  const chunks = ['{"a":', '1}', '\n'].map((c) => Buffer.from(c));

  it('yields the chunks as they came, not joined, even when they wait', async () => {
    const body = new PassThrough();
    const got: Buffer[] = [];
    const reading = (async () => {
      for await (const chunk of bodyChunks(body)) got.push(chunk);
    })();
    for (const chunk of chunks) body.write(chunk);
    body.end();
    await reading;
    expect(got).toEqual(chunks);
  });

  it('pauses the body while 16 chunks wait, and resumes it as they are read', async () => {
    const body = new PassThrough({ highWaterMark: 1 });
    const iterator = bodyChunks(body)[Symbol.asyncIterator]();
    const first = iterator.next();
    // More than the queue holds: the rest waits in the body until it is resumed.
    const writes = Array.from({ length: 40 }, (_, i) => body.write(Buffer.from([i])));
    body.end();
    await new Promise((resolve) => setImmediate(resolve));
    expect(body.isPaused()).toBe(true);
    expect(writes.at(-1)).toBe(false);
    const got = [(await first).value[0]];
    for (let r = await iterator.next(); !r.done; r = await iterator.next()) got.push(r.value[0]!);
    expect(got).toEqual(Array.from({ length: 40 }, (_, i) => i));
  });

  it('throws a failure after the chunks before it, and a close before the end as premature', async () => {
    const failing = new PassThrough();
    failing.write(chunks[0]);
    setImmediate(() => failing.destroy(Object.assign(new Error('reset'), { code: 'ECONNRESET' })));
    const got: Buffer[] = [];
    await expect((async () => {
      for await (const chunk of bodyChunks(failing)) got.push(chunk);
    })()).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(got).toEqual([chunks[0]]);
    const closed = new PassThrough();
    setImmediate(() => closed.destroy());
    await expect((async () => {
      for await (const _ of bodyChunks(closed));
    })()).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('destroys the body when the reader leaves early', async () => {
    const body = new PassThrough();
    body.write(chunks[0]);
    for await (const _ of bodyChunks(body)) break;
    expect(body.destroyed).toBe(true);
  });
});

describe('decodedBody', () => {
  const text = '{"resourceType":"Bundle","entry":[]}'.repeat(50);
  async function read(body: NodeJS.ReadableStream): Promise<string> {
    const parts: Buffer[] = [];
    for await (const chunk of body) parts.push(chunk as Buffer);
    return Buffer.concat(parts).toString();
  }
  it('reads gzip, deflate and brotli bodies, and plain ones as they are', async () => {
    const bodies: [string | undefined, Buffer][] = [
      [undefined, Buffer.from(text)],
      ['identity', Buffer.from(text)],
      ['gzip', gzipSync(text)],
      ['X-Gzip', gzipSync(text)],
      ['deflate', deflateSync(text)],
      ['br', brotliCompressSync(text)],
    ];
    for (const [encoding, bytes] of bodies) {
      const body = decodedBody(Readable.from([bytes.subarray(0, 7), bytes.subarray(7)]), { 'content-encoding': encoding }, 'GET x');
      expect(await read(body), encoding).toBe(text);
    }
  });
  it('refuses an encoding it cannot read, naming it; a cut gzip stream fails with a zlib code that brokenBody makes retryable', async () => {
    expect(() => decodedBody(Readable.from([Buffer.from('x')]), { 'content-encoding': 'constructor' }, 'GET x')).toThrow(/constructor/);
    expect(() => decodedBody(Readable.from([Buffer.from('x')]), { 'content-encoding': 'compress' }, 'GET x')).toThrow(
      new HxError('GET x: the server sent the body in an encoding hx cannot read (Content-Encoding: compress)'),
    );
    const cut = decodedBody(Readable.from([gzipSync(text).subarray(0, 20)]), { 'content-encoding': 'gzip' }, 'GET x');
    const err = await read(cut).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toMatch(/^Z_/);
    expect(isRetryable(brokenBody(err, 'GET x'))).toBe(true);
    expect(isRetryable(brokenBody(new Error('disk full'), 'GET x'))).toBe(false);
  });
});

describe('HttpClient', () => {
  it('fails at once, saying so, when nothing answers at the address; retries a refusal once a server has answered', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const client = new HttpClient({ retry: FAST });
    const first = (await client.fetch({ url: `http://127.0.0.1:${port}/x`, what: 'probe' }).catch((e: unknown) => e)) as Error;
    expect(first.message).toBe(`probe: connect ECONNREFUSED 127.0.0.1:${port}: nothing answers at that address (is the server running, and is the URL right?)`);
    expect(client.stats).toEqual({ requests: 1, retries: 0 });
    const s = await server((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    await client.json({ url: s.url });
    const later = (await client.fetch({ url: `http://127.0.0.1:${port}/x`, what: 'probe' }).catch((e: unknown) => e)) as Error;
    expect(later.message).toBe(`probe: connect ECONNREFUSED 127.0.0.1:${port} (gave up after 4 attempts)`);
    expect(client.stats).toEqual({ requests: 6, retries: 3 });
    await client.close();
  });

  it('retries 429 (Retry-After 0), 503 and a reset, then succeeds', async () => {
    const s = await server((req, res, n) => {
      if (n === 1) return void res.writeHead(429, { 'retry-after': '0' }).end();
      if (n === 2) return void res.writeHead(503).end('busy');
      if (n === 3) return void req.socket.resetAndDestroy();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    const notices: string[] = [];
    const client = new HttpClient({ retry: FAST, onRetry: (n) => notices.push(`${n.attempt} ${n.reason}`) });
    const { value } = await client.json<{ ok: boolean }>({ url: s.url, what: 'probe' });
    await client.close();
    expect(value).toEqual({ ok: true });
    expect(client.stats).toEqual({ requests: 4, retries: 3 });
    expect(notices[0]).toBe('1 probe: HTTP 429');
    expect(notices[1]).toBe('2 probe: HTTP 503; the server says: busy');
  });

  it('gives up after the last retry, saying how many attempts were made', async () => {
    const s = await server((_req, res) => void res.writeHead(502).end());
    const client = new HttpClient({ retry: FAST });
    await expect(client.fetch({ url: s.url, what: 'probe' })).rejects.toThrow('probe: HTTP 502 (gave up after 4 attempts)');
    await client.close();
  });

  it('fails at once on 401 with advice and the OperationOutcome text', async () => {
    const s = await server((_req, res) => {
      res.writeHead(401, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', diagnostics: 'Token expired' }] }));
    });
    const client = new HttpClient({ retry: FAST, advice: { 401: 'get a new token' } });
    const err = await client.fetch({ url: s.url, what: 'probe' }).catch((e) => e);
    await client.close();
    expect(err).toBeInstanceOf(HttpError);
    expect(err.message).toBe('probe: HTTP 401 — get a new token; the server says: Token expired');
    expect(client.stats.requests).toBe(1);
  });

  it('sends credentials to the trusted origin only', async () => {
    const trusted = await server((_req, res) => void res.end('{}'));
    const other = await server((_req, res) => void res.end('{}'));
    const client = new HttpClient({ trustedOrigin: trusted.url, credentials: () => ({ authorization: 'Bearer abcdef123' }) });
    await client.json({ url: trusted.url });
    await client.json({ url: other.url });
    await client.close();
    expect(trusted.seen[0]!.authorization).toBe('Bearer abcdef123');
    expect(other.seen[0]!.authorization).toBeUndefined();
  });

  it('masks secrets in messages, including ones a server echoes back', async () => {
    const s = await server((req, res) => void res.writeHead(400).end(`bad token ${req.headers.authorization}`));
    const redactor = new Redactor();
    redactor.add('abcdef123');
    const client = new HttpClient({ trustedOrigin: s.url, credentials: () => ({ authorization: 'Bearer abcdef123' }), redactor });
    const err = await client.fetch({ url: `${s.url}?access_token=abcdef123&_count=5` }).catch((e) => e);
    await client.close();
    expect(err.message).not.toContain('abcdef123');
    expect(err.message).toContain('bad token Bearer ***');
    expect(err.message).toContain('access_token=***&_count=5');
  });

  it('times out a stalled body (idle timeout) as a retryable failure', async () => {
    const s = await server((_req, res) => {
      res.writeHead(200);
      res.write('{"a":');
    });
    const client = new HttpClient({ retry: { ...FAST, retries: 0 }, timeouts: { idleMs: 200 } });
    const started = Date.now();
    const err = await client.json({ url: s.url, what: 'probe' }).catch((e) => e);
    await client.close();
    expect(err.message).toMatch(/^probe: .*(timeout|Timeout)/);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(isRetryable(Object.assign(new Error(), { code: 'UND_ERR_BODY_TIMEOUT' }))).toBe(true);
  });
});
