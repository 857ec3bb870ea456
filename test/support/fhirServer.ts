/**
 * A small FHIR server for tests and benchmarks: a test double of the servers
 * hx reads from, serving generated data on an ephemeral loopback port.
 *
 * - Type searches `GET /fhir/{Type}` paged by `next` links (offset or opaque
 *   cursor), or HealthClaw-style: no `next`, `_count` clamped, `_sort` and
 *   `_lastUpdated` (le/lt/ge/gt) supported, unknown parameters answered with
 *   a `search.mode: outcome` entry.
 * - `GET /fhir/{Person|Patient}/{id}/$everything` with `_type`, `_since`,
 *   `_count` (offset `next` links), or one unpaged streamed Bundle.
 * - Tenant header and token checks (bearer, HealthClaw step-up tokens).
 * - Pages gzipped when the client accepts it (`gzip`); a body fault then
 *   applies to the compressed bytes (a truncated gzip stream).
 * - HealthClaw's rate limit, per tenant (`rateLimit`; see `rateLimit.ts`).
 * - Faults per request: a status (429 with Retry-After, 500, 503…), a reset
 *   before the headers or in the middle of a body, a stalled body, a body
 *   cut short but ended cleanly, 401 after N requests.
 *
 * Resource i of a type is a pure function of (type, i), so a 200 MB tenant
 * costs no memory; lastUpdated rises with i (`perInstant` resources share
 * each instant), which makes every filter a contiguous range of i.
 *
 * Standalone (for benchmarks), after `tsc` has compiled it via an importer:
 *     node dist/test/support/fhirServer.js --types Patient=1000,Observation=200000 --pad 900 [--port 8080] [--paging offset] [--rate-limit 120/60] [--gzip]
 * prints the base URL and serves until killed.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { createGzip } from 'node:zlib';
import { FixedWindowLimiter, parseRateLimit, type RateLimit } from './rateLimit.js';

export type Paging = 'offset' | 'cursor' | 'healthclaw';

export type Fault =
  /** `retryAfter` may be computed when the request comes (an HTTP date relative to then). */
  | { kind: 'status'; status: number; retryAfter?: string | (() => string) }
  /** Connection reset before any response. */
  | { kind: 'reset-early' }
  /** Connection reset after `afterBytes` of the body. */
  | { kind: 'reset'; afterBytes: number }
  /** `afterBytes` of the body, then silence with the connection open. */
  | { kind: 'stall'; afterBytes: number }
  /** `afterBytes` of the body, then a clean end of the response (invalid JSON). */
  | { kind: 'truncate'; afterBytes: number };

export interface FaultRule {
  /** Applies to requests whose path and query match (all requests when absent). */
  match?: RegExp;
  /** Matching requests let through before the fault applies. */
  skip?: number;
  /** How many matching requests get the fault (default 1). */
  times?: number;
  fault: Fault;
}

export interface FhirServerOptions {
  /** Resources per tenant and type, in type order; `default` serves requests without a tenant header. */
  tenants: Record<string, Record<string, number>>;
  paging?: Paging;
  /** Largest `_count` honoured (HealthClaw: 200). */
  maxCount?: number;
  /** `_count` when none is given (HealthClaw: 50). */
  defaultCount?: number;
  /** Consecutive resources that share one lastUpdated instant. */
  perInstant?: number;
  /** Bytes of filler text in each resource (for big tenants). */
  padBytes?: number;
  /** Require a valid `X-Tenant-ID` (HealthClaw). */
  tenantHeader?: boolean;
  /** Require `Authorization: Bearer <bearer>`. */
  bearer?: string;
  /** Require a HealthClaw step-up token signed with this secret. */
  stepUpSecret?: string;
  /** Answer 401 to every request after this many. */
  unauthorizedAfter?: number;
  /** $everything answers 403 (no consent). */
  noConsent?: boolean;
  /** Offset paging: each `next` starts this many entries early (a server that shifts while paging). */
  overlap?: number;
  /** Bundle members in sorted order, `entry` first (as Flask's jsonify writes them). */
  sortedKeys?: boolean;
  faults?: FaultRule[];
  /** The one Person/Patient id `$everything` knows (default `19cff418-7d80`, the HealthEx example). */
  patientId?: string;
  /** Origin put in `next` links instead of this server's (a server that sends the client elsewhere). */
  nextOrigin?: string;
  /** Requests allowed per window and tenant before 429 (HealthClaw: 120 per 60 s). */
  rateLimit?: RateLimit;
  /** Gzip pages for clients that send `Accept-Encoding: gzip`. */
  gzip?: boolean;
  /** Port to listen on (ephemeral by default). */
  port?: number;
}

export interface LoggedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  status?: number;
}

export interface FhirServer {
  /** FHIR base URL, e.g. `http://127.0.0.1:41234/fhir`. */
  base: string;
  origin: string;
  requests: LoggedRequest[];
  /** Most requests in flight at once, per path (one search chain each). */
  maxInFlight: Map<string, number>;
  /** Resources a search of (tenant, type) matches. */
  count(type: string, tenant?: string): number;
  close(): Promise<void>;
}

const BASE_TIME = Date.parse('2026-01-01T00:00:00.000Z');
const HEALTHCLAW_PARAMS = new Set(['patient', 'code', 'status', '_lastUpdated', '_count', '_sort', '_summary', 'context-id']);
export const PATIENT_ID = '19cff418-7d80';
const TENANT = /^[a-zA-Z0-9_-]{1,64}$/;

/** Resource `i` of `type`: small, valid-looking FHIR, the same on every call. */
export function makeResource(type: string, i: number, tenant: string, perInstant = 1, padBytes = 0): Record<string, unknown> {
  const resource: Record<string, unknown> = {
    resourceType: type,
    id: `${type.toLowerCase()}-${tenant}-${i}`,
    meta: { versionId: '1', lastUpdated: lastUpdated(i, perInstant) },
  };
  if (type === 'Patient' || type === 'Person') {
    resource.gender = i % 2 ? 'male' : 'female';
    resource.birthDate = String(1940 + (i % 60));
  } else {
    resource.status = 'final';
    resource.subject = { reference: `Patient/patient-${tenant}-0` };
    resource.code = { coding: [{ system: 'http://loinc.org', code: String(1000 + (i % 9000)) }] };
  }
  if (padBytes > 0) resource.note = [{ text: 'x'.repeat(padBytes) }];
  return resource;
}

function lastUpdated(i: number, perInstant: number): string {
  return new Date(lastUpdatedMs(i, perInstant)).toISOString();
}

function lastUpdatedMs(i: number, perInstant: number): number {
  return BASE_TIME + Math.floor(i / perInstant) * 1000;
}

interface Match {
  /** Resources in order: [type, i]. */
  items: (offset: number) => Generator<[string, number]>;
  total: number;
}

export async function startFhirServer(options: FhirServerOptions): Promise<FhirServer> {
  const paging = options.paging ?? 'offset';
  const perInstant = options.perInstant ?? 1;
  const pad = options.padBytes ?? 0;
  const maxCount = options.maxCount ?? (paging === 'healthclaw' ? 200 : 100_000);
  const defaultCount = options.defaultCount ?? 50;
  const faults = (options.faults ?? []).map((rule) => ({ ...rule, seen: 0, left: rule.times ?? 1 }));
  const limiter = options.rateLimit && new FixedWindowLimiter(options.rateLimit);
  const requests: LoggedRequest[] = [];
  const maxInFlight = new Map<string, number>();
  const inFlight = new Map<string, number>();
  const sockets = new Set<Socket>();
  let origin = '';

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', origin);
    const logged: LoggedRequest = { method: req.method ?? 'GET', url: url.pathname + url.search, headers: req.headers };
    requests.push(logged);
    const path = url.pathname;
    inFlight.set(path, (inFlight.get(path) ?? 0) + 1);
    maxInFlight.set(path, Math.max(maxInFlight.get(path) ?? 0, inFlight.get(path)!));
    res.on('close', () => inFlight.set(path, inFlight.get(path)! - 1));
    const originalWriteHead = res.writeHead.bind(res);
    res.writeHead = ((status: number, ...rest: unknown[]) => {
      logged.status = status;
      return (originalWriteHead as (...a: unknown[]) => ServerResponse)(status, ...rest);
    }) as typeof res.writeHead;
    handle(req, res, url, requests.length).catch((err) => {
      if (!res.headersSent) outcome(res, 500, 'exception', String(err));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse, url: URL, n: number): Promise<void> {
    const fault = takeFault(url.pathname + url.search);
    if (fault?.kind === 'reset-early') return void req.socket.resetAndDestroy();
    if (fault?.kind === 'status') {
      return outcome(res, fault.status, 'transient', `injected ${fault.status}`, retryAfterHeader(fault.retryAfter));
    }
    const tenant = checkTenant(req, res);
    if (tenant === undefined) return;
    const limit = limiter?.take(tenant);
    if (limit) for (const [name, value] of Object.entries(limit.headers)) res.setHeader(name, value);
    if (limit && !limit.allowed) return outcome(res, 429, 'throttled', 'Rate limit exceeded');
    if (!authorized(req, tenant)) return outcome(res, 401, 'login', 'Authentication required');
    if (options.unauthorizedAfter !== undefined && n > options.unauthorizedAfter) return outcome(res, 401, 'login', 'Token expired');
    const types = options.tenants[tenant] ?? {};
    const parts = url.pathname.replace(/^\/fhir\/?/, '').split('/');
    let page: Page | string;
    if (parts.length === 1 && /^[A-Z][A-Za-z]+$/.test(parts[0]!)) page = typeSearch(parts[0]!, url, types);
    else if (parts.length === 3 && (parts[0] === 'Person' || parts[0] === 'Patient') && parts[2] === '$everything') {
      if (options.noConsent) return outcome(res, 403, 'forbidden', 'The patient has not consented');
      if (parts[1] !== (options.patientId ?? PATIENT_ID)) return outcome(res, 404, 'not-found', `No ${parts[0]} with this id`);
      page = everything(url, types);
    } else return outcome(res, 404, 'not-found', 'Unknown path');
    if (typeof page === 'string') return outcome(res, 400, 'invalid', page);
    const gzip = options.gzip === true && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    await sendBundle(res, page, tenant, fault, gzip);
  }

  function takeFault(pathAndQuery: string): Fault | undefined {
    for (const rule of faults) {
      if (rule.match && !rule.match.test(pathAndQuery)) continue;
      if (rule.seen++ < (rule.skip ?? 0) || rule.left <= 0) continue;
      rule.left--;
      return rule.fault;
    }
    return undefined;
  }

  function checkTenant(req: IncomingMessage, res: ServerResponse): string | undefined {
    const header = req.headers['x-tenant-id'];
    if (!options.tenantHeader) return typeof header === 'string' ? header : 'default';
    if (typeof header !== 'string') return void outcome(res, 400, 'security', 'X-Tenant-ID header is required');
    if (!TENANT.test(header)) return void outcome(res, 400, 'invalid', 'Invalid tenant id');
    return header;
  }

  function authorized(req: IncomingMessage, tenant: string): boolean {
    const auth = req.headers.authorization;
    const bearer = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
    if (options.bearer !== undefined && bearer !== options.bearer) return false;
    if (options.stepUpSecret !== undefined) {
      const stepUp = req.headers['x-step-up-token'];
      const token = typeof stepUp === 'string' ? stepUp : bearer;
      if (!token || !verifyStepUpToken(token, options.stepUpSecret, tenant)) return false;
    }
    return true;
  }

  interface Page {
    match: Match;
    offset: number;
    count: number;
    links: { relation: string; url: string }[];
    warnings: string[];
    /** Unpaged: stream every match. */
    all?: boolean;
  }

  function typeSearch(type: string, url: URL, types: Record<string, number>): Page | string {
    const params = url.searchParams;
    const warnings: string[] = [];
    if (paging === 'healthclaw') {
      for (const name of params.keys()) {
        if (name.includes(':')) return `Modifiers are not supported: ${name}`;
        if (!HEALTHCLAW_PARAMS.has(name)) warnings.push(`Unknown search parameter '${name}' was ignored`);
      }
    }
    const n = types[type] ?? 0;
    let lo = 0;
    let hi = n;
    for (const value of params.getAll('_lastUpdated')) {
      const m = /^(le|lt|ge|gt)(.+)$/.exec(value);
      const at = m ? Date.parse(m[2]!) : NaN;
      if (!m || Number.isNaN(at)) return `Invalid _lastUpdated: ${value}`;
      const firstAbove = (ms: number) => lowerBound(n, (i) => lastUpdatedMs(i, perInstant) > ms);
      const firstAtOrAbove = (ms: number) => lowerBound(n, (i) => lastUpdatedMs(i, perInstant) >= ms);
      if (m[1] === 'le') hi = Math.min(hi, firstAbove(at));
      if (m[1] === 'lt') hi = Math.min(hi, firstAtOrAbove(at));
      if (m[1] === 'ge') lo = Math.max(lo, firstAtOrAbove(at));
      if (m[1] === 'gt') lo = Math.max(lo, firstAbove(at));
    }
    const descending = params.get('_sort') === '-_lastUpdated';
    const total = Math.max(0, hi - lo);
    const match: Match = {
      total,
      *items(offset) {
        for (let k = offset; k < total; k++) yield [type, descending ? hi - 1 - k : lo + k];
      },
    };
    const count = params.get('_summary') === 'count' ? 0 : clampCount(params.get('_count'));
    let offset = 0;
    if (paging === 'offset') offset = Number(params.get('_offset') ?? 0) || 0;
    if (paging === 'cursor' && params.get('_cursor')) offset = JSON.parse(Buffer.from(params.get('_cursor')!, 'base64url').toString()).o;
    const links = [{ relation: 'self', url: `${origin}${url.pathname}${url.search}` }];
    const nextOffset = offset + count - (options.overlap ?? 0);
    if (paging !== 'healthclaw' && count > 0 && offset + count < total) {
      const next = new URL(url);
      if (paging === 'offset') next.searchParams.set('_offset', String(nextOffset));
      else next.searchParams.set('_cursor', Buffer.from(JSON.stringify({ o: nextOffset })).toString('base64url'));
      next.searchParams.set('_count', String(count));
      links.push({ relation: 'next', url: elsewhere(next).toString() });
    }
    return { match, offset, count, links, warnings };
  }

  function everything(url: URL, types: Record<string, number>): Page | string {
    const params = url.searchParams;
    const only = params.get('_type')?.split(',');
    const since = params.get('_since');
    const sinceMs = since === null ? undefined : Date.parse(since);
    if (sinceMs !== undefined && Number.isNaN(sinceMs)) return `Invalid _since: ${since}`;
    const ranges: [string, number, number][] = [];
    for (const [type, n] of Object.entries(types)) {
      if (only && !only.includes(type)) continue;
      const lo = sinceMs === undefined ? 0 : lowerBound(n, (i) => lastUpdatedMs(i, perInstant) >= sinceMs);
      ranges.push([type, lo, n]);
    }
    const total = ranges.reduce((sum, [, lo, hi]) => sum + hi - lo, 0);
    const match: Match = {
      total,
      *items(offset) {
        for (const [type, lo, hi] of ranges) {
          if (offset >= hi - lo) {
            offset -= hi - lo;
            continue;
          }
          for (let i = lo + offset; i < hi; i++) yield [type, i];
          offset = 0;
        }
      },
    };
    const links = [{ relation: 'self', url: `${origin}${url.pathname}${url.search}` }];
    if (!params.has('_count')) return { match, offset: 0, count: total, links, warnings: [], all: true };
    const count = clampCount(params.get('_count'));
    const offset = Number(params.get('_offset') ?? 0) || 0;
    if (count > 0 && offset + count < total) {
      const next = new URL(url);
      next.searchParams.set('_offset', String(offset + count));
      links.push({ relation: 'next', url: next.toString() });
    }
    return { match, offset, count, links, warnings: [] };
  }

  function elsewhere(url: URL): URL {
    if (!options.nextOrigin) return url;
    const moved = new URL(options.nextOrigin);
    url.protocol = moved.protocol;
    url.host = moved.host;
    return url;
  }

  function clampCount(value: string | null): number {
    if (value === null) return defaultCount;
    return Math.max(0, Math.min(maxCount, Number(value) || 0));
  }

  /** Writes the page's Bundle with backpressure, applying a body fault when there is one. */
  async function sendBundle(res: ServerResponse, page: Page, tenant: string, fault: Fault | undefined, gzip: boolean): Promise<void> {
    const members: Record<string, string> = {
      resourceType: '"resourceType":"Bundle"',
      type: '"type":"searchset"',
      total: `"total":${page.match.total}`,
      link: `"link":${JSON.stringify(page.links)}`,
    };
    const order = ['resourceType', 'type', 'total', 'link'];
    const open = options.sortedKeys ? '{"entry":[' : `{${order.map((k) => members[k]).join(',')},"entry":[`;
    const close = options.sortedKeys ? `],${[...order].sort().map((k) => members[k]).join(',')}}` : ']}';
    function* chunks(): Generator<string> {
      let text = open;
      let first = true;
      const add = (entry: string) => {
        text += (first ? '' : ',') + entry;
        first = false;
      };
      for (const diagnostics of page.warnings) {
        const issue = [{ severity: 'warning', code: 'not-supported', diagnostics }];
        add(JSON.stringify({ search: { mode: 'outcome' }, resource: { resourceType: 'OperationOutcome', issue } }));
      }
      let k = 0;
      for (const [type, i] of page.match.items(page.offset)) {
        if (!page.all && k++ >= page.count) break;
        const resource = makeResource(type, i, tenant, perInstant, pad);
        add(`{"fullUrl":"${origin}/fhir/${type}/${resource.id}","search":{"mode":"match"},"resource":${JSON.stringify(resource)}}`);
        if (text.length >= 64 * 1024) {
          yield text;
          text = '';
        }
      }
      yield text + close;
    }
    res.writeHead(200, { 'content-type': 'application/fhir+json', ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    let sent = 0;
    const compressed = gzip ? Readable.from(chunks()).pipe(createGzip()) : undefined;
    for await (const piece of compressed ?? chunks()) {
      let chunk = typeof piece === 'string' ? Buffer.from(piece) : (piece as Buffer);
      if (fault && fault.kind !== 'status' && fault.kind !== 'reset-early' && sent + chunk.length >= fault.afterBytes) {
        chunk = chunk.subarray(0, Math.max(0, fault.afterBytes - sent));
        await write(res, chunk);
        compressed?.destroy();
        if (fault.kind === 'reset') return void setTimeout(() => res.socket?.resetAndDestroy(), 20);
        if (fault.kind === 'truncate') return void res.end();
        return; // stall: keep the connection open; close() ends it
      }
      sent += chunk.length;
      if (!(await write(res, chunk))) return void compressed?.destroy();
    }
    res.end();
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  origin = `http://127.0.0.1:${port}`;
  return {
    base: `${origin}/fhir`,
    origin,
    requests,
    maxInFlight,
    count: (type, tenant = 'default') => options.tenants[tenant]?.[type] ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Resolves false when the client went away. */
function write(res: ServerResponse, chunk: Buffer): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  if (res.write(chunk)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

function retryAfterHeader(value: string | (() => string) | undefined): Record<string, string> {
  if (value === undefined) return {};
  return { 'retry-after': typeof value === 'string' ? value : value() };
}

function outcome(res: ServerResponse, status: number, code: string, diagnostics: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] });
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(body);
}

/** First i in [0, n) where `pred` (monotone false → true) holds, or n. */
function lowerBound(n: number, pred: (i: number) => boolean): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pred(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The server side of a HealthClaw step-up token, as the contract describes it. */
export function verifyStepUpToken(token: string, secret: string, tenant: string, now = Date.now()): boolean {
  const dot = token.lastIndexOf('.');
  if (dot < 0) return false;
  const payload = token.slice(0, dot);
  const signature = Buffer.from(token.slice(dot + 1));
  const expected = Buffer.from(createHmac('sha256', Buffer.from(secret, 'utf8')).update(payload).digest('hex'));
  if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) return false;
  // Python's urlsafe_b64decode needs the padding.
  if (payload.length % 4 !== 0 || !/^[A-Za-z0-9_-]*={0,2}$/.test(payload)) return false;
  let claims: { exp?: number; tid?: string };
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return false;
  }
  return typeof claims.exp === 'number' && claims.exp * 1000 > now && claims.tid === tenant;
}

/** `node fhirServer.js --types Patient=1000,Observation=200000 --pad 900 --port 0 --paging offset --tenant default [--rate-limit 120/60]` */
async function main(argv: string[]): Promise<void> {
  const arg = (name: string, fallback: string) => {
    const at = argv.indexOf(`--${name}`);
    return at >= 0 ? argv[at + 1]! : fallback;
  };
  const types = Object.fromEntries(
    arg('types', 'Patient=1000,Observation=200000')
      .split(',')
      .map((pair) => [pair.split('=')[0]!, Number(pair.split('=')[1])]),
  );
  const server = await startFhirServer({
    tenants: { [arg('tenant', 'default')]: types },
    paging: arg('paging', 'offset') as Paging,
    padBytes: Number(arg('pad', '0')),
    maxCount: Number(arg('max-count', '100000')),
    port: Number(arg('port', '0')),
    rateLimit: argv.includes('--rate-limit') ? parseRateLimit(arg('rate-limit', '')) : undefined,
    gzip: argv.includes('--gzip'),
  });
  process.stdout.write(`${server.base}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main(process.argv.slice(2));
