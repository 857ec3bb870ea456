import { describe, expect, it } from 'vitest';
import { random } from '../bench/generate.js';
import { DocumentScanner } from '../src/io/documentScanner.js';
import { splitBytes } from './support/split.js';

/** Strings that try to fool a scanner: quotes, runs of backslashes, brackets, newlines escaped, non-ASCII. */
const TRICKY = ['\\', '\\\\', '"', '\\"', '{', '}', '[', ']', ',', ':', '\n', 'é', '日本', '🎉', '"entry":[', 'x'];

function trickyString(next: () => number): string {
  let s = '';
  const n = Math.floor(next() * 8);
  for (let i = 0; i < n; i++) s += TRICKY[Math.floor(next() * TRICKY.length)];
  return s;
}

function randomBundle(seed: number) {
  const next = random(seed);
  const entry = Array.from({ length: 1 + Math.floor(next() * 6) }, (_, i) => ({
    fullUrl: trickyString(next),
    resource: { resourceType: 'Observation', id: `o${i}`, note: [{ text: trickyString(next) }], value: [1.5, -2e3, true, null, { [trickyString(next)]: trickyString(next) }] },
  }));
  return { resourceType: 'Bundle', id: trickyString(next), type: 'collection', meta: { tag: [{ code: trickyString(next) }] }, entry, total: entry.length };
}

describe('DocumentScanner', () => {
  it('agrees with JSON.parse on tricky Bundles, pretty or compact, under any chunking', async () => {
    for (let seed = 1; seed <= 150; seed++) {
      const bundle = randomBundle(seed);
      const expected = bundle.entry.map((e) => e.resource);
      const text = seed % 2 ? JSON.stringify(bundle) : JSON.stringify(bundle, null, 2);
      const chunk = 1 + (seed % 17);
      const seen: unknown[] = [];
      const r = await splitBytes(text, [chunk, chunk + 5, 1], { onBundle: (b) => seen.push(b) });
      expect(r.resources).toEqual(expected);
      const { entry: _entry, ...rest } = bundle;
      expect(seen).toEqual([rest]);
    }
  });
});

/** Feeds `text` to a scanner that finds resource bytes, in chunks of `size`; the entries' resource bytes as strings. */
function resourceBytes(text: string, size = text.length): (string | undefined)[] {
  const found: (string | undefined)[] = [];
  const scanner = new DocumentScanner({ onElement: (_text, _line, bytes) => found.push(bytes?.toString('utf8')), onBadElement: () => {} }, 1 << 20, 1, true);
  const bytes = Buffer.from(text);
  for (let at = 0; at < bytes.length; at += size) scanner.push(bytes.subarray(at, at + size));
  expect(scanner.done).toBe(true);
  return found;
}

describe('DocumentScanner: the bytes of each entry\'s resource', () => {
  const bundle = (...entries: string[]) => `{"resourceType":"Bundle","type":"searchset","entry":[${entries.join(',')}]}`;

  it('finds the resource wherever it stands in the entry, with the bytes as they came', () => {
    expect(
      resourceBytes(
        bundle(
          '{"fullUrl":"x","resource":{"resourceType":"Observation","valueQuantity":{"value":1.50}},"search":{"mode":"match"}}',
          '{"resource": {"resourceType": "Patient", "id": "p"} , "fullUrl":"y"}',
          // a nested member named resource is not the entry's
          '{"search":{"resource":{"x":1}},"response":{"outcome":{"resource":{}}},"resource":{"resourceType":"A"}}',
        ),
      ),
    ).toEqual(['{"resourceType":"Observation","valueQuantity":{"value":1.50}}', '{"resourceType": "Patient", "id": "p"}', '{"resourceType":"A"}']);
  });

  it('gives the last of a repeated key, as JSON.parse keeps the last', () => {
    const text = bundle('{"resource":{"resourceType":"A"},"resource":{"resourceType":"B"}}');
    expect(resourceBytes(text)).toEqual(['{"resourceType":"B"}']);
    expect(JSON.parse(text).entry[0].resource).toEqual({ resourceType: 'B' });
  });

  it('withholds the bytes whenever they might not be what JSON.parse sees, or span lines', () => {
    // An escaped key that decodes to "resource" replaces the first value.
    const escaped = bundle('{"resource":{"resourceType":"A"},"resourc\\u0065":{"resourceType":"B"}}');
    expect(JSON.parse(escaped).entry[0].resource).toEqual({ resourceType: 'B' });
    expect(resourceBytes(escaped)).toEqual([undefined]);
    expect(resourceBytes(bundle('{"resource":{\n"resourceType":"A"}}'))).toEqual([undefined]);
    expect(resourceBytes(bundle('{"resource":["not an object"]}', '{"resource":"text"}'))).toEqual([undefined, undefined]);
    // In a top-level array the elements are resources, not entries.
    expect(resourceBytes('[{"resourceType":"Basic","resource":{"x":1}}]')).toEqual([undefined]);
  });

  it('gives the same bytes (or none) under any chunking: a key or string cut between chunks is followed across them', () => {
    // Every split point of an entry whose resource keeps a decimal's precision (JSON.stringify would write 1.5).
    const text = bundle('{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Observation","valueQuantity":{"value":1.50}},"search":{"mode":"match"}}');
    const bytes = Buffer.from(text);
    for (let cut = 1; cut < bytes.length; cut++) {
      const found: (string | undefined)[] = [];
      const scanner = new DocumentScanner({ onElement: (_t, _l, r) => found.push(r?.toString('utf8')), onBadElement: () => {} }, 1 << 20, 1, true);
      scanner.push(bytes.subarray(0, cut));
      scanner.push(bytes.subarray(cut));
      expect(found, `cut at ${cut}`).toEqual(['{"resourceType":"Observation","valueQuantity":{"value":1.50}}']);
    }
    // An escape cut between chunks still withholds them.
    const escaped = bundle('{"resource":{"resourceType":"A"},"resourc\\u0065":{"resourceType":"B"}}');
    for (const size of [1, 2, 3, 5]) expect(resourceBytes(escaped, size)).toEqual([undefined]);
  });

  it('gives exactly the serialised resource or nothing, the same under any chunking; always when nothing can fool it', () => {
    let given = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const b = randomBundle(seed);
      const text = JSON.stringify(b);
      const expected = b.entry.map((e) => JSON.stringify(e.resource));
      const whole = resourceBytes(text);
      // With no escape in a fullUrl, every entry's bytes are known.
      whole.forEach((bytes, i) => (JSON.stringify(b.entry[i]!.fullUrl).includes('\\') ? expect(bytes).toBeUndefined() : expect(bytes).toBe(expected[i])));
      given += whole.filter((x) => x !== undefined).length;
      for (const size of [1 + (seed % 17), 7, 1]) expect(resourceBytes(text, size)).toEqual(whole);
      expect(resourceBytes(JSON.stringify(b, null, 2)).every((x) => x === undefined)).toBe(true);
    }
    expect(given).toBeGreaterThan(100);
  });
});
