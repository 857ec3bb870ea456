import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SHARED, hx, parseNdjson, tempDir } from './support/cli.js';

const FIXTURES = 'test/fixtures/bundle';
const exportDir = join(SHARED, 'data/bulk-data-server/export-system');
const exportFiles = readdirSync(exportDir)
  .filter((f) => f.endsWith('.gz'))
  .sort()
  .map((f) => join(exportDir, f));

type Json = Record<string, any>;

/**
 * A corpus that exercises the serialiser: non-ASCII, escapes, control
 * characters, emoji, deep nesting, numbers, ids outside FHIR syntax,
 * resources without id, and duplicates on (type, id). Deterministic.
 */
function corpus(n: number): string {
  const types = ['Patient', 'Observation', 'Condition', 'Encounter', 'MedicationRequest', 'Procedure'];
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const texts = ['Zoë Ångström', 'line\none\ttab "quoted" \\ back', '\u0001\u001f control', '😀 emoji 🏥', '</script>', 'plain'];
  let out = '';
  for (let i = 0; i < n; i++) {
    const type = types[i % types.length]!;
    const r: Json = { resourceType: type };
    if (i % 11 !== 5) r.id = i % 13 === 0 ? `id with space ${i}` : `${type.slice(0, 3).toLowerCase()}-${i % 17 === 3 && i >= 24 ? i - 24 : i}`;
    r.meta = { lastUpdated: `2024-01-${String((i % 28) + 1).padStart(2, '0')}T00:00:00.000Z` };
    r.text = texts[Math.floor(rand() * texts.length)]!;
    r.value = { quantity: Math.round(rand() * 1e6) / 100, exp: 1.5e-7, neg: -3, nested: { a: [{ b: [{ c: [i, null, true] }] }] } };
    if (i % 3 === 0) r.extension = [];
    out += JSON.stringify(r) + '\n';
  }
  return out;
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The first resource of each (type, id) in input order, and every id-less one, as NDJSON. */
function firstOfEach(ndjson: string): string {
  const seen = new Set<string>();
  return ndjson
    .split('\n')
    .filter((line) => {
      if (line === '') return false;
      const r = JSON.parse(line);
      if (r.id === undefined) return true;
      const key = `${r.resourceType}/${r.id}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .map((line) => line + '\n')
    .join('');
}

/** Checks one Bundle against the resources it should hold, entry by entry. */
function expectEntries(bundle: Json, resources: Json[], type = 'transaction'): void {
  expect(bundle.resourceType).toBe('Bundle');
  expect(bundle.type).toBe(type);
  expect(bundle.entry.length).toBe(resources.length);
  bundle.entry.forEach((entry: Json, i: number) => {
    const r = resources[i]!;
    expect(entry.resource).toEqual(r);
    if (type === 'collection') expect(entry.request).toBeUndefined();
    else if (r.id === undefined) expect(entry.request).toEqual({ method: 'POST', url: r.resourceType });
    else expect(entry.request).toEqual({ method: 'PUT', url: `${r.resourceType}/${encodeURIComponent(r.id)}` });
    if (r.id === undefined) expect(entry.fullUrl).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
  });
}

describe('hx bundle: golden output', () => {
  const cases: [string, string[]][] = [
    ['transaction.json', []],
    ['pretty.json', ['--pretty']],
    ['chunks-2.ndjson', ['--max-entries', '2']],
    ['collection.json', ['--type', 'collection', '--full-url', 'https://example.org/fhir/']],
  ];
  for (const [golden, args] of cases) {
    it(`${golden} (${args.join(' ') || 'defaults'})`, async () => {
      const r = await hx(['bundle', join(FIXTURES, 'input.ndjson'), ...args]);
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toBe(readFileSync(join(FIXTURES, golden), 'utf8'));
      expect(r.stderr).toBe('hx: warning: 1 resource without id: written with ' + (args.includes('collection') ? 'a urn:uuid fullUrl\n' : 'POST and a urn:uuid fullUrl\n'));
    });
  }
});

describe('hx bundle: round trip through hx cat', () => {
  const dir = tempDir();
  const text = corpus(3000);
  const input = write(dir, 'corpus.ndjson', text);
  const expected = firstOfEach(text);
  const expectedResources = parseNdjson(expected);

  it('one Bundle: valid JSON holding the input entry by entry, and hx cat gives the resources back byte for byte', async () => {
    const report = join(dir, 'report.json');
    const r = await hx(['bundle', input, '--report', report]);
    expect(r.code).toBe(0);
    expectEntries(JSON.parse(r.stdout.toString()), expectedResources);
    const back = await hx(['cat'], { stdin: r.stdout });
    expect(back.stdout.toString()).toBe(expected);
    const account = JSON.parse(readFileSync(report, 'utf8'));
    const withoutId = expectedResources.filter((x) => x.id === undefined).length;
    expect(account).toMatchObject({ read: 3000, written: expectedResources.length, dropped: 3000 - expectedResources.length, balanced: true });
    expect(account.droppedByReason).toEqual({ 'duplicate (type, id)': 3000 - expectedResources.length });
    expect(account.stages.bundle).toMatchObject({ type: 'transaction', entries: expectedResources.length, chunks: 1, withoutId });
    expect(account.stages.bundle.duplicatesDropped).toBeGreaterThan(50);
  });

  it('--pretty, and a batch Bundle', async () => {
    for (const args of [['--pretty'], ['--type', 'batch']]) {
      const r = await hx(['bundle', input, ...args]);
      expectEntries(JSON.parse(r.stdout.toString()), expectedResources, args[0] === '--type' ? 'batch' : 'transaction');
      expect((await hx(['cat'], { stdin: r.stdout })).stdout.toString()).toBe(expected);
    }
  });

  it('chunks as NDJSON: every line a Bundle, the first of each (type, id) kept across chunks', async () => {
    const r = await hx(['bundle', input, '--max-entries', '100', '--max-bytes', '40KiB']);
    const bundles = parseNdjson(r.stdout);
    expect(bundles.length).toBeGreaterThan(15);
    expectEntries({ resourceType: 'Bundle', type: 'transaction', entry: bundles.flatMap((b) => b.entry) }, expectedResources);
    expect((await hx(['cat'], { stdin: r.stdout })).stdout.toString()).toBe(expected);
  });

  it('chunks as files in --dir, each a valid Bundle, and hx cat reads them back in order', async () => {
    const out = join(dir, 'chunks');
    const r = await hx(['bundle', input, '--max-entries', '500', '--dir', out, '--pretty']);
    expect(r.code).toBe(0);
    const names = readdirSync(out);
    expect(names).toEqual(['bundle-000001.json', 'bundle-000002.json', 'bundle-000003.json', 'bundle-000004.json', 'bundle-000005.json', 'bundle-000006.json'].slice(0, names.length));
    const entries = names.flatMap((name) => JSON.parse(readFileSync(join(out, name), 'utf8')).entry);
    expectEntries({ resourceType: 'Bundle', type: 'transaction', entry: entries }, expectedResources);
    const back = await hx(['cat', ...names.map((n) => join(out, n))]);
    expect(back.stdout.toString()).toBe(expected);
  });

  it('--no-dedupe keeps every resource', async () => {
    const r = await hx(['bundle', input, '--no-dedupe']);
    expect((await hx(['cat'], { stdin: r.stdout })).stdout.toString()).toBe(text);
  });

  it('a real Bulk Data export (gzip NDJSON, 38,483 resources)', async () => {
    const cat = await hx(['cat', ...exportFiles]);
    const bundled = await hx(['bundle', ...exportFiles]);
    expect(bundled.code).toBe(0);
    const back = await hx(['cat'], { stdin: bundled.stdout });
    expect(back.stdout.equals(cat.stdout)).toBe(true);
  });

  it('an input that is itself a Bundle (Synthea transaction Bundle with POST entries)', async () => {
    const synthea = join(SHARED, 'data/bulk-data-server/synthea-bundles');
    const file = join(synthea, readdirSync(synthea).filter((f) => f.endsWith('.json')).sort()[0]!);
    const cat = await hx(['cat', file]);
    const r = await hx(['bundle', file]);
    expect(r.code).toBe(0);
    const bundle = JSON.parse(r.stdout.toString());
    expectEntries(bundle, parseNdjson(cat.stdout));
    expect((await hx(['cat'], { stdin: r.stdout })).stdout.equals(cat.stdout)).toBe(true);
  });
});

describe('hx bundle: chunk budgets', () => {
  const dir = tempDir();
  const text = corpus(1200);
  const input = write(dir, 'corpus.ndjson', text);
  const entryBytes = (entry: Json) => Buffer.byteLength(JSON.stringify(entry));

  for (const maxBytes of [1500, 4096, 30_000]) {
    it(`--max-bytes ${maxBytes}: no Bundle over the budget, and none could have taken the next entry`, async () => {
      const r = await hx(['bundle', input, '--max-bytes', String(maxBytes)]);
      expect(r.code).toBe(0);
      const lines = r.stdout.toString().split('\n').slice(0, -1);
      const bundles = lines.map((line) => JSON.parse(line));
      lines.forEach((line, i) => {
        expect(Buffer.byteLength(line)).toBeLessThanOrEqual(maxBytes);
        if (i + 1 < lines.length) expect(Buffer.byteLength(line) + 1 + entryBytes(bundles[i + 1].entry[0])).toBeGreaterThan(maxBytes);
      });
      // The serialisation is compact, so each line is its parsed Bundle re-stringified.
      lines.forEach((line, i) => expect(line).toBe(JSON.stringify(bundles[i])));
      expect(bundles.flatMap((b) => b.entry).length).toBe(parseNdjson(firstOfEach(text)).length);
    });
  }

  it('--max-bytes counts UTF-8 bytes and pretty layout in --dir files', async () => {
    const out = join(dir, 'pretty');
    const r = await hx(['bundle', input, '--max-bytes', '8000', '--pretty', '--dir', out]);
    expect(r.code).toBe(0);
    const files = readdirSync(out).map((n) => readFileSync(join(out, n), 'utf8'));
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      expect(file.endsWith('\n')).toBe(true);
      expect(Buffer.byteLength(file) - 1).toBeLessThanOrEqual(8000);
      expect(file.slice(0, -1)).toBe(JSON.stringify(JSON.parse(file), null, 2));
    }
  });

  it('--max-entries: every Bundle full but the last', async () => {
    const r = await hx(['bundle', input, '--max-entries', '64']);
    const sizes = parseNdjson(r.stdout).map((b) => (b.entry as unknown[]).length);
    const total = parseNdjson(firstOfEach(text)).length;
    expect(sizes).toEqual([...Array(Math.floor(total / 64)).fill(64), ...(total % 64 ? [total % 64] : [])]);
  });

  it('both budgets: whichever binds first', async () => {
    const r = await hx(['bundle', input, '--max-entries', '10', '--max-bytes', '5000']);
    for (const line of r.stdout.toString().split('\n').slice(0, -1)) {
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(5000);
      expect(JSON.parse(line).entry.length).toBeLessThanOrEqual(10);
    }
  });

  it('an entry larger than the budget fails the run naming Type/id and line, never the content', async () => {
    const big = `{"resourceType":"Observation","id":"big","note":"${'secret '.repeat(100)}"}`;
    const stdin = `${corpus(3)}${big}\n${corpus(2)}`;
    const r = await hx(['bundle', '--max-bytes', '400'], { stdin });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^hx: -:4: entry larger than --max-bytes \(Observation\/big: \d+ bytes in a Bundle of its own, budget 400\)\n$/);
    expect(r.stderr).not.toContain('secret');
  });

  it('with --rejects, the oversized entry is set aside and the rest written', async () => {
    const big = `{"resourceType":"Observation","id":"big","note":"${'x'.repeat(1000)}"}`;
    const rejects = join(dir, 'rejects.ndjson');
    const report = join(dir, 'report.json');
    const r = await hx(['bundle', '--max-bytes', '600', '--rejects', rejects, '--report', report], { stdin: `${big}\n{"resourceType":"Patient","id":"a"}\n` });
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout).map((b) => b.entry)).toEqual([[{ resource: { resourceType: 'Patient', id: 'a' }, request: { method: 'PUT', url: 'Patient/a' } }]]);
    expect(parseNdjson(readFileSync(rejects))[0]).toMatchObject({ source: '-', line: 1, text: big });
    expect(JSON.parse(readFileSync(report, 'utf8'))).toMatchObject({ read: 2, written: 1, rejected: 1, balanced: true });
  });

  it('refuses budgets and options that make no sense', async () => {
    for (const args of [['--max-entries', '0'], ['--max-bytes', 'lots'], ['--max-entries', '2', '--pretty'], ['--full-url', 'not a url'], ['--dir', dir, '-o', 'x']]) {
      const r = await hx(['bundle', ...args], { stdin: '' });
      expect(r.code).toBe(2);
    }
  });
});

describe('hx bundle: interrupted output', () => {
  const good = corpus(400);
  const stdin = `${good}{"resourceType":"Patient","id":\n${good}`;

  it('-o FILE: a failure mid-stream leaves no file at all', async () => {
    const dir = tempDir();
    const r = await hx(['bundle', '-o', join(dir, 'export.json')], { stdin });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('hx: -:401: invalid JSON');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--dir: a failure after several chunks removes every chunk of the run', async () => {
    const dir = join(tempDir(), 'out');
    const r = await hx(['bundle', '--max-entries', '50', '--dir', dir], { stdin });
    expect(r.code).toBe(1);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--dir refuses a folder holding chunks of an earlier run', async () => {
    const dir = tempDir();
    expect((await hx(['bundle', '--max-entries', '50', '--dir', dir], { stdin: good })).code).toBe(0);
    const before = readdirSync(dir);
    expect(before.length).toBe(Math.ceil(parseNdjson(firstOfEach(good)).length / 50));
    const r = await hx(['bundle', '--dir', dir], { stdin: good });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('already holds bundle-*.json files');
    expect(readdirSync(dir)).toEqual(before);
  });

  it('stdout: a failure mid-stream never writes the tail, so the text is not a valid Bundle', async () => {
    const r = await hx(['bundle'], { stdin });
    expect(r.code).toBe(1);
    expect(() => JSON.parse(r.stdout.toString())).toThrow();
  });
});
