import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { CollisionIndex } from '../src/fasten/collisions.js';
import { FastenExportScanner, looksLikeFastenExport } from '../src/fasten/exportScanner.js';
import { fastenCredentials } from '../src/fasten/read.js';
import { fastenKey } from '../transforms/fastenConvert.js';
import { hx, parseNdjson, tempDir } from './support/cli.js';
import { startIngestServer, type IngestServer } from './support/ingestServer.js';

const FIXTURES = 'test/fixtures/fasten';
type Json = Record<string, any>;

/** What the scanner should find, computed the slow way. */
function expected(doc: Json): { mapType: string; text: string }[] {
  const out: { mapType: string; text: string }[] = [];
  for (const provider of doc.providers) for (const [type, list] of Object.entries(provider.fhir as Json)) for (const r of list as Json[]) out.push({ mapType: type, text: JSON.stringify(r) });
  return out;
}

function scanAll(bytes: Buffer, chunk: number): { mapType: string; text: string; line: number }[] {
  const found: { mapType: string; text: string; line: number }[] = [];
  const scanner = new FastenExportScanner(
    {
      onResource: (text, line, mapType) => found.push({ mapType, text: JSON.stringify(JSON.parse(text)), line }),
      onBadResource: (reason) => {
        throw new Error(reason);
      },
    },
    1 << 20,
  );
  let end = -1;
  for (let i = 0; i < bytes.length && end < 0; i += chunk) {
    const r = scanner.push(bytes.subarray(i, Math.min(bytes.length, i + chunk)));
    if (r >= 0) end = i + r;
  }
  expect(scanner.done).toBe(true);
  return found;
}

describe('FastenExportScanner', () => {
  const text = readFileSync(join(FIXTURES, 'export.json'));
  const doc = JSON.parse(text.toString());

  it('finds every resource with its map key, whatever the chunking', () => {
    const want = expected(doc);
    for (const chunk of [1, 2, 3, 7, 64, 1 << 20]) {
      expect(scanAll(text, chunk).map(({ mapType, text }) => ({ mapType, text }))).toEqual(want);
    }
  });

  it('reports the line each resource starts on', () => {
    const lines = scanAll(text, 5).map((r) => r.line);
    expect(lines[0]).toBe(7);
    expect(lines).toEqual([...lines].sort((a, b) => a - b));
  });

  it('ignores other members, escaped keys and nested look-alikes', () => {
    const tricky = {
      providers: [
        { fhir: { Observation: [{ resourceType: 'Observation', id: 'a', providers: [{ fhir: { X: [1] } }] }] }, name: 'n "q" \\' },
        { 'na\u00efve': { fhir: [] }, fhir: { 'Pat\\ient': [], Patient: [{ resourceType: 'Patient', id: 'b' }] } },
      ],
      other: { providers: [{ fhir: { Patient: [{ resourceType: 'Patient', id: 'ghost' }] } }] },
    };
    const bytes = Buffer.from(JSON.stringify(tricky, null, 1));
    for (const chunk of [1, 4, 1000]) expect(scanAll(bytes, chunk).map((r) => r.mapType)).toEqual(['Observation', 'Patient']);
  });

  it('says when an input is an export file', () => {
    expect(looksLikeFastenExport(Buffer.from('  {\n "providers" : ['))).toBe(true);
    expect(looksLikeFastenExport(Buffer.from('{"resourceType":"Bundle"'))).toBe(false);
    expect(looksLikeFastenExport(Buffer.from('{"resourceType":"Patient","id":"providers"}\n'))).toBe(false);
  });
});

describe('CollisionIndex', () => {
  /** Runs both passes over (key, lastUpdated) pairs; returns the positions kept. */
  function kept(records: [string, string][], seed?: number): number[] {
    const index = new CollisionIndex(seed);
    records.forEach(([k, lu], i) => index.observe(k, lu, i + 1));
    return records.flatMap(([k, lu], i) => (index.wins(k, lu, i + 1) ? [i + 1] : []));
  }

  it('keeps the greatest lastUpdated, the later one on a tie, "" for missing', () => {
    expect(kept([['A/1', '2024-01-02'], ['A/1', '2024-01-01']])).toEqual([1]);
    expect(kept([['A/1', '2024-01-01'], ['A/1', '2024-01-02']])).toEqual([2]);
    expect(kept([['A/1', 'x'], ['A/1', 'x'], ['A/1', 'x']])).toEqual([3]);
    expect(kept([['A/1', ''], ['A/1', '2020'], ['A/1', '']])).toEqual([2]);
    expect(kept([['A/1', '2025'], ['B/1', '1'], ['A/1', '2024'], ['A/1', '2024']])).toEqual([1, 2]);
  });

  it('agrees with a naive resolver on random input', () => {
    let seed = 11;
    const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    for (let round = 0; round < 50; round++) {
      const records: [string, string][] = Array.from({ length: 40 }, () => [`T/${rand(12)}`, rand(4) === 0 ? '' : `2024-0${rand(3) + 1}`]);
      const best = new Map<string, number>();
      records.forEach(([k, lu], i) => {
        const b = best.get(k);
        if (b === undefined || lu >= records[b]![1]) best.set(k, i);
      });
      const want = [...best.values()].sort((a, b) => a - b).map((i) => i + 1);
      expect(kept(records, round)).toEqual(want);
    }
  });
});

describe('fastenKey', () => {
  it('keys by resourceType, drops no id and unselected types', () => {
    const types = new Set(['Patient']);
    expect(fastenKey({ resourceType: 'Patient', id: 'x' }, { types })).toBe('Patient/x');
    expect(fastenKey({ resourceType: 'Patient', id: '' }, { types })).toBe('no id');
    expect(fastenKey({ resourceType: 'Claim', id: 'x' }, { types })).toBe('type not selected');
    expect(fastenKey({ resourceType: 'Claim', id: 'x' }, {})).toBe('Claim/x');
  });
});

describe('fastenCredentials', () => {
  const env = { FASTEN_PUBLIC_KEY: 'public_test_abc', FASTEN_PRIVATE_KEY: 'private_test_xyz' };
  it('sends the keys only over https to fastenhealth.com hosts', () => {
    const basic = 'Basic ' + Buffer.from('public_test_abc:private_test_xyz').toString('base64');
    expect(fastenCredentials(new URL('https://api.connect.fastenhealth.com/v1/x'), env)).toBe(basic);
    expect(fastenCredentials(new URL('https://fastenhealth.com/x'), env)).toBe(basic);
    expect(fastenCredentials(new URL('http://api.connect.fastenhealth.com/x'), env)).toBeUndefined();
    expect(fastenCredentials(new URL('https://fastenhealth.com.evil.example/x'), env)).toBeUndefined();
    expect(fastenCredentials(new URL('https://evilfastenhealth.com/x'), env)).toBeUndefined();
    expect(fastenCredentials(new URL('https://api.connect.fastenhealth.com/x'), {})).toBeUndefined();
  });
});

describe('hx fasten', () => {
  it('converts an export file: newest wins, tie to the later, misfiled kept by resourceType, id-less dropped', async () => {
    const r = await hx(['fasten', join(FIXTURES, 'export.json'), '-v']);
    expect(r.code).toBe(0);
    const out = parseNdjson(r.stdout);
    expect(out.map((x) => `${x.resourceType}/${x.id}`)).toEqual(['Observation/o2', 'Condition/c9', 'Observation/o1', 'Patient/p1']);
    expect(out.find((x) => x.id === 'o1')!.status).toBe('final');
    expect(out.find((x) => x.id === 'p1')!.note).toBe('tie: later wins');
    expect(r.stderr).toContain('export.json:12: filed under Observation but resourceType is Condition');
    expect(r.stderr).toContain('read 9 = written 4 + rejected 0 + dropped 5');
    expect(r.stderr).toContain('TOTAL: 4');
  });

  it('reads Fasten Connect NDJSON from stdin, gzip and UTF-16 files alike', async () => {
    const ndjson = readFileSync(join(FIXTURES, 'connect.ndjson'));
    const dir = tempDir();
    writeFileSync(join(dir, 'c.ndjson.gz'), gzipSync(ndjson));
    writeFileSync(join(dir, 'c16.ndjson'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(ndjson.toString('utf8'), 'utf16le')]));
    const fromStdin = await hx(['fasten', '--all-types'], { stdin: ndjson });
    const fromGzip = await hx(['fasten', '--all-types', join(dir, 'c.ndjson.gz')]);
    const fromUtf16 = await hx(['fasten', '--all-types', join(dir, 'c16.ndjson')]);
    expect(fromStdin.code).toBe(0);
    expect(fromGzip.stdout.equals(fromStdin.stdout)).toBe(true);
    expect(fromUtf16.stdout.equals(fromStdin.stdout)).toBe(true);
    const out = parseNdjson(fromStdin.stdout);
    expect(out.map((x) => `${x.resourceType}/${x.id}/${x.gender ?? x.status}`)).toEqual([
      'Patient/p1/male',
      'Encounter/e1/finished',
      'MedicationStatement/ms1/active',
    ]);
    const defaultTypes = parseNdjson((await hx(['fasten'], { stdin: ndjson })).stdout);
    expect(defaultTypes.map((x) => x.resourceType)).toEqual(['Patient', 'Encounter']);
  });

  it('--bundle writes what `hx fasten | hx bundle` writes', async () => {
    const file = join(FIXTURES, 'export.json');
    const bundled = await hx(['fasten', file, '--bundle']);
    const piped = await hx(['bundle'], { stdin: (await hx(['fasten', file])).stdout });
    expect(bundled.code).toBe(0);
    expect(bundled.stdout.toString()).toBe(piped.stdout.toString());
    const bundle = JSON.parse(bundled.stdout.toString());
    expect(bundle.type).toBe('transaction');
    expect(bundle.entry.map((e: Json) => e.request.url)).toEqual(['Observation/o2', 'Condition/c9', 'Observation/o1', 'Patient/p1']);
  });

  it('agrees with a naive in-memory resolver on a generated multi-chunk export, gzipped', async () => {
    let seed = 5;
    const rand = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
    const types = ['Patient', 'Observation', 'Condition'];
    const providers = [0, 1, 2].map((p) => {
      const fhir: Record<string, Json[]> = {};
      for (const type of types) {
        fhir[type] = Array.from({ length: 700 }, (_, i) => {
          const actual = rand(50) === 0 ? types[(types.indexOf(type) + 1) % 3]! : type;
          const r: Json = { resourceType: actual, id: `${actual[0]}${rand(900)}`, note: [{ text: `p${p} i${i} \u00e9 "q" ]}` }] };
          if (rand(5)) r.meta = { lastUpdated: `2024-0${1 + rand(9)}-01T00:00:00Z` };
          if (rand(40) === 0) delete r.id;
          return r;
        });
      }
      return { name: `Provider ${p}`, fhir };
    });
    const doc = { providers };
    // The rule, the slow way: every resource in order, greater lastUpdated wins, a tie goes to the later.
    const best = new Map<string, { r: Json; order: number }>();
    let order = 0;
    for (const provider of providers) for (const list of Object.values(provider.fhir)) for (const r of list) {
      order++;
      if (!r.id) continue;
      const key = `${r.resourceType}/${r.id}`;
      const known = best.get(key);
      if (!known || (r.meta?.lastUpdated ?? '') >= (known.r.meta?.lastUpdated ?? '')) best.set(key, { r, order });
    }
    const want = [...best.values()].sort((a, b) => a.order - b.order).map((x) => x.r);
    const dir = tempDir();
    const file = join(dir, 'export.json.gz');
    writeFileSync(file, gzipSync(JSON.stringify(doc, null, 2)));
    const report = join(dir, 'r.json');
    const r = await hx(['fasten', file, '--report', report]);
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout)).toEqual(want);
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account.balanced).toBe(true);
    expect(account.stages.fasten.kept).toBe(want.length);
    expect(account.stages.fasten.misfiled).toBeGreaterThan(10);
    expect(r.stderr).toContain('more misfiled resources: only their count is reported');
  });

  it('merges several files with one collision index across them', async () => {
    const dir = tempDir();
    const newer = join(dir, 'newer.ndjson');
    writeFileSync(newer, JSON.stringify({ resourceType: 'Patient', id: 'p1', meta: { lastUpdated: '2030-01-01' }, gender: 'other' }) + '\n');
    const r = await hx(['fasten', join(FIXTURES, 'export.json'), newer, '--types', 'Patient']);
    expect(parseNdjson(r.stdout)).toEqual([{ resourceType: 'Patient', id: 'p1', meta: { lastUpdated: '2030-01-01' }, gender: 'other' }]);
  });

  it('rejects a bad resource with file:line and no content, and a truncated export', async () => {
    const dir = tempDir();
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"providers":[{"fhir":{"Patient":[\n{"resourceType":"Patient","id":"a"},\n{"id":"SECRET-NAME"},\n42]}}]}');
    const r = await hx(['fasten', bad, '--rejects', join(dir, 'rejects.ndjson'), '-v']);
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout).map((x) => x.id)).toEqual(['a']);
    const rejects = parseNdjson(readFileSync(join(dir, 'rejects.ndjson')));
    expect(rejects.map((x) => [x.line, x.reason])).toEqual([
      [3, 'fhir.Patient: missing resourceType'],
      [4, 'providers[0].fhir.Patient: member is not an object'],
    ]);
    const failed = await hx(['fasten', bad]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('bad.json:3: fhir.Patient: missing resourceType');
    expect(failed.stderr).not.toContain('SECRET');
    writeFileSync(bad, '{"providers":[{"fhir":{"Patient":[{"resourceType":"Patient","id":"a"}');
    const cut = await hx(['fasten', bad]);
    expect(cut.code).toBe(1);
    expect(cut.stderr).toContain('truncated');
  });
});

const servers: IngestServer[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.close();
});

describe('hx fasten --url', () => {
  it('downloads a Fasten Connect file (no credentials to a non-Fasten host) and converts it', async () => {
    const ndjson = readFileSync('test/fixtures/fasten/connect.ndjson');
    const s = await startIngestServer({ downloads: { 'export.ndjson': ndjson } });
    servers.push(s);
    const r = await hx(['fasten', '--url', `${s.origin}/download/export.ndjson?signature=abc123secret`, '--all-types', '-v'], {
      env: { FASTEN_PUBLIC_KEY: 'public_test_k', FASTEN_PRIVATE_KEY: 'private_test_k' },
    });
    expect(r.code).toBe(0);
    expect(r.stdout.toString().trim().split('\n')).toHaveLength(3);
    expect(s.requests[0]!.headers.authorization).toBeUndefined();
    expect(r.stderr).toContain('hx: not sending the Fasten keys to http://127.0.0.1');
    expect(r.stderr).not.toContain('abc123secret');
    const missing = await hx(['fasten', '--url', `${s.origin}/download/nope.ndjson`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('HTTP 404');
  });
});
