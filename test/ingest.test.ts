import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { Checkpoint } from '../src/ingest/checkpoint.js';
import { ingestClient } from '../src/ingest/target.js';
import { readInputs } from '../src/io/input.js';
import { Rejects } from '../src/rejects.js';
import { postIngest, type IngestStats } from '../transforms/postIngest.js';
import { HX, SHARED, hx, tempDir } from './support/cli.js';
import { startIngestServer, type IngestServer } from './support/ingestServer.js';

const SECRET = 'test-secret-\u00e9-0123456789';
const SAMPLE = join(SHARED, 'data/sample-bulk-fhir-datasets-10-patients');
const SAMPLE_FILES = ['Patient', 'AllergyIntolerance', 'Condition', 'Immunization'].map((t) => join(SAMPLE, `${t}.000.ndjson`));

type Json = Record<string, any>;

function readResources(files: string[]): Json[] {
  return files.flatMap((f) =>
    readFileSync(f, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l)),
  );
}

const servers: IngestServer[] = [];
async function server(options: Parameters<typeof startIngestServer>[0] = {}): Promise<IngestServer> {
  const s = await startIngestServer({ stepUpSecret: SECRET, ...options });
  servers.push(s);
  return s;
}
afterEach(async () => {
  while (servers.length) await servers.pop()!.close();
});

const env = { STEP_UP_SECRET: SECRET };

/** Every input resource is stored, unchanged but for meta. */
function expectAllStored(s: IngestServer, tenant: string, resources: Json[]): void {
  const stored = s.stored(tenant);
  expect(stored.size).toBe(new Set(resources.map((r) => `${r.resourceType}/${r.id}`)).size);
  for (const r of resources) {
    const got = stored.get(`${r.resourceType}/${r.id}`);
    expect(got, `${r.resourceType}/${r.id}`).toBeDefined();
    const { meta: _a, ...gotRest } = got!;
    const { meta: _b, ...want } = r;
    expect(gotRest).toEqual(want);
  }
}

describe('hx ingest', () => {
  it('posts every resource in chunks under the budgets, with the HealthClaw headers, and sums the answers', async () => {
    const s = await server();
    const report = join(tempDir(), 'report.json');
    const r = await hx(['ingest', ...SAMPLE_FILES, '--base-url', s.base, '--tenant-id', 'ev-archive', '--max-entries', '100', '--report', report], { env });
    expect(r.stderr).toContain('Resources sent: 740; stored: 740; skipped: 0');
    expect(r.code).toBe(0);
    const resources = readResources(SAMPLE_FILES);
    expect(resources.length).toBe(740);
    expectAllStored(s, 'ev-archive', resources);
    const posts = s.requests.filter((q) => q.method === 'POST');
    expect(posts.length).toBe(8);
    expect(posts.every((q) => q.entries! <= 100 && q.path === '/r6/fhir/Bundle/$ingest-context')).toBe(true);
    for (const q of posts) {
      expect(q.headers['content-type']).toBe('application/fhir+json');
      expect(q.headers['x-tenant-id']).toBe('ev-archive');
      expect(q.headers['x-human-confirmed']).toBe('true');
    }
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account).toMatchObject({ read: 740, written: 740, rejected: 0, dropped: 0, balanced: true });
    expect(account.stages.ingest).toMatchObject({ chunks: 8, chunksPosted: 8, sent: 740, resourceCount: 740, skippedCount: 0, unacknowledged: 0 });
    expect(account.stages.ingest.contextIds).toHaveLength(8);
    expect(r.stderr).not.toContain(SECRET);
  });

  it('mints tokens an independent implementation of the server check accepts (HMAC over the padded base64 text)', async () => {
    const s = await server();
    // Tenant lengths that need 0, 1 and 2 padding characters in the payload.
    for (const tenant of ['t', 'tt', 'ttt']) {
      const r = await hx(['ingest', '--base-url', s.base, '--tenant-id', tenant], { env, stdin: '{"resourceType":"Patient","id":"p"}\n' });
      expect(r.code).toBe(0);
    }
    const tokens = s.requests.map((q) => q.headers['x-step-up-token'] as string);
    expect(tokens).toHaveLength(3);
    const check = `
import base64, hmac, hashlib, json, sys, time
secret, tenant, token = sys.argv[1], sys.argv[2], sys.argv[3]
payload, sig = token.rsplit('.', 1)
assert hmac.compare_digest(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest(), sig), 'signature'
claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
assert list(claims) == ['exp', 'tid', 'sub', 'nonce'], list(claims)
assert claims['tid'] == tenant and claims['exp'] > time.time() and claims['exp'] <= time.time() + 301
assert len(claims['nonce']) == 32 and int(claims['nonce'], 16) >= 0
assert json.dumps(claims, separators=(',', ':')).encode() == base64.urlsafe_b64decode(payload.encode())
print(payload.count('='))
`;
    const pads = ['t', 'tt', 'ttt'].map((tenant, i) => {
      const out = spawnSync('python3', ['-c', check, SECRET, tenant, tokens[i]!], { encoding: 'utf8' });
      expect(out.stderr).toBe('');
      return Number(out.stdout.trim());
    });
    expect(new Set(pads).size).toBeGreaterThan(1);
    for (const token of tokens) expect(token.split('.')[0]!.length % 4).toBe(0);
  });

  it('renews the token before it expires during a long import', async () => {
    // A clock shared by hx and the server, two minutes further at each chunk.
    let now = Date.now();
    const s = await server({ clock: () => now });
    s.beforeAnswer = () => {
      now += 120_000;
    };
    const account = new Account();
    const ctx = { account, rejects: new Rejects(account) };
    const client = ingestClient({ base: s.base, mode: 'ingest', tenant: 'long', secret: SECRET }, () => {}, () => now);
    await pipeline(
      readInputs(SAMPLE_FILES, ctx),
      postIngest({ base: s.base, mode: 'ingest', client, maxEntries: 50, concurrency: 1 }, ctx),
    );
    await client.close();
    const posts = s.requests.filter((q) => q.method === 'POST');
    expect(posts.length).toBe(15);
    expect(posts.every((q) => q.status === 201)).toBe(true);
    const distinct = new Set(posts.map((q) => q.headers['x-step-up-token']));
    // 30 simulated minutes with tokens that live 5: every one was live when the server checked it (all 201).
    expect(distinct.size).toBeGreaterThanOrEqual(5);
    expect(account.written).toBe(740);
  });

  it('pauses reading while the posts in flight are at the limit (backpressure)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const s = await server();
    s.beforeAnswer = () => gate;
    let pulled = 0;
    async function* source() {
      for (let b = 0; b < 200; b++) {
        pulled++;
        const resources = Array.from({ length: 10 }, (_, i) => ({ resourceType: 'Patient', id: `p${b}-${i}` }));
        yield { source: 'gen', lines: resources.map((_, i) => i + 1), resources };
      }
    }
    const account = new Account();
    const ctx = { account, rejects: new Rejects(account) };
    const client = ingestClient({ base: s.base, mode: 'ingest', tenant: 'bp', secret: SECRET }, () => {});
    const done = pipeline(Readable.from(source(), { objectMode: true, highWaterMark: 1 }), postIngest({ base: s.base, mode: 'ingest', client, maxEntries: 10, concurrency: 2 }, ctx));
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Two posts held by the server, one batch in the sink, a few in stream buffers: nowhere near 200.
    expect(pulled).toBeLessThan(10);
    expect(s.requests.length).toBe(2);
    release();
    await done;
    await client.close();
    expect(pulled).toBe(200);
    expect(s.stored('bp').size).toBe(2000);
    expect(account.written).toBe(2000);
  });

  it('splits a chunk the server answers 413 (HTML) in two, recursively', async () => {
    const s = await server({ maxEntries: 30 });
    const report = join(tempDir(), 'r.json');
    const r = await hx(['ingest', SAMPLE_FILES[2]!, '--base-url', s.base, '--tenant-id', 'big', '--max-entries', '200', '--report', report], { env });
    expect(r.stderr).toContain('split after HTTP 413');
    expect(r.code).toBe(0);
    expectAllStored(s, 'big', readResources([SAMPLE_FILES[2]!]));
    const stats = JSON.parse(readFileSync(report, 'utf8')).stages.ingest;
    expect(stats.splits).toBeGreaterThan(0);
    expect(stats).toMatchObject({ sent: 555, resourceCount: 555 });
    expect(s.requests.filter((q) => q.status === 413).length).toBe(stats.splits);
  });

  it('splits on a 413 for a body over the server limit, and fails on a single resource that alone exceeds it', async () => {
    const s = await server({ maxBodyBytes: 100_000 });
    const r = await hx(['ingest', SAMPLE_FILES[2]!, '--base-url', s.base, '--tenant-id', 'bytes', '--max-bytes', '1MiB'], { env });
    expect(r.code).toBe(0);
    expect(s.requests.some((q) => q.status === 413)).toBe(true);
    expectAllStored(s, 'bytes', readResources([SAMPLE_FILES[2]!]));
    const huge = JSON.stringify({ resourceType: 'Patient', id: 'huge', text: { div: 'x'.repeat(150_000) } }) + '\n';
    const failed = await hx(['ingest', '--base-url', s.base, '--tenant-id', 'bytes'], { env, stdin: huge });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('chunk 1: the server refuses a single resource as too large (HTTP 413)');
  });

  it('retries 429 (Retry-After), 503 and resets; stops on another 4xx naming the chunk and the diagnostics', async () => {
    const s = await server({
      faults: [
        { fault: { kind: 'status', status: 429, retryAfter: '1' } },
        { skip: 1, fault: { kind: 'status', status: 503, retryAfter: '0' } },
        { skip: 2, fault: { kind: 'reset' } },
      ],
    });
    const r = await hx(['ingest', SAMPLE_FILES[0]!, '--base-url', s.base, '--tenant-id', 'retry'], { env });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/chunk 1: HTTP 429.*retrying in 1 s/);
    expect(s.stored('retry').size).toBe(13);

    const bad = await server({ faults: [{ skip: 1, fault: { kind: 'status', status: 422 } }] });
    const failed = await hx(['ingest', SAMPLE_FILES[2]!, '--base-url', bad.base, '--tenant-id', 'x', '--max-entries', '100', '--concurrency', '1'], { env });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/hx: chunk 2: HTTP 422.*injected 422/);
  });

  it('keeps to a rate-limited server (429 with Retry-After) without losing a chunk', async () => {
    const s = await server({ rateLimit: { requests: 3, windowMs: 1000, announce: false } });
    const r = await hx(['ingest', SAMPLE_FILES[2]!, '--base-url', s.base, '--tenant-id', 'rl', '--max-entries', '100'], { env });
    expect(r.code).toBe(0);
    expect(s.requests.some((q) => q.status === 429)).toBe(true);
    expectAllStored(s, 'rl', readResources([SAMPLE_FILES[2]!]));
  });

  it('refuses a wrong secret (401) and a malformed tenant before any request', async () => {
    const s = await server();
    const r = await hx(['ingest', SAMPLE_FILES[0]!, '--base-url', s.base, '--tenant-id', 'x'], { env: { STEP_UP_SECRET: 'wrong-secret-123' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 401');
    expect(r.stderr).toContain('tenant-bound write token');
    expect(r.stderr).not.toContain('wrong-secret-123');
    const before = s.requests.length;
    const t = await hx(['ingest', SAMPLE_FILES[0]!, '--base-url', s.base, '--tenant-id', 'a/b'], { env });
    expect(t.code).toBe(2);
    expect(t.stderr).toContain('tenant id must be');
    const n = await hx(['ingest', SAMPLE_FILES[0]!, '--base-url', s.base, '--tenant-id', 'a'], { env: { STEP_UP_SECRET: '' } });
    expect(n.code).toBe(2);
    expect(n.stderr).toContain('STEP_UP_SECRET is required');
    expect(s.requests.length).toBe(before);
  });

  it('keeps the concurrency bound, and counts skipped types as the server reports them', async () => {
    const s = await server({ latencyMs: 50 });
    const dir = tempDir();
    const input = join(dir, 'in.ndjson');
    const lines = readFileSync(SAMPLE_FILES[2]!, 'utf8').trim().split('\n');
    for (let i = 0; i < 20; i++) lines.push(JSON.stringify({ resourceType: i % 2 ? 'Claim' : 'MedicationStatement', id: `x${i}` }));
    writeFileSync(input, lines.join('\n') + '\n');
    const report = join(dir, 'r.json');
    const r = await hx(['ingest', input, '--base-url', s.base, '--tenant-id', 'c', '--max-entries', '20', '--concurrency', '3', '--report', report], { env });
    expect(r.code).toBe(0);
    expect(s.maxInFlight).toBe(3);
    const stats = JSON.parse(readFileSync(report, 'utf8')).stages.ingest;
    expect(stats).toMatchObject({ sent: 575, resourceCount: 555, skippedCount: 20, skippedTypes: { Claim: 10, MedicationStatement: 10 }, unacknowledged: 0 });
    expect(r.stderr).toContain('skipped: 20 (Claim 10, MedicationStatement 10)');
  });

  it('--mode transaction posts transaction Bundles to the base', async () => {
    const s = await server({ stepUpSecret: undefined });
    const r = await hx(['ingest', SAMPLE_FILES[0]!, SAMPLE_FILES[1]!, '--mode', 'transaction', '--base-url', s.base + '/', '--tenant-id', 'tx']);
    expect(r.code).toBe(0);
    expect(s.requests.every((q) => q.path === '/r6/fhir')).toBe(true);
    expectAllStored(s, 'tx', readResources(SAMPLE_FILES.slice(0, 2)));
  });

  it('resumes after a kill mid-import: nothing lost, acknowledged chunks not sent again', async () => {
    const s = await server();
    const dir = tempDir();
    const checkpoint = join(dir, 'ingest.ckpt');
    const args = [HX, 'ingest', ...SAMPLE_FILES, '--base-url', s.base, '--tenant-id', 'resume', '--max-entries', '40', '--concurrency', '2', '--checkpoint', checkpoint];
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let answered = 0;
    s.beforeAnswer = () => {
      if (++answered === 7) child.kill('SIGKILL');
    };
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(null);
    s.beforeAnswer = undefined;
    const saved = JSON.parse(readFileSync(checkpoint, 'utf8'));
    const acked = saved.sums.chunks;
    expect(acked).toBeGreaterThan(0);
    expect(acked).toBeLessThan(19);
    const postsBefore = s.requests.length;
    const report = join(dir, 'r.json');
    const again = await hx(args.slice(1).concat(['--report', report]), { env });
    expect(again.stderr).toContain('acknowledged by an earlier run');
    expect(again.code).toBe(0);
    const stats = JSON.parse(readFileSync(report, 'utf8'));
    expect(stats.stages.ingest.chunksResumed).toBe(acked);
    expect(stats.stages.ingest.chunksPosted).toBe(19 - acked);
    expect(s.requests.length - postsBefore).toBe(19 - acked);
    expect(stats.stages.ingest.total).toMatchObject({ chunks: 19, sent: 740, resourceCount: 740 });
    expect(stats).toMatchObject({ read: 740, balanced: true });
    expectAllStored(s, 'resume', readResources(SAMPLE_FILES));

    // Another input against the same checkpoint is refused.
    const other = await hx(['ingest', SAMPLE_FILES[2]!, ...args.slice(2 + SAMPLE_FILES.length)], { env });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/the input changed|fewer than the checkpoint/);
  });
});

describe('Checkpoint', () => {
  it('keeps a constant-size record of out-of-order acknowledgements', () => {
    const path = join(tempDir(), 'c.ckpt');
    const sums = { resourceCount: 1, skippedCount: 0, skippedTypes: {}, sent: 1 };
    const a = Checkpoint.open(path, 'same');
    a.acknowledge(2, 'd2', sums);
    a.acknowledge(1, 'd1', sums);
    a.acknowledge(4, 'd4', sums);
    const saved = JSON.parse(readFileSync(path, 'utf8'));
    expect(saved.prefix).toBe(2);
    expect(Object.keys(saved.above)).toEqual(['4']);
    const b = Checkpoint.open(path, 'same');
    expect([1, 2, 3, 4].map((n) => b.acknowledged(n, `d${n}`))).toEqual([true, true, false, true]);
    expect(() => Checkpoint.open(path, 'other')).toThrow(/other settings/);
    const c = Checkpoint.open(path, 'same');
    expect(c.acknowledged(1, 'd1')).toBe(true);
    expect(() => c.acknowledged(2, 'changed')).toThrow(/input changed/);
  });
});

describe('hx import', () => {
  const bundle = (entries: Json[]) => JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: entries.map((resource) => ({ resource, request: { method: 'PUT', url: `${resource.resourceType}/${resource.id}` } })) }, null, 2);

  it("keeps the Python importer's errors", async () => {
    const dir = tempDir();
    const missing = await hx(['import', '--bundle-file', join(dir, 'nope.json'), '--tenant-id', 't'], { env });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('ERROR: Bundle file not found:');
    writeFileSync(join(dir, 'bad.json'), '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient",}}]}');
    const invalid = await hx(['import', '--bundle-file', join(dir, 'bad.json'), '--tenant-id', 't'], { env });
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toContain('ERROR: Invalid JSON in bundle file:');
    writeFileSync(join(dir, 'patient.json'), '{"resourceType":"Patient","id":"p"}');
    const notBundle = await hx(['import', '--bundle-file', join(dir, 'patient.json'), '--tenant-id', 't'], { env });
    expect(notBundle.stderr).toContain('ERROR: Expected resourceType Bundle, got Patient');
    writeFileSync(join(dir, 'ok.json'), bundle([{ resourceType: 'Patient', id: 'p' }]));
    const noSecret = await hx(['import', '--bundle-file', join(dir, 'ok.json'), '--tenant-id', 't'], { env: { STEP_UP_SECRET: '' } });
    expect(noSecret.stderr).toContain('STEP_UP_SECRET is required. Pass --step-up-secret or set the STEP_UP_SECRET environment variable.');
    expect(noSecret.code).not.toBe(0);
  });

  it('--dry-run shows the request with the token as *** and sends nothing', async () => {
    const s = await server();
    const dir = tempDir();
    writeFileSync(join(dir, 'b.json'), bundle(readResources([SAMPLE_FILES[0]!])));
    const r = await hx(['import', '--bundle-file', join(dir, 'b.json'), '--tenant-id', 'dry', '--base-url', s.base, '--dry-run'], { env });
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    expect(out).toContain(`DRY RUN — would POST to: ${s.base}/Bundle/$ingest-context`);
    expect(out).toContain('"X-Step-Up-Token": "***"');
    expect(out).toContain('"X-Tenant-ID": "dry"');
    expect(out).toContain('Bundle entries: 13');
    expect(out + r.stderr).not.toContain(SECRET);
    expect(s.requests.length).toBe(0);
  });

  it('imports a Bundle file in chunks and prints the context id', async () => {
    const s = await server();
    const dir = tempDir();
    const resources = readResources(SAMPLE_FILES);
    writeFileSync(join(dir, 'b.json'), bundle(resources));
    const r = await hx(['import', '--bundle-file', join(dir, 'b.json'), '--tenant-id', 'imp', '--base-url', s.base, '--max-entries', '500'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toContain('POSTing bundle (740 entries)');
    expect(r.stdout.toString()).toContain('Ingested successfully.');
    expectAllStored(s, 'imp', resources);
    expect(s.requests.length).toBe(2);
  });
});
