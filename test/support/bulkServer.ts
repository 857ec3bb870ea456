/**
 * A FHIR Bulk Data server for tests and benchmarks, on an ephemeral
 * loopback port: kick-off (system, Patient, Group; GET or POST), a status
 * URL that answers 202 with `X-Progress` and `Retry-After` N times and then
 * the manifest, DELETE to cancel, and the files — fixed bytes (captures of
 * the SMART reference server) or generated resources streamed without
 * holding them. Optional: SMART Backend Services (discovery, a token
 * endpoint that verifies the client assertion against a JWKS, expiring
 * tokens), gzip, file URLs that redirect to another origin, and faults
 * (any status with Retry-After, 500 OperationOutcome, 410, resets mid-file).
 *
 * Standalone (for benchmarks and demos), once compiled by an importer:
 *     node dist/test/support/bulkServer.js --types Patient=100000,Observation=900000 --per-file 250000 --pad 900 [--port 8080] [--gzip] [--polls 3]
 *     node dist/test/support/bulkServer.js --from-dir ../shared/data/bulk-data-server/export-system --gzip --polls 3
 * prints the FHIR base URL and serves until killed.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createGzip, gunzipSync } from 'node:zlib';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';

export interface FileSpec {
  /** Name in the URL (and in the manifest entry's url). */
  name: string;
  kind?: 'output' | 'error' | 'deleted';
  /** Manifest `type`; absent for output organised by patient. */
  type?: string;
  /** Fixed bytes, served as is. */
  body?: Buffer;
  /** Or: `n` generated resources of `type` from index `from`, each padded with `pad` characters. */
  generate?: { from: number; n: number; pad: number };
  /** Manifest `count` (default: the true count; a wrong one tests distrust). */
  count?: number;
  continuesInFile?: string;
}

export type Fault =
  | { kind: 'status'; status: number; retryAfter?: string; body?: string }
  /** Connection reset after `afterBytes` of the body. */
  | { kind: 'reset'; afterBytes: number }
  /** `afterBytes` of the body, then silence with the connection open (a process to kill mid-file). */
  | { kind: 'stall'; afterBytes: number };

export interface FaultRule {
  /** Requests whose method + path match (`GET /fhir/status/…`). */
  match: RegExp;
  /** Matching requests let through first. */
  skip?: number;
  /** Matching requests that get the fault (default 1). */
  times?: number;
  fault: Fault;
}

export interface BulkServerOptions {
  files: FileSpec[];
  /** 202 answers before the manifest. */
  polls?: number;
  /** Retry-After on the 202s (default "0"); `null` sends none. */
  retryAfter?: string | null;
  requiresAccessToken?: boolean;
  /** Extra manifest fields (outputOrganizedBy …). */
  manifestExtra?: Record<string, unknown>;
  /** SMART Backend Services: every FHIR request then needs a token from `/auth/token`. */
  smart?: { clientId: string; jwks: JSONWebKeySet; tokenLifetimeSeconds?: number };
  /** Compress file responses when the client accepts gzip. */
  gzip?: boolean;
  /** File URLs redirect to a second port (another origin, like signed storage: no token needed there). */
  redirectFiles?: boolean;
  faults?: FaultRule[];
  port?: number;
}

export interface SeenRequest {
  method: string;
  /** The port the request came to (the storage port for redirected files). */
  port?: number;
  url: string;
  authorization?: string;
  accept?: string;
  prefer?: string;
  acceptEncoding?: string;
  body?: string;
}

export interface BulkServer {
  base: string;
  url: string;
  requests: SeenRequest[];
  tokensIssued: number;
  /** Resources (non-blank lines) each file holds. */
  linesOf(name: string): number;
  close(): Promise<void>;
}

export function resourceLine(type: string, i: number, pad: string): string {
  return `{"resourceType":"${type}","id":"${type}-${i}","meta":{"versionId":"1"},"text":{"status":"generated","div":"${pad}"}}\n`;
}

export async function startBulkServer(options: BulkServerOptions): Promise<BulkServer> {
  const requests: SeenRequest[] = [];
  const faultHits = new Map<FaultRule, number>();
  const jobs = new Map<string, { pollsLeft: number; polls: number; cancelled: boolean; request: string }>();
  const tokens = new Map<string, number>();
  const usedJti = new Set<string>();
  const sockets = new Set<Socket>();
  let tokensIssued = 0;
  let base = '';
  let port = 0;
  let storagePort = -1;

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      handle(req, res, body).catch((err) => {
        if (!res.headersSent) outcome(res, 500, String(err));
        else res.destroy();
      });
    });
  };
  const server = createServer(listener);
  const storage = options.redirectFiles ? createServer(listener) : undefined;
  for (const srv of [server, storage]) {
    srv?.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
    const url = new URL(req.url!, 'http://127.0.0.1');
    const path = url.pathname;
    requests.push({
      method: req.method!,
      port: req.socket.localPort,
      url: req.url!,
      authorization: req.headers.authorization,
      accept: req.headers.accept,
      prefer: req.headers.prefer as string | undefined,
      acceptEncoding: req.headers['accept-encoding'] as string | undefined,
      body: body || undefined,
    });
    const fault = faultFor(`${req.method} ${path}`);
    if (fault?.kind === 'status') {
      res.writeHead(fault.status, { 'content-type': 'application/fhir+json', ...(fault.retryAfter ? { 'retry-after': fault.retryAfter } : {}) });
      return void res.end(fault.body ?? JSON.stringify(operationOutcome(`fault ${fault.status}`)));
    }
    if (path === '/fhir/.well-known/smart-configuration') {
      return json(res, 200, { token_endpoint: `${base.replace(/\/fhir$/, '')}/auth/token`, grant_types_supported: ['client_credentials'] });
    }
    if (path === '/auth/token' && req.method === 'POST') return token(res, body);
    const isFile = path.startsWith('/fhir/files/') || path.startsWith('/fhir/redirect-files/');
    const fromStorage = isFile && req.socket.localPort === storagePort;
    if (options.smart && !fromStorage && (!isFile || options.requiresAccessToken) && !authorised(req)) {
      return outcome(res, 401, 'Authentication is required');
    }
    if (path.startsWith('/fhir/redirect-files/')) {
      res.writeHead(302, { location: `http://127.0.0.1:${storagePort}/fhir/files/${path.slice('/fhir/redirect-files/'.length)}` });
      return void res.end();
    }
    if (req.method === 'GET' && isFile) return file(res, req, path.slice('/fhir/files/'.length), fault);
    const kickoff = /^\/fhir\/(?:\$export|Patient\/\$export|Group\/([^/]+)\/\$export)$/.exec(path);
    if (kickoff && (req.method === 'GET' || req.method === 'POST')) {
      if (req.headers.accept !== 'application/fhir+json' || req.headers.prefer !== 'respond-async') {
        return outcome(res, 400, 'Accept: application/fhir+json and Prefer: respond-async are required');
      }
      const id = randomUUID();
      jobs.set(id, { pollsLeft: options.polls ?? 0, polls: options.polls ?? 0, cancelled: false, request: `${base}${path.slice(5)}${url.search}` });
      res.writeHead(202, { 'content-location': `${base}/status/${id}`, 'content-type': 'application/fhir+json' });
      return void res.end(JSON.stringify(operationOutcome('Your request has been accepted')));
    }
    const status = /^\/fhir\/status\/([^/]+)$/.exec(path);
    const job = status && jobs.get(status[1]);
    if (!job || job.cancelled) return outcome(res, 404, 'The export was not found');
    if (req.method === 'DELETE') {
      job.cancelled = true;
      return outcome(res, 202, 'The export was cancelled');
    }
    if (job.pollsLeft > 0) {
      const done = job.polls - job.pollsLeft;
      job.pollsLeft--;
      const headers: Record<string, string> = { 'x-progress': `${Math.round((done / job.polls) * 100)}% complete, Please wait...` };
      if (options.retryAfter !== null) headers['retry-after'] = options.retryAfter ?? '0';
      res.writeHead(202, headers);
      return void res.end();
    }
    return json(res, 200, manifest(job.request), { expires: new Date(Date.now() + 3600_000).toUTCString() });
  }

  function manifest(request: string): Record<string, unknown> {
    const fileBase = options.redirectFiles ? `${base}/redirect-files` : `${base}/files`;
    const entry = (f: FileSpec) => ({
      url: `${fileBase}/${f.name}`,
      ...(f.type ? { type: f.type } : {}),
      count: f.count ?? linesOf(f.name),
      ...(f.continuesInFile ? { continuesInFile: f.continuesInFile } : {}),
    });
    const of = (kind: FileSpec['kind']) => options.files.filter((f) => (f.kind ?? 'output') === kind).map(entry);
    return {
      transactionTime: '2026-11-23T09:02:05+00:00',
      request,
      requiresAccessToken: Boolean(options.requiresAccessToken),
      ...options.manifestExtra,
      output: of('output'),
      deleted: of('deleted'),
      error: of('error'),
    };
  }

  function file(res: ServerResponse, req: IncomingMessage, name: string, fault: Fault | undefined): void {
    const spec = options.files.find((f) => f.name === name);
    if (!spec) return outcome(res, 404, 'No such file');
    const gzip = options.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    res.writeHead(200, { 'content-type': 'application/fhir+ndjson', ...(gzip ? { 'content-encoding': 'gzip' } : {}) });
    const limit = fault?.kind === 'reset' || fault?.kind === 'stall' ? fault.afterBytes : Infinity;
    const sink = gzip ? createGzip() : res;
    if (gzip) sink.pipe(res);
    let sent = 0;
    const chunks = fileChunks(spec);
    const pump = () => {
      for (let next = chunks.next(); !next.done; next = chunks.next()) {
        let chunk = next.value;
        if (sent + chunk.length > limit) {
          chunk = chunk.subarray(0, limit - sent);
          sink.write(chunk);
          if (gzip) (sink as ReturnType<typeof createGzip>).flush();
          // Let the partial body reach the client, then cut the connection (or hold it open).
          if (fault?.kind === 'reset') setTimeout(() => res.socket?.resetAndDestroy(), 20);
          return;
        }
        sent += chunk.length;
        if (!sink.write(chunk)) return void sink.once('drain', pump);
      }
      sink.end();
    };
    pump();
  }

  function linesOf(name: string): number {
    const spec = options.files.find((f) => f.name === name)!;
    if (spec.generate) return spec.generate.n;
    return spec.body!.toString('utf8').split('\n').filter((l) => l.trim() !== '').length;
  }

  function faultFor(key: string): Fault | undefined {
    for (const rule of options.faults ?? []) {
      if (!rule.match.test(key)) continue;
      const hits = faultHits.get(rule) ?? 0;
      faultHits.set(rule, hits + 1);
      const skip = rule.skip ?? 0;
      if (hits >= skip && hits < skip + (rule.times ?? 1)) return rule.fault;
    }
    return undefined;
  }

  function authorised(req: IncomingMessage): boolean {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const expires = token && tokens.get(token);
    return Boolean(expires && expires > Date.now());
  }

  async function token(res: ServerResponse, body: string): Promise<void> {
    const smart = options.smart;
    if (!smart) return json(res, 404, { error: 'not_found' });
    const form = new URLSearchParams(body);
    if (form.get('grant_type') !== 'client_credentials' || form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
      return json(res, 400, { error: 'invalid_request', error_description: 'client_credentials with a JWT client assertion expected' });
    }
    try {
      const { payload } = await jwtVerify(form.get('client_assertion') ?? '', createLocalJWKSet(smart.jwks), {
        issuer: smart.clientId,
        subject: smart.clientId,
        audience: `${base.replace(/\/fhir$/, '')}/auth/token`,
        algorithms: ['RS384', 'ES384'],
        maxTokenAge: '5m',
      });
      if (typeof payload.jti !== 'string' || usedJti.has(payload.jti)) throw new Error('jti missing or reused');
      usedJti.add(payload.jti);
    } catch (err) {
      return json(res, 401, { error: 'invalid_client', error_description: `client assertion rejected: ${(err as Error).message}` });
    }
    const lifetime = smart.tokenLifetimeSeconds ?? 300;
    const accessToken = `tok-${randomUUID()}`;
    tokens.set(accessToken, Date.now() + lifetime * 1000);
    tokensIssued++;
    return json(res, 200, { access_token: accessToken, token_type: 'bearer', expires_in: lifetime, scope: form.get('scope') });
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  if (storage) {
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.1', resolve));
    storagePort = (storage.address() as AddressInfo).port;
  }
  base = `http://127.0.0.1:${port}/fhir`;
  return {
    base,
    url: `http://127.0.0.1:${port}`,
    requests,
    get tokensIssued() {
      return tokensIssued;
    },
    linesOf,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        storage?.close();
        server.close(() => resolve());
      }),
  };
}

/** The bytes of a file in chunks of about 64 KiB, generated lazily. */
function* fileChunks(spec: FileSpec): Generator<Buffer> {
  if (spec.body) {
    for (let i = 0; i < spec.body.length; i += 65536) yield spec.body.subarray(i, i + 65536);
    return;
  }
  const { from, n, pad } = spec.generate!;
  const padding = 'x'.repeat(pad);
  let text = '';
  for (let i = from; i < from + n; i++) {
    text += resourceLine(spec.type!, i, padding);
    if (text.length >= 65536) {
      yield Buffer.from(text);
      text = '';
    }
  }
  if (text) yield Buffer.from(text);
}

function operationOutcome(diagnostics: string, code = 'processing'): Record<string, unknown> {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics }] };
}

function outcome(res: ServerResponse, status: number, diagnostics: string): void {
  json(res, status, operationOutcome(diagnostics));
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(value));
}

/** Generated files: `types` resources per type, split into files of `perFile`. */
export function generatedFiles(types: Record<string, number>, perFile: number, pad: number): FileSpec[] {
  const files: FileSpec[] = [];
  for (const [type, total] of Object.entries(types)) {
    for (let from = 0, part = 0; from < total; from += perFile, part++) {
      files.push({ name: `${type}.${part}.ndjson`, type, generate: { from, n: Math.min(perFile, total - from), pad } });
    }
  }
  return files;
}

/**
 * The files of a captured export folder (`manifest.json` + `N.Type.ndjson[.gz]`,
 * like `../shared/data/bulk-data-server/export-system`), in manifest order,
 * with the manifest's counts and `continuesInFile` as captured.
 */
export function capturedFiles(dir: string): FileSpec[] {
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { output: { url: string; type?: string; count?: number; continuesInFile?: string }[] };
  const present = new Set(readdirSync(dir));
  return manifest.output.map((entry) => {
    const name = basename(new URL(entry.url).pathname);
    const body = present.has(name) ? readFileSync(join(dir, name)) : gunzipSync(readFileSync(join(dir, `${name}.gz`)));
    return { name, type: entry.type, body, count: entry.count, continuesInFile: entry.continuesInFile };
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const fromDir = arg('from-dir');
  const types = Object.fromEntries((arg('types') ?? 'Patient=1000,Observation=100000').split(',').map((p) => [p.split('=')[0], Number(p.split('=')[1])]));
  const server = await startBulkServer({
    files: fromDir ? capturedFiles(fromDir) : generatedFiles(types, Number(arg('per-file') ?? 250_000), Number(arg('pad') ?? 900)),
    gzip: process.argv.includes('--gzip'),
    polls: Number(arg('polls') ?? 0),
    retryAfter: '1',
    port: arg('port') ? Number(arg('port')) : undefined,
  });
  process.stdout.write(`${server.base}\n`);
}
