import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hx, parseNdjson, tempDir } from './support/cli.js';
import { PATIENT_ID, startFhirServer, type FhirServer, type FhirServerOptions } from './support/fhirServer.js';

const servers: FhirServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(options: FhirServerOptions): Promise<FhirServer> {
  const server = await startFhirServer(options);
  servers.push(server);
  return server;
}

/** Fast retries for tests. */
const FAST = ['--retry-base-ms', '5', '--retry-max-ms', '50'];

function report(dir: string): Record<string, any> {
  return JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
}

function ids(stdout: Buffer): string[] {
  return parseNdjson(stdout).map((r) => `${r.resourceType}/${r.id}`);
}

describe('hx fetch: type searches', () => {
  it('follows offset next links to the end, in type order, exactly once each', async () => {
    const server = await serve({ tenants: { default: { Patient: 5, Observation: 1234, Condition: 0, Encounter: 77 } } });
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--types', 'Patient', 'Observation', 'Condition', 'Encounter', '--count', '100', '--report', join(dir, 'report.json'), ...FAST]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = ids(r.stdout);
    expect(got).toHaveLength(5 + 1234 + 77);
    expect(new Set(got).size).toBe(got.length);
    // Search order, and within a search the server's order (newest first).
    expect(got[0]).toBe('Patient/patient-default-4');
    expect(got[5]).toBe('Observation/observation-default-1233');
    expect(got.at(-1)).toBe('Encounter/encounter-default-0');
    const rep = report(dir);
    expect(rep.balanced).toBe(true);
    expect(rep.stages.fetch.searches.Observation).toMatchObject({ fetched: 1234, total: 1234, pages: 13, duplicates: 0 });
    expect(rep.stages.fetch.searches.Condition).toMatchObject({ fetched: 0, total: 0, pages: 1 });
    for (const [path, n] of server.maxInFlight) expect(n, path).toBe(1);
  });
});

describe('hx fetch: paging', () => {
  it('follows opaque cursor next links', async () => {
    const server = await serve({ paging: 'cursor', tenants: { default: { Observation: 250 } } });
    const r = await hx(['fetch', '--base-url', server.base, '--types', 'Observation', '--count', '60']);
    expect(r.code).toBe(0);
    expect(new Set(ids(r.stdout)).size).toBe(250);
    expect(server.requests.filter((q) => q.url.includes('_cursor='))).toHaveLength(4);
  });

  it('fetches exactly what a 50,000-resource tenant serves, over many pages', async () => {
    const server = await serve({ tenants: { default: { Patient: 1000, Observation: 40_000, Encounter: 9000 } } });
    const dir = tempDir();
    const out = join(dir, 'out.ndjson');
    const r = await hx(['fetch', '--base-url', server.base, '--types', 'Patient', 'Observation', 'Encounter', '--count', '2500', '-o', out, '--report', join(dir, 'report.json')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = ids(readFileSync(out));
    expect(got).toHaveLength(50_000);
    expect(new Set(got).size).toBe(50_000);
    const rep = report(dir);
    expect(rep).toMatchObject({ read: 50_000, written: 50_000, dropped: 0, balanced: true });
    expect(rep.writtenByType).toEqual({ Encounter: 9000, Observation: 40_000, Patient: 1000 });
    expect(rep.stages.fetch.searches.Observation).toMatchObject({ fetched: 40_000, total: 40_000, pages: 16 });
  });

  it('drops resources a shifting server repeats across pages, and still gets every one', async () => {
    const server = await serve({ overlap: 3, tenants: { default: { Condition: 100 } } });
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--types', 'Condition', '--count', '20', '--report', join(dir, 'report.json')]);
    expect(r.code).toBe(0);
    expect(new Set(ids(r.stdout)).size).toBe(100);
    expect(ids(r.stdout)).toHaveLength(100);
    const rep = report(dir);
    expect(rep.stages.fetch.searches.Condition.duplicates).toBeGreaterThan(0);
    expect(rep.dropped).toBe(rep.stages.fetch.searches.Condition.duplicates);
    expect(rep.droppedByReason).toEqual({ 'duplicate (type, id) across pages': rep.dropped });
    expect(rep.balanced).toBe(true);
  });

  it('gives the same bytes whatever the concurrency', async () => {
    const server = await serve({ tenants: { default: { Patient: 40, Observation: 700, Condition: 300, Encounter: 500, Procedure: 5 } } });
    const args = ['fetch', '--base-url', server.base, '--types', 'Patient', 'Observation', 'Condition', 'Encounter', 'Procedure', '--count', '50'];
    const one = await hx([...args, '--concurrency', '1']);
    const four = await hx([...args, '--concurrency', '4']);
    expect(one.code).toBe(0);
    expect(four.stdout.equals(one.stdout)).toBe(true);
    expect(parseNdjson(one.stdout)).toHaveLength(1545);
    for (const [path, n] of server.maxInFlight) expect(n, path).toBe(1);
  });
});

describe('hx fetch: failures', () => {
  it('ends the whole run when a later search fails while an earlier one is still streaming', async () => {
    const server = await serve({
      tenants: { default: { Observation: 20_000, Encounter: 10 } },
      faults: [{ match: /Encounter/, fault: { kind: 'status', status: 404 } }],
    });
    const dir = tempDir();
    const out = join(dir, 'out.ndjson');
    const r = await hx(['fetch', '--base-url', server.base, '--types', 'Observation', 'Encounter', '--count', '100', '-o', out]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('hx: Encounter page 1: HTTP 404 — not found: check --base-url, the resource type and the patient id; the server says: injected 404\n');
    expect(() => readFileSync(out)).toThrow();
    // Observation stopped early rather than running to its 200th page.
    expect(server.requests.filter((q) => q.url.startsWith('/fhir/Observation')).length).toBeLessThan(200);
  });
});

describe('hx fetch: a HealthClaw-style server (no next links)', () => {
  const healthclaw = (extra: Partial<FhirServerOptions> = {}): FhirServerOptions => ({
    paging: 'healthclaw',
    tenantHeader: true,
    sortedKeys: true,
    stepUpSecret: 'claw-secret-1',
    perInstant: 7,
    tenants: { 'ev-personal': { Patient: 1, Observation: 3000, Condition: 12 } },
    ...extra,
  });
  const env = { STEP_UP_SECRET: 'claw-secret-1' };

  it('pages 3,000 Observations by _lastUpdated keyset where the Python exporter stops at 200', async () => {
    const server = await serve(healthclaw());
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Patient', 'Observation', 'Condition', '--report', join(dir, 'report.json'), '-v'], { env });
    expect(r.code).toBe(0);
    const got = ids(r.stdout);
    expect(got).toHaveLength(3013);
    expect(new Set(got).size).toBe(3013);
    const obs = report(dir).stages.fetch.searches.Observation;
    expect(obs).toMatchObject({ fetched: 3000, total: 3000, duplicates: 0 });
    expect(obs.keysetPages).toBe(obs.pages - 1);
    expect(obs.keysetOverlap).toBeGreaterThan(0); // boundary instants shared by two pages
    expect(r.stderr).toMatch(/Observation +3000 of 3000 +\(16 pages, 15 by _lastUpdated keyset\)/);
    // Every request carried the tenant and a step-up token; keyset pages asked for le<instant>, sorted newest first.
    expect(server.requests.every((q) => q.headers['x-tenant-id'] === 'ev-personal' && q.headers['x-step-up-token'])).toBe(true);
    expect(server.requests.filter((q) => /_lastUpdated=le2026/.test(decodeURIComponent(q.url)))).toHaveLength(15);
  });

  it('keeps to the rate limit the server announces: waits for its window instead of drawing a 429', async () => {
    const server = await serve(healthclaw({ maxCount: 50, rateLimit: { requests: 4, windowMs: 1000 }, tenants: { 'ev-personal': { Patient: 1, Observation: 500 } } }));
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Patient', 'Observation', '--report', join(dir, 'report.json')], { env });
    expect(r.code).toBe(0);
    expect(new Set(ids(r.stdout)).size).toBe(501);
    // More requests (one Patient page, Observation pages of 50) than two windows of 4 allow: waits, and no 429.
    expect(server.requests.length).toBeGreaterThan(8);
    expect(server.requests.map((q) => q.status)).toEqual(Array(server.requests.length).fill(200));
    const fetch = report(dir).stages.fetch;
    expect(fetch).toMatchObject({ requests: server.requests.length, retries: 0 });
    expect(fetch.rateLimitWaits).toBeGreaterThanOrEqual(2);
    expect(r.stderr).toContain("hx: the server's rate limit is used up for now; waiting");
  });

  it('writes the golden output for a small tenant paged by keyset (pages of 10, four resources per instant)', async () => {
    const server = await serve(healthclaw({ maxCount: 10, perInstant: 4, tenants: { 'ev-personal': { Patient: 2, Observation: 25 } } }));
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Patient', 'Observation'], { env });
    expect(r.code).toBe(0);
    const golden = join(import.meta.dirname, 'fixtures/fetch/healthclaw-keyset.ndjson');
    if (process.env.UPDATE_GOLDEN) writeFileSync(golden, r.stdout);
    expect(r.stdout.toString()).toBe(readFileSync(golden, 'utf8'));
    // Pages of 10, instants shared by 4 (Observation i at second i/4): each keyset page starts again at the boundary instant.
    expect(server.requests.map((q) => decodeURIComponent(q.url).replace(/^.*_lastUpdated=/, '') || '')).toEqual([
      '/fhir/Patient?_count=200&_sort=-_lastUpdated',
      '/fhir/Observation?_count=200&_sort=-_lastUpdated',
      'le2026-01-01T00:00:03.000Z', // page 1 ended at Observation 15, the last of instant 3
      'le2026-01-01T00:00:01.000Z', // page 2 ended at Observation 6, of instant 1 (4..7)
    ]);
  });

  it('fails naming the type and the counts when more resources share one instant than a page holds', async () => {
    const server = await serve(healthclaw({ perInstant: 300 }));
    const dir = tempDir();
    const out = join(dir, 'out.ndjson');
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Observation', '-o', out, '--report', join(dir, 'report.json')], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hx: Observation: fetched 200 of the server\'s total of 3000: no next link, and keyset paging on _lastUpdated made no progress: at least 200 resources share lastUpdated 2026-01-01T00:00:09.000Z');
    expect(() => readFileSync(out)).toThrow(); // no output file that looks complete
    expect(report(dir).failed).toContain('Observation: fetched 200');
  });

  it('with --allow-partial, warns, keeps what it got and lists the shortfall in the account', async () => {
    const server = await serve(healthclaw({ perInstant: 300 }));
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Observation', 'Condition', '--allow-partial', '--report', join(dir, 'report.json')], { env });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('hx: warning: Observation: fetched 200 of the server\'s total of 3000');
    expect(parseNdjson(r.stdout)).toHaveLength(212);
    expect(report(dir).stages.fetch.searches.Observation.shortfall).toMatch(/no progress/);
  });

  it('fails on a search URL short of its total (no next link, no keyset to fall back on)', async () => {
    const server = await serve(healthclaw());
    const r = await hx(['fetch', `${server.base}/Observation?_count=200`, '--tenant-id', 'ev-personal'], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Observation\?_count=200: fetched 200 of the server's total of 3000: the server gave no next link/);
  });

  it('reports search outcome entries as warnings, never as data', async () => {
    const server = await serve(healthclaw());
    const r = await hx(['fetch', `${server.base}/Condition?_offset=0&_count=50`, '--tenant-id', 'ev-personal'], { env });
    expect(r.code).toBe(0);
    const out = parseNdjson(r.stdout);
    expect(out).toHaveLength(12);
    expect(out.every((x) => x.resourceType === 'Condition')).toBe(true);
    expect(r.stderr).toMatch(/warning: .*page 1:.*search outcome: warning: Unknown search parameter '_offset' was ignored/);
  });

  it('treats 401 as a failure, never as zero resources', async () => {
    const server = await serve(healthclaw());
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Observation'], { env: { STEP_UP_SECRET: '' } });
    expect(r.code).toBe(1);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr).toMatch(/Observation page 1: HTTP 401 — the token is missing, invalid or expired.*STEP_UP_SECRET/);
  });

  it('fails at once on 400 with the server\'s message', async () => {
    const server = await serve(healthclaw());
    const r = await hx(['fetch', `${server.base}/Observation?code:text=x`, '--tenant-id', 'ev-personal'], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/HTTP 400 — the server refused the request as invalid.*; the server says: Modifiers are not supported: code:text/);
    expect(server.requests).toHaveLength(1);
  });

  it('checks the tenant id before any request', async () => {
    const server = await serve(healthclaw());
    const r = await hx(['fetch', '--base-url', server.base, '--tenant-id', 'ev personal', '--types', 'Observation'], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('tenant id must be 1 to 64 letters');
    expect(server.requests).toHaveLength(0);
  });
});

describe('hx fetch --everything', () => {
  const tenants = { default: { Person: 1, Patient: 1, Observation: 400, Condition: 30, Immunization: 9 } };

  it('streams one unpaged Bundle when no _count is given', async () => {
    const server = await serve({ tenants, padBytes: 2000 });
    const r = await hx(['fetch', '--base-url', server.base, '--everything', `Person/${PATIENT_ID}`, '-v']);
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout)).toHaveLength(441);
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]!.url).toBe(`/fhir/Person/${PATIENT_ID}/$everything`);
    expect(r.stderr).toContain(`Person/${PATIENT_ID} $everything  441 of 441  (1 pages)`);
  });

  it('passes _type, _since and _count through and follows the next links', async () => {
    const server = await serve({ tenants });
    const r = await hx(['fetch', '--base-url', server.base, '--everything', `Patient/${PATIENT_ID}`, '--type', 'Observation,Immunization', '--since', '2026-01-01T00:05:00Z', '--count', '30']);
    expect(r.code).toBe(0);
    const out = parseNdjson(r.stdout);
    // Resource i was updated at 00:00:00 + i seconds: since 00:05:00 leaves Observations 300..399 and no Immunization.
    expect(out).toHaveLength(100);
    expect(out[0]!.id).toBe('observation-default-300');
    expect(server.requests[0]!.url).toBe(`/fhir/Patient/${PATIENT_ID}/$everything?_type=Observation%2CImmunization&_since=2026-01-01T00%3A05%3A00Z&_count=30`);
    expect(server.requests).toHaveLength(4);
  });

  it('explains 403 as missing or withdrawn consent', async () => {
    const server = await serve({ tenants, noConsent: true });
    const r = await hx(['fetch', '--base-url', server.base, '--everything', `Person/${PATIENT_ID}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/HTTP 403 — not allowed: for HealthEx, the patient has not consented .* or has withdrawn consent/);
  });

  it('explains 404', async () => {
    const server = await serve({ tenants });
    const r404 = await hx(['fetch', '--base-url', server.base, '--everything', 'Person/nobody']);
    expect(r404.code).toBe(1);
    expect(r404.stderr).toMatch(/HTTP 404 — not found: check --base-url/);
    expect(server.requests).toHaveLength(1);
  });

  it('refuses a malformed reference or date before any request', async () => {
    const server = await serve({ tenants });
    expect((await hx(['fetch', '--base-url', server.base, '--everything', 'Observation/1'])).code).toBe(2);
    expect((await hx(['fetch', '--base-url', server.base, '--everything', `Person/${PATIENT_ID}`, '--since', 'last tuesday'])).code).toBe(2);
    expect(server.requests).toHaveLength(0);
  });
});

describe('hx fetch: faults', () => {
  const tenants = { default: { Patient: 30, Observation: 500 } };
  const args = (server: FhirServer, dir: string, ...more: string[]) => [
    'fetch', '--base-url', server.base, '--types', 'Patient', 'Observation', '--count', '100', '--report', join(dir, 'report.json'), ...FAST, ...more,
  ];

  /** Every resource exactly once, nothing dropped, the account balanced. */
  function expectExact(r: { code: number | null; stdout: Buffer; stderr: string }, dir: string): Record<string, any> {
    expect(r.code, r.stderr).toBe(0);
    const got = ids(r.stdout);
    expect(got).toHaveLength(530);
    expect(new Set(got).size).toBe(530);
    const rep = report(dir);
    expect(rep).toMatchObject({ read: 530, written: 530, dropped: 0, rejected: 0, balanced: true });
    return rep;
  }

  it('waits as 429 Retry-After says (seconds or an HTTP date) and retries 500 and 503', async () => {
    const server = await serve({
      tenants,
      faults: [
        { match: /Observation/, skip: 1, fault: { kind: 'status', status: 429, retryAfter: '0' } },
        { match: /Observation/, skip: 2, fault: { kind: 'status', status: 429, retryAfter: () => new Date(Date.now() + 2000).toUTCString() } },
        { match: /Patient/, fault: { kind: 'status', status: 503 } },
        { match: /Observation/, skip: 4, times: 2, fault: { kind: 'status', status: 500 } },
      ],
    });
    const dir = tempDir();
    const r = await hx(args(server, dir));
    const rep = expectExact(r, dir);
    expect(rep.stages.fetch.retries).toBe(5);
    expect(rep.stages.fetch.requests).toBe(1 + 5 + 5);
    expect(r.stderr).toMatch(/hx: Observation page 2: HTTP 429; the server says: injected 429; retry 1 of 6 in 0 ms/);
    // The HTTP date, 2 s ahead (to the second), was honoured rather than the few ms of backoff.
    const dated = /Observation page 3: HTTP 429; .* in ([\d.]+) (ms|s)\n/.exec(r.stderr)!;
    expect(Number(dated[1]) * (dated[2] === 's' ? 1000 : 1)).toBeGreaterThan(900);
    expect(r.stderr).toMatch(/hx: Patient page 1: HTTP 503; the server says: injected 503; retry 1 of 6/);
  });

  it('treats an implausible Retry-After (an absolute epoch) as absent and backs off with the cap', async () => {
    const server = await serve({ tenants, faults: [{ match: /Observation/, times: 3, fault: { kind: 'status', status: 429, retryAfter: '1772359200' } }] });
    const dir = tempDir();
    const started = Date.now();
    expectExact(await hx(args(server, dir)), dir);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it.each([
    ['a connection reset before the response', { kind: 'reset-early' } as const],
    ['a connection reset in the middle of a body', { kind: 'reset', afterBytes: 20_000 } as const],
    ['a body cut short but ended cleanly', { kind: 'truncate', afterBytes: 20_000 } as const],
    ['a stalled body (idle timeout)', { kind: 'stall', afterBytes: 20_000 } as const],
  ])('fetches the page again after %s, emitting nothing twice', async (_name, fault) => {
    const server = await serve({ tenants, faults: [{ match: /Observation/, skip: 2, fault }] });
    const dir = tempDir();
    // A short idle timeout only where the body stalls: a loaded machine can pause a healthy one for half a second.
    const rep = expectExact(await hx(args(server, dir, '--idle-timeout', fault.kind === 'stall' ? '1' : '30')), dir);
    const obs = rep.stages.fetch.searches.Observation;
    expect(obs).toMatchObject({ fetched: 500, duplicates: 0 });
    if (fault.kind !== 'reset-early') expect(obs.resentSkipped).toBeGreaterThan(10); // the entries before the cut, skipped by position
    expect(rep.stages.fetch.retries).toBe(1);
  });

  it('resumes a streamed $everything after a reset deep in its body', async () => {
    const server = await serve({
      tenants: { default: { Patient: 1, Observation: 3000 } },
      padBytes: 500,
      faults: [{ match: /everything/, fault: { kind: 'reset', afterBytes: 1_000_000 } }],
    });
    const dir = tempDir();
    const r = await hx(['fetch', '--base-url', server.base, '--everything', `Person/${PATIENT_ID}`, '--report', join(dir, 'report.json'), ...FAST]);
    expect(r.code, r.stderr).toBe(0);
    expect(new Set(ids(r.stdout)).size).toBe(3001);
    expect(ids(r.stdout)).toHaveLength(3001);
    const search = report(dir).stages.fetch.searches[`Person/${PATIENT_ID} $everything`];
    // A reset discards what the socket had not yet delivered: what was handled is skipped, the rest re-read.
    expect(search.resentSkipped).toBeGreaterThan(0);
    expect(search.duplicates).toBe(0);
  });

  it('asks for gzip and inflates it: the same bytes as plain pages, and a compressed body cut short is fetched again', async () => {
    const dir = tempDir();
    const plain = await serve({ tenants });
    const expected = await hx(args(plain, dir));
    expect(expected.code, expected.stderr).toBe(0);
    const gzipped = await serve({
      tenants,
      gzip: true,
      faults: [
        { match: /Patient/, fault: { kind: 'truncate', afterBytes: 300 } }, // a gzip stream cut short, ended cleanly
        { match: /Observation/, skip: 2, fault: { kind: 'reset', afterBytes: 500 } },
      ],
    });
    const r = await hx(args(gzipped, dir));
    expect(r.stdout.equals(expected.stdout)).toBe(true);
    expect(expectExact(r, dir).stages.fetch.retries).toBe(2);
    expect(gzipped.requests.every((q) => q.headers['accept-encoding'] === 'gzip')).toBe(true);
  });

  it('gives up after the last retry with exit 1 and no output file', async () => {
    const server = await serve({ tenants, faults: [{ match: /Observation/, times: 100, fault: { kind: 'status', status: 503 } }] });
    const dir = tempDir();
    const out = join(dir, 'out.ndjson');
    const r = await hx(args(server, dir, '--retries', '2', '-o', out));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hx: Observation page 1: HTTP 503; the server says: injected 503 (gave up after 3 attempts)');
    expect(() => readFileSync(out)).toThrow();
  });

  it('stops on a 401 in the middle of a run (token expired), saying what to do', async () => {
    const server = await serve({ tenants, bearer: 'jwt-abcdef-123456', unauthorizedAfter: 3 });
    const dir = tempDir();
    const r = await hx(args(server, dir), { env: { HX_BEARER_TOKEN: 'jwt-abcdef-123456' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Observation page 3: HTTP 401 — the token is missing, invalid or expired: pass a fresh one with --bearer or HX_BEARER_TOKEN/);
    expect(report(dir).failed).toMatch(/HTTP 401/);
  });
});

describe('hx fetch: credentials', () => {
  it('refuses a next link to another host, or follows it without credentials with --allow-cross-host', async () => {
    // The other host serves the same data to a client that sends no tenant ("default").
    const tenants = { t1: { Observation: 250 }, default: { Observation: 250 } };
    const other = await serve({ tenants });
    const server = await serve({ tenants, bearer: 'jwt-abcdef-123456', nextOrigin: other.origin });
    const env = { HX_BEARER_TOKEN: 'jwt-abcdef-123456' };
    const base = ['fetch', '--base-url', server.base, '--types', 'Observation', '--count', '100', '--tenant-id', 't1'];
    const refused = await hx(base, { env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`hx: Observation page 1: the next link points to another host (${other.origin}); credentials are sent only to ${server.origin}`);
    expect(other.requests).toHaveLength(0);
    const followed = await hx([...base, '--allow-cross-host'], { env });
    expect(followed.code).toBe(0);
    expect(new Set(ids(followed.stdout)).size).toBe(250);
    expect(other.requests.length).toBeGreaterThan(0);
    for (const q of other.requests) {
      expect(q.headers.authorization).toBeUndefined();
      expect(q.headers['x-tenant-id']).toBeUndefined();
    }
    expect(server.requests.every((q) => q.headers.authorization === 'Bearer jwt-abcdef-123456')).toBe(true);
  });

  it('never prints a token or a secret: not in output, messages, warnings, retries or the report', async () => {
    const secret = 'step-up-secret-7f3a9c';
    const bearer = 'eyJhbGciOiJIUzI1NiJ9.jwt-payload-5e8d.signature-c0ffee';
    const server = await serve({
      paging: 'healthclaw',
      tenantHeader: true,
      stepUpSecret: secret,
      bearer,
      tenants: { 'ev-personal': { Patient: 3, Observation: 450 } },
      faults: [
        { match: /Observation/, skip: 1, fault: { kind: 'status', status: 429, retryAfter: '0' } },
        { match: /Observation/, skip: 2, fault: { kind: 'reset', afterBytes: 3000 } },
      ],
      unauthorizedAfter: 6,
    });
    const dir = tempDir();
    const r = await hx(
      ['fetch', '--base-url', server.base, '--tenant-id', 'ev-personal', '--types', 'Patient', 'Observation', 'Condition', '--step-up-secret', secret, '-v', '--report', join(dir, 'report.json'), ...FAST],
      { env: { HX_BEARER_TOKEN: bearer } },
    );
    expect(r.code).toBe(1); // the 401 after six requests
    const tokens = server.requests.map((q) => q.headers['x-step-up-token'] as string);
    expect(tokens.every(Boolean)).toBe(true);
    const printed = [r.stdout.toString(), r.stderr, readFileSync(join(dir, 'report.json'), 'utf8')].join('\n');
    expect(r.stderr).toMatch(/retry 1 of 6/);
    for (const s of [secret, bearer, ...new Set(tokens), ...new Set(tokens.map((t) => t.split('.')[1]))]) expect(printed).not.toContain(s);
  });
});

describe('hx fetch: resources written as the server sent them', () => {
  it('writes the same bytes however the page is cut on the way (every entry cut inside its keys)', async () => {
    const { createServer } = await import('node:http');
    const entries = Array.from({ length: 12 }, (_, i) => `{"fullUrl":"urn:uuid:${i}","resource":{"resourceType":"Observation","id":"o${i}","valueQuantity":{"value":1.50}},"search":{"mode":"match"}}`);
    const body = Buffer.from(`{"resourceType":"Bundle","type":"searchset","total":12,"entry":[${entries.join(',')}]}`);
    // Pieces of 7 bytes, each sent after the one before has gone.
    const server = createServer(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json' });
      for (let at = 0; at < body.length; at += 7) {
        res.write(body.subarray(at, at + 7));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const r = await hx(['fetch', `http://127.0.0.1:${port}/fhir/Observation`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.toString()).toBe(entries.map((_, i) => `{"resourceType":"Observation","id":"o${i}","valueQuantity":{"value":1.50}}\n`).join(''));
    } finally {
      server.close();
    }
  });

  it('keeps the bytes of each resource (a decimal\'s precision, escapes), and re-serialises one that spans lines or is not UTF-8', async () => {
    const { createServer } = await import('node:http');
    const kept = '{"resourceType":"Observation","id":"a","valueQuantity":{"value":1.50,"unit":"caf\\u00e9"}}';
    const body = Buffer.concat([
      Buffer.from(`{"resourceType":"Bundle","type":"searchset","total":3,"entry":[{"fullUrl":"x","resource":${kept}},` +
        '{"resource":{"resourceType":"Observation",\n  "id":"b","valueQuantity":{"value":2.50}}},' +
        '{"resource":{"resourceType":"Observation","id":"c","note":[{"text":"'),
      Buffer.from([0xff]),
      Buffer.from('"}]}}]}'),
    ]);
    const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(body));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      const r = await hx(['fetch', `http://127.0.0.1:${port}/fhir/Observation`]);
      expect(r.stderr).toBe('');
      expect(r.stdout.toString('utf8')).toBe(
        `${kept}\n` +
          '{"resourceType":"Observation","id":"b","valueQuantity":{"value":2.5}}\n' +
          '{"resourceType":"Observation","id":"c","note":[{"text":"\uFFFD"}]}\n',
      );
    } finally {
      server.close();
    }
  });
});
