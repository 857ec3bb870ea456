import { describe, expect, it } from 'vitest';
import { random } from '../bench/generate.js';
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
