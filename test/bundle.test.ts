import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { RecordRejected } from '../src/errors.js';
import { Rejects } from '../src/rejects.js';
import type { Batch, Resource } from '../src/types.js';
import { KeySet } from '../src/util/keySet.js';
import {
  BundleAssembler,
  BundleFormat,
  EntryEncoder,
  bundleEntry,
  entryUuid,
  requestUrl,
  toTransactionBundle,
  type BundleOptions,
} from '../transforms/toTransactionBundle.js';

const patient = (id?: unknown, extra: Record<string, unknown> = {}): Resource =>
  ({ resourceType: 'Patient', ...(id === undefined ? {} : { id }), ...extra }) as Resource;

describe('requestUrl', () => {
  it('is Type/id, and undefined without an id (missing, null or empty, as Python sees it)', () => {
    expect(requestUrl(patient('p-1.a'))).toBe('Patient/p-1.a');
    expect(requestUrl(patient())).toBeUndefined();
    expect(requestUrl(patient(null))).toBeUndefined();
    expect(requestUrl(patient(''))).toBeUndefined();
  });

  it('percent-encodes an id outside FHIR syntax, so the URL stays a URL and the text needs no escapes', () => {
    expect(requestUrl(patient('a b/"c"'))).toBe('Patient/a%20b%2F%22c%22');
    expect(requestUrl(patient('x'.repeat(65)))).toBe(`Patient/${'x'.repeat(65)}`);
  });

  it('rejects an id that is not a string, naming the rule only', () => {
    expect(() => requestUrl(patient(42))).toThrow(RecordRejected);
    expect(() => requestUrl(patient(42))).toThrow('id is not a string');
    expect(() => requestUrl(patient('\ud800'))).toThrow('unpaired surrogate');
  });
});

describe('bundleEntry', () => {
  it('makes a PUT entry with the resource serialised as is', () => {
    const r = patient('1', { name: [{ family: 'Zoë' }] });
    expect(bundleEntry(r)).toBe(`{"resource":${JSON.stringify(r)},"request":{"method":"PUT","url":"Patient/1"}}`);
  });

  it('puts fullUrl first when a base is given (FHIR element order)', () => {
    const text = bundleEntry(patient('1'), { fullUrl: 'https://h/fhir/' });
    expect(text).toBe('{"fullUrl":"https://h/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}');
  });

  it('gives an id-less resource POST Type and a urn:uuid fullUrl (also with a base)', () => {
    const text = bundleEntry(patient(undefined, { gender: 'other' }), { fullUrl: 'https://h' }, 7);
    const entry = JSON.parse(text);
    expect(entry.request).toEqual({ method: 'POST', url: 'Patient' });
    expect(entry.fullUrl).toBe(`urn:uuid:${entryUuid('{"resourceType":"Patient","gender":"other"}', 7)}`);
  });

  it('leaves out request in a collection', () => {
    expect(bundleEntry(patient('1'), { type: 'collection' })).toBe('{"resource":{"resourceType":"Patient","id":"1"}}');
  });

  it('escapes a base URL that needs it, and the entry is still valid JSON', () => {
    const entry = JSON.parse(bundleEntry(patient('1'), { fullUrl: 'https://h/"odd"/é' }));
    expect(entry.fullUrl).toBe('https://h/"odd"/é/Patient/1');
  });
});

describe('entryUuid', () => {
  it('is a UUIDv5, the same for the same JSON and position, different otherwise', () => {
    const a = entryUuid('{"resourceType":"Patient"}', 1);
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(entryUuid('{"resourceType":"Patient"}', 1)).toBe(a);
    expect(entryUuid('{"resourceType":"Patient"}', 2)).not.toBe(a);
    expect(entryUuid('{"resourceType":"Patient","id":"x"}', 1)).not.toBe(a);
  });

  it('does not depend on --pretty, --type or --full-url', () => {
    const r = patient(undefined, { gender: 'x' });
    const uuids = [{}, { pretty: true }, { type: 'collection' as const }, { fullUrl: 'https://h' }].map(
      (o) => JSON.parse(bundleEntry(r, o, 3)).fullUrl,
    );
    expect(new Set(uuids).size).toBe(1);
  });
});

describe('BundleFormat --pretty', () => {
  it('is exactly JSON.stringify(bundle, null, 2), which is Python json.dumps(indent=2, ensure_ascii=False)', () => {
    const format = new BundleFormat({ pretty: true, fullUrl: 'https://h' });
    const resources = [patient('1', { name: [{ family: 'Zoë', given: [] }], n: { a: { b: [1, { c: 'line\n"x"' }] } } }), patient()];
    const text = format.head + resources.map((r, i) => format.entry(r, requestUrl(r), i + 1)).join(format.separator) + format.tail;
    expect(text).toBe(JSON.stringify(JSON.parse(text), null, 2));
    expect(format.empty).toBe(JSON.stringify(JSON.parse(format.empty), null, 2));
  });

  it('encoded entries (as a worker sends them) assemble to the text of the string entries, UUIDs and non-ASCII included', () => {
    const resources = [patient('1', { name: 'Zoë 😀' }), patient(undefined, { text: 'ü' }), patient('a b'), patient(null), patient('1')];
    const batch: Batch = { source: 's', lines: resources.map((_, i) => i + 1), resources };
    for (const options of [{}, { pretty: true }, { fullUrl: 'https://h/é' }, { fullUrl: 'https://h', type: 'collection' as const }]) {
      const format = new BundleFormat(options);
      // Two batches: positions (the UUIDs' input) continue across them; a seen (type, id) is a duplicate.
      const dup = new Set([4, 5, 7, 9]);
      const expected =
        format.head +
        [...resources, ...resources]
          .map((r, i) => (dup.has(i) ? undefined : format.entry(r, requestUrl(r), i + 1)))
          .filter((text) => text !== undefined)
          .join(format.separator) +
        format.tail +
        '\n';
      const pieces: Buffer[] = [];
      const account = new Account();
      const ctx = { account, rejects: new Rejects(account) };
      const assembler = new BundleAssembler(options, ctx, (piece) => pieces.push(Buffer.from(piece)));
      const encoder = new EntryEncoder(options);
      assembler.addEncoded(structuredClone(encoder.encode(batch, ctx)));
      assembler.addEncoded(structuredClone(encoder.encode(batch, ctx)));
      assembler.finish();
      expect(Buffer.concat(pieces).toString()).toBe(expected);
    }
  });
});

describe('KeySet', () => {
  it('adds, finds and refuses a key twice, through many doublings', () => {
    const set = new KeySet({ seed: 1 });
    const n = 50_000;
    let added = 0;
    for (let i = 0; i < n; i++) if (set.add(`Observation/${i}`)) added++;
    expect(added).toBe(n);
    expect(set.size).toBe(n);
    for (let i = 0; i < n; i += 997) {
      expect(set.has(`Observation/${i}`)).toBe(true);
      expect(set.add(`Observation/${i}`)).toBe(false);
    }
    expect(set.has('Observation/-1')).toBe(false);
    expect(set.has(`Patient/1`)).toBe(false);
    expect(set.size).toBe(n);
  });

  it('costs 8 bytes a slot, each segment at most 90% full and grown by an eighth: 8.9 to 10 bytes a key', () => {
    const set = new KeySet({ seed: 2 });
    for (let i = 0; i < 200_000; i++) set.add(`k${i}`);
    expect(set.bytes / set.size).toBeGreaterThanOrEqual(8 / 0.9);
    expect(set.bytes / set.size).toBeLessThanOrEqual((1.125 * 8) / 0.9);
  });

  it('grows one segment at a time: never by more than a small part of its size', () => {
    const set = new KeySet({ seed: 4 });
    let before = set.bytes;
    let largestStep = 0;
    for (let i = 0; i < 200_000; i++) {
      set.add(`Observation/${i}`);
      if (set.bytes !== before) largestStep = Math.max(largestStep, (set.bytes - before) / before);
      before = set.bytes;
    }
    expect(largestStep).toBeGreaterThan(0);
    expect(largestStep).toBeLessThan(0.01);
  });

  it('addPair(a, b) is the key a/b, without building it', () => {
    const set = new KeySet({ seed: 3 });
    expect(set.addPair('Patient', '1')).toBe(true);
    expect(set.has('Patient/1')).toBe(true);
    expect(set.add('Patient/1')).toBe(false);
    expect(set.hasPair('Patient', '1')).toBe(true);
    expect(set.hasPair('Patient', '2')).toBe(false);
    expect(set.hasPair('Patient/', '1')).toBe(false);
  });

  it('sizes its tables for the keys expected', () => {
    const set = new KeySet({ expected: 1_000_000 });
    const initial = set.bytes;
    expect(initial).toBeGreaterThanOrEqual(1_000_000 * (8 / 0.9));
    expect(initial).toBeLessThan(1_000_000 * (8 / 0.9) * 1.1);
    for (let i = 0; i < 1_000_000; i++) set.add(`Patient/${i}`);
    expect(set.bytes).toBe(initial);
  });

  it('hashes like a random function: no collision among 200k similar keys under several seeds', () => {
    for (const seed of [0, 1, 0xffffffff]) {
      const set = new KeySet({ seed });
      let added = 0;
      for (let i = 0; i < 200_000; i++) if (set.add(`Patient/${i.toString(36)}`)) added++;
      expect(added).toBe(200_000);
    }
  });
});

/** Runs the stage over `batches` and returns its text and the account. */
async function runStage(batches: Batch[], options: BundleOptions, rejectsPath?: string) {
  const account = new Account();
  const rejects = new Rejects(account, rejectsPath);
  account.read = batches.reduce((n, b) => n + b.resources.length, 0);
  let text = '';
  await pipeline(
    Readable.from(batches, { objectMode: true }),
    toTransactionBundle(options, { account, rejects }),
    new Writable({
      write(chunk: Buffer, _e, cb) {
        text += chunk.toString();
        cb();
      },
    }),
  );
  return { text, account };
}

function batchesOf(resources: Resource[], size: number): Batch[] {
  const out: Batch[] = [];
  for (let i = 0; i < resources.length; i += size) {
    const part = resources.slice(i, i + size);
    out.push({ source: 'in', lines: part.map((_, j) => i + j + 1), resources: part });
  }
  return out;
}

describe('toTransactionBundle stage', () => {
  const resources: Resource[] = [];
  for (let i = 0; i < 300; i++) {
    resources.push(patient(i % 7 === 0 ? undefined : `p${i % 250}`, { n: i, text: 'é'.repeat(i % 13) }));
  }

  it('writes the same bytes whatever the batching', async () => {
    for (const options of [{}, { maxEntries: 17 }, { maxBytes: 2000, pretty: false }, { pretty: true }]) {
      const one = await runStage(batchesOf(resources, 300), options);
      const many = await runStage(batchesOf(resources, 1), options);
      const some = await runStage(batchesOf(resources, 41), options);
      expect(many.text).toBe(one.text);
      expect(some.text).toBe(one.text);
    }
  });

  it('keeps the first of each (type, id) and accounts for every resource', async () => {
    const { text, account } = await runStage(batchesOf(resources, 50), {});
    const bundle = JSON.parse(text);
    const ids = bundle.entry.map((e: { resource: Resource }) => e.resource.id).filter(Boolean);
    expect(new Set(ids).size).toBe(ids.length);
    // p0..p249 with an id, minus the multiples of 7 (no id); p{i%250} for i ≥ 250 duplicates an earlier one unless that was id-less.
    const withoutId = resources.filter((r) => r.id === undefined).length;
    const expected = resources.filter((r, i) => r.id !== undefined && resources.findIndex((s) => s.id === r.id) === i);
    expect(bundle.entry.map((e: { resource: Resource }) => e.resource).filter((r: Resource) => r.id)).toEqual(expected);
    expect(account.stages.bundle).toMatchObject({ entries: expected.length + withoutId, withoutId, chunks: 1 });
    expect(account.written + account.dropped).toBe(300);
    expect(account.droppedByReason.get('duplicate (type, id)')).toBe(300 - expected.length - withoutId);
    expect(account.balanced).toBe(true);
  });

  it('keeps duplicates with dedupe off', async () => {
    const { text, account } = await runStage(batchesOf(resources, 50), { dedupe: false });
    expect(JSON.parse(text).entry.map((e: { resource: Resource }) => e.resource)).toEqual(resources);
    expect(account.written).toBe(300);
    expect(account.stages.bundle).toMatchObject({ dedupeSetBytes: 0 });
  });

  it('chunks without dedupe: a second version of a resource starts a new Bundle, so none names one twice', async () => {
    const { text, account } = await runStage(batchesOf(resources, 50), { dedupe: false, maxEntries: 280 });
    const bundles = text.trimEnd().split('\n').map((line) => JSON.parse(line));
    expect(bundles.flatMap((b) => b.entry.map((e: { resource: Resource }) => e.resource))).toEqual(resources);
    for (const bundle of bundles) {
      const urls = bundle.entry.map((e: { request: { url: string } }) => e.request.url).filter((u: string) => u.includes('/'));
      expect(new Set(urls).size).toBe(urls.length);
    }
    // #250 is p0, whose first was id-less (#0); #251 is p1 again, which starts the second Bundle.
    expect(bundles.map((b) => b.entry.length)).toEqual([251, 49]);
    expect(account.written).toBe(300);
  });

  it('writes a Bundle with no entry array for no input (FHIR forbids empty arrays)', async () => {
    expect((await runStage([], {})).text).toBe('{"resourceType":"Bundle","type":"transaction"}\n');
    expect((await runStage([], { type: 'batch', pretty: true })).text).toBe('{\n  "resourceType": "Bundle",\n  "type": "batch"\n}\n');
    expect((await runStage([], { maxEntries: 5 })).text).toBe('');
  });

  it('rejects a resource whose id is not a string, naming the line and rule', async () => {
    const bad = [patient('1'), patient(7), patient('2')];
    await expect(runStage(batchesOf(bad, 3), {})).rejects.toThrow('in:2: Patient: id is not a string');
  });
});
