/**
 * A test double of HealthClaw's write side, beside `fhirServer.ts` (which
 * serves reads): `POST {base}/Bundle/$ingest-context` as the contract
 * (`shared/contracts/healthclaw.md`, "Import") describes it, a plain FHIR
 * transaction endpoint `POST {base}`, per-tenant storage the tests read
 * back, and file downloads (a Fasten Connect URL).
 *
 * - Tenant header: missing → 400 `security`, malformed → 400 `invalid`.
 * - Step-up token (when `stepUpSecret` is set), checked as the server does:
 *   split at the last `.`, constant-time hex HMAC-SHA256 over the payload
 *   string, base64url payload that must keep its `=` padding, `exp` in the
 *   future, `tid` equal to the tenant, no `"scope":"read"`; else 401.
 * - Bodies over `maxBodyBytes` (16 MiB) → 413 with an HTML page; JSON
 *   nested deeper than 32 → 400; not a Bundle, a bad `type`, no entries → 400.
 * - 201 `{context_id, patient_ref, encounter_ref, resource_count,
 *   skipped_count, skipped_types, expires_at, items[]}`; each resource is
 *   upserted on (tenant, type, id), a missing id gets a UUID, types the
 *   store does not keep are skipped and counted.
 * - Faults per request (429 with Retry-After, 5xx, 413, reset), a rate
 *   limit, a latency per request, and a hook run before each answer.
 *
 * Standalone (benchmarks): `node dist/test/support/ingestServer.js [--port N] [--secret S] [--meta-only]`
 * prints the base URL and serves until killed. To serve reads and writes on
 * one port, `fhirServer.ts` would need a hook for extra routes; until then
 * the two run side by side (see `IngestServer.base`).
 */
import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { FixedWindowLimiter, type RateLimit } from './rateLimit.js';

export const MAX_BODY_BYTES = 16 * 1024 * 1024;
const TENANT = /^[a-zA-Z0-9_-]{1,64}$/;
const BUNDLE_TYPES = new Set(['document', 'message', 'transaction', 'transaction-response', 'batch', 'batch-response', 'history', 'searchset', 'collection']);

/** Types the store keeps (HealthClaw 1.10: US Core, R6 ballot and infrastructure types); others are skipped. */
export const STORED_TYPES = new Set([
  'Patient', 'Condition', 'Observation', 'AllergyIntolerance', 'Immunization', 'MedicationRequest', 'Procedure',
  'DiagnosticReport', 'CarePlan', 'Goal', 'Coverage', 'ServiceRequest', 'DocumentReference', 'Encounter', 'Location',
  'Organization', 'Practitioner', 'PractitionerRole', 'RelatedPerson', 'CareTeam', 'Specimen', 'FamilyMemberHistory',
  'Permission', 'SubscriptionTopic', 'DeviceAlert', 'NutritionIntake', 'DeviceAssociation', 'NutritionProduct',
  'Requirements', 'ActorDefinition', 'Consent', 'Provenance', 'AuditEvent', 'Device', 'Medication',
]);

export type IngestFault =
  | { kind: 'status'; status: number; retryAfter?: string }
  /** 413 with HTML, whatever the size. */
  | { kind: 'too-large' }
  /** Connection reset before any answer (after reading the body). */
  | { kind: 'reset' };

export interface IngestFaultRule {
  /** Applies to requests whose path matches (all when absent). */
  match?: RegExp;
  /** Matching requests let through first. */
  skip?: number;
  /** How many get the fault (default 1). */
  times?: number;
  fault: IngestFault;
}

export interface IngestServerOptions {
  /** Require step-up tokens signed with this secret. */
  stepUpSecret?: string;
  maxBodyBytes?: number;
  faults?: IngestFaultRule[];
  /** Answer 413 to any Bundle with more entries than this (to test splitting without 16 MiB bodies). */
  maxEntries?: number;
  /** Requests allowed per window and tenant before 429 (HealthClaw: 120 per 60 s). */
  rateLimit?: RateLimit;
  /** Milliseconds each ingest takes before it answers. */
  latencyMs?: number;
  /** Files served at `{origin}/download/{name}`; `downloadAuth` is the Authorization they require. */
  downloads?: Record<string, Buffer | string>;
  downloadAuth?: string;
  /** Keep only each stored resource's `meta` (benchmarks: a 1 GB import would hold 1 GB of objects). */
  metaOnly?: boolean;
  /** The server's clock for token expiry (tests of renewal), epoch ms. */
  clock?: () => number;
  port?: number;
}

export interface IngestRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  bodyBytes: number;
  entries?: number;
  status?: number;
}

/** The routes and the state behind them, to serve alone or mounted in another test server. */
export interface IngestRoutes {
  requests: IngestRequest[];
  /** Most ingest requests in flight at once. */
  maxInFlight: number;
  /** Stored resources of a tenant, by `Type/id`. */
  stored(tenant: string): Map<string, Record<string, unknown>>;
  /** Upserts done per tenant (a resource stored twice counts twice). */
  upserts(tenant: string): number;
  /** Runs before each ingest answer (a test kills the client from here). */
  beforeAnswer?: (request: IngestRequest) => void | Promise<void>;
  /** Answers `req` when its path is one of these routes; resolves false (untouched) otherwise. */
  handle(req: IncomingMessage, res: ServerResponse): Promise<boolean>;
}

export interface IngestServer extends IngestRoutes {
  /** FHIR base, e.g. `http://127.0.0.1:41234/r6/fhir`. */
  base: string;
  origin: string;
  close(): Promise<void>;
}

/**
 * The routes: `POST {basePath}/Bundle/$ingest-context`, `POST {basePath}`
 * (transaction) and `GET /download/{name}`. To mount them in another
 * server, call `handle(req, res)` first and go on when it resolves false.
 */
export function ingestRoutes(options: IngestServerOptions = {}, basePath = '/r6/fhir'): IngestRoutes {
  const maxBody = options.maxBodyBytes ?? MAX_BODY_BYTES;
  const faults = (options.faults ?? []).map((rule) => ({ ...rule, seen: 0, left: rule.times ?? 1 }));
  const tenants = new Map<string, Map<string, Record<string, unknown>>>();
  const upsertCounts = new Map<string, number>();
  const limiter = options.rateLimit && new FixedWindowLimiter(options.rateLimit);
  let inFlight = 0;
  const routes: IngestRoutes = {
    requests: [],
    maxInFlight: 0,
    stored: (tenant) => tenants.get(tenant) ?? new Map(),
    upserts: (tenant) => upsertCounts.get(tenant) ?? 0,
    async handle(req, res) {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const path = url.pathname;
      const isDownload = req.method === 'GET' && path.startsWith('/download/');
      const ingest = path === `${basePath}/Bundle/$ingest-context`;
      const transaction = path === basePath || path === `${basePath}/`;
      if (!isDownload && !(req.method === 'POST' && (ingest || transaction))) return false;
      const logged: IngestRequest = { method: req.method ?? 'GET', path, headers: req.headers, bodyBytes: 0 };
      routes.requests.push(logged);
      const original = res.writeHead.bind(res);
      res.writeHead = ((status: number, ...rest: unknown[]) => {
        logged.status = status;
        return (original as (...a: unknown[]) => ServerResponse)(status, ...rest);
      }) as typeof res.writeHead;
      try {
        if (isDownload) download(req, res, url);
        else {
          inFlight++;
          routes.maxInFlight = Math.max(routes.maxInFlight, inFlight);
          try {
            await answer(req, res, url, logged, ingest);
          } finally {
            inFlight--;
          }
        }
      } catch (err) {
        if (!res.headersSent) outcome(res, 500, 'exception', String(err));
        else res.destroy();
      }
      return true;
    },
  };

  async function answer(req: IncomingMessage, res: ServerResponse, url: URL, logged: IngestRequest, ingest: boolean): Promise<void> {
    const limit = limiter?.take(String(req.headers['x-tenant-id']));
    if (limit) for (const [name, value] of Object.entries(limit.headers)) res.setHeader(name, value);
    if (limit && !limit.allowed) {
      await drain(req);
      return outcome(res, 429, 'throttled', 'Rate limit exceeded');
    }
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > maxBody) {
      req.resume();
      return tooLarge(res);
    }
    const body = await readBody(req, maxBody);
    if (body === undefined) return tooLarge(res);
    logged.bodyBytes = body.length;
    const fault = takeFault(url.pathname);
    if (fault?.kind === 'reset') return void req.socket.resetAndDestroy();
    if (fault?.kind === 'status') return outcome(res, fault.status, 'transient', `injected ${fault.status}`, fault.retryAfter ? { 'retry-after': fault.retryAfter } : {});
    if (fault?.kind === 'too-large') return tooLarge(res);
    const header = req.headers['x-tenant-id'];
    if (typeof header !== 'string') return outcome(res, 400, 'security', 'X-Tenant-ID header is required');
    if (!TENANT.test(header)) return outcome(res, 400, 'invalid', 'Invalid tenant id');
    const tenant = header;
    if (options.stepUpSecret !== undefined) {
      const token = req.headers['x-step-up-token'];
      if (typeof token !== 'string' || !verifyWriteToken(token, options.stepUpSecret, tenant, options.clock?.() ?? Date.now())) {
        return outcome(res, 401, 'security', 'Bundle ingestion requires a tenant-bound write token');
      }
    }
    let bundle: { resourceType?: unknown; type?: unknown; entry?: unknown };
    try {
      bundle = JSON.parse(body.toString('utf8'));
    } catch {
      return outcome(res, 400, 'invalid', 'Request body is not valid JSON');
    }
    if (depth(bundle) > 32) return outcome(res, 400, 'invalid', 'JSON nested too deeply');
    if (bundle?.resourceType !== 'Bundle') return outcome(res, 400, 'invalid', 'Expected a Bundle resource');
    if (bundle.type !== undefined && !BUNDLE_TYPES.has(bundle.type as string)) return outcome(res, 400, 'invalid', 'Invalid Bundle type');
    const entries = Array.isArray(bundle.entry) ? (bundle.entry as { resource?: Record<string, unknown> }[]) : [];
    logged.entries = entries.length;
    if (entries.length === 0) return outcome(res, 400, 'invalid', 'Bundle contains no entries');
    if (options.maxEntries !== undefined && entries.length > options.maxEntries) return tooLarge(res);
    await routes.beforeAnswer?.(logged);
    if (options.latencyMs) await new Promise((resolve) => setTimeout(resolve, options.latencyMs));
    if (res.destroyed) return;
    const store = tenants.get(tenant) ?? new Map<string, Record<string, unknown>>();
    tenants.set(tenant, store);
    const skipped: Record<string, number> = {};
    const items: Record<string, unknown>[] = [];
    const responses: Record<string, unknown>[] = [];
    let patientRef: string | null = null;
    let encounterRef: string | null = null;
    for (const entry of entries) {
      const resource = entry?.resource;
      const type = resource?.resourceType;
      if (typeof type !== 'string' || !STORED_TYPES.has(type)) {
        const name = typeof type === 'string' ? type : 'Unknown';
        skipped[name] = (skipped[name] ?? 0) + 1;
        responses.push({ response: { status: '400 Bad Request' } });
        continue;
      }
      const id = typeof resource!.id === 'string' && resource!.id !== '' ? resource!.id : randomUUID();
      const key = `${type}/${id}`;
      const version = String(Number((store.get(key)?.meta as { versionId?: string })?.versionId ?? 0) + 1);
      const stored = { ...resource!, id, meta: { versionId: version, lastUpdated: new Date().toISOString() } };
      store.set(key, options.metaOnly ? { meta: stored.meta } : stored);
      upsertCounts.set(tenant, (upsertCounts.get(tenant) ?? 0) + 1);
      if (type === 'Patient') patientRef ??= key;
      if (type === 'Encounter') encounterRef ??= key;
      items.push({ resource_ref: key, resource_version: version, slice_name: type.toLowerCase(), sha256: sha256Sorted(stored) });
      responses.push({ response: { status: '200 OK', location: `${key}/_history/${version}` } });
    }
    const skippedCount = Object.values(skipped).reduce((a, b) => a + b, 0);
    if (!ingest) {
      return json(res, 200, { resourceType: 'Bundle', type: 'transaction-response', entry: responses });
    }
    json(res, 201, {
      context_id: randomUUID(),
      patient_ref: patientRef,
      encounter_ref: encounterRef,
      resource_count: items.length,
      skipped_count: skippedCount,
      skipped_types: skipped,
      expires_at: new Date(Date.now() + 3600_000).toISOString(),
      items,
    });
  }

  function download(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const file = options.downloads?.[decodeURIComponent(url.pathname.slice('/download/'.length))];
    if (options.downloadAuth !== undefined && req.headers.authorization !== options.downloadAuth) return outcome(res, 401, 'login', 'Unauthorized');
    if (file === undefined) return outcome(res, 404, 'not-found', 'No such file');
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.end(file);
  }

  function takeFault(path: string): IngestFault | undefined {
    for (const rule of faults) {
      if (rule.match && !rule.match.test(path)) continue;
      if (rule.seen++ < (rule.skip ?? 0) || rule.left <= 0) continue;
      rule.left--;
      return rule.fault;
    }
    return undefined;
  }

  return routes;
}

/** The routes alone on an ephemeral loopback port. */
export async function startIngestServer(options: IngestServerOptions = {}): Promise<IngestServer> {
  const routes = ingestRoutes(options);
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    void routes.handle(req, res).then((handled) => {
      if (!handled) outcome(res, 404, 'not-found', 'Unknown path');
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  // The routes object itself, so tests can set `beforeAnswer` on it.
  return Object.assign(routes, {
    origin,
    base: `${origin}/r6/fhir`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  });
}

/** The server's check of a write token (contract, "Step-up tokens"), written independently of hx's minting. */
export function verifyWriteToken(token: string, secret: string, tenant: string, now = Date.now()): boolean {
  const dot = token.lastIndexOf('.');
  if (dot < 0) return false;
  const payload = token.slice(0, dot);
  const signature = Buffer.from(token.slice(dot + 1), 'utf8');
  const expected = Buffer.from(createHmac('sha256', Buffer.from(secret, 'utf8')).update(payload, 'utf8').digest('hex'), 'utf8');
  if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) return false;
  // Python's urlsafe_b64decode: only the URL-safe alphabet, and the padding must be there.
  if (payload.length % 4 !== 0 || !/^[A-Za-z0-9_-]*={0,2}$/.test(payload)) return false;
  let claims: { exp?: unknown; tid?: unknown; scope?: unknown };
  try {
    claims = JSON.parse(Buffer.from(payload.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'));
  } catch {
    return false;
  }
  if (typeof claims.exp !== 'number' || claims.exp * 1000 <= now) return false;
  if (claims.tid !== tenant) return false;
  return claims.scope !== 'read';
}

/** SHA-256 of the compact JSON with sorted keys, as the server computes `items[].sha256`. */
function sha256Sorted(value: unknown): string {
  return createHash('sha256').update(sortedJson(value)).digest('hex');
}

function sortedJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${sortedJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function depth(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  for (const child of Object.values(value)) deepest = Math.max(deepest, depth(child));
  return deepest + 1;
}

/** The body, or undefined when it exceeds `max` (the rest is discarded). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let bytes = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > max) over = true;
      if (!over) parts.push(chunk);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(parts)));
    req.on('error', reject);
  });
}

function drain(req: IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    req.resume();
    req.on('end', resolve);
    req.on('error', () => resolve());
  });
}

function tooLarge(res: ServerResponse): void {
  res.writeHead(413, { 'content-type': 'text/html; charset=utf-8', connection: 'close' });
  res.end('<!doctype html>\n<html lang=en>\n<title>413 Request Entity Too Large</title>\n<h1>Request Entity Too Large</h1>\n<p>The data value transmitted exceeds the capacity limit.</p>\n');
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

function outcome(res: ServerResponse, status: number, code: string, diagnostics: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] });
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(body);
}

/** `node ingestServer.js [--port N] [--secret S] [--meta-only]` */
async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const at = argv.indexOf(`--${name}`);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const server = await startIngestServer({ port: Number(arg('port') ?? 0), stepUpSecret: arg('secret'), metaOnly: argv.includes('--meta-only') });
  process.stdout.write(`${server.base}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main(process.argv.slice(2));
