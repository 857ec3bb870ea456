import { describe, expect, it } from 'vitest';
import { random } from '../bench/generate.js';
import { FastenExportScanner } from '../src/fasten/exportScanner.js';

/** Strings that try to fool a scanner: quotes, runs of backslashes, brackets, newlines escaped, look-alike keys, non-ASCII. */
const TRICKY = ['\\', '\\\\', '"', '\\"', '{', '}', '[', ']', ',', ':', '\n', 'é', '日本', '🎉', '"fhir":{', '"providers":[', 'x'];

type Json = Record<string, unknown>;

function trickyString(next: () => number): string {
  let s = '';
  const n = Math.floor(next() * 8);
  for (let i = 0; i < n; i++) s += TRICKY[Math.floor(next() * TRICKY.length)];
  return s;
}

/** A resource with tricky strings in values and keys, nested objects and arrays. */
function randomResource(next: () => number, i: number): Json {
  return {
    resourceType: 'Observation',
    id: `o${i}${trickyString(next)}`,
    note: [{ text: trickyString(next) }],
    value: [1.5, -2e3, true, null, { [trickyString(next)]: trickyString(next) }, []],
    // Looks like the export's own structure, one level down: must stay inside the resource.
    contained: [{ providers: [{ fhir: { Patient: [{ id: trickyString(next) }] } }] }],
  };
}

/** A member of a type array that is not a resource object. */
function randomNonObject(next: () => number): unknown {
  const choices = [() => 42, () => trickyString(next), () => null, () => [{ resourceType: 'Patient' }, trickyString(next)]];
  return choices[Math.floor(next() * choices.length)]!();
}

/** A type key: sometimes a real type, sometimes tricky (never integer-like, so JSON key order is insertion order). */
function typeKey(next: () => number, t: number): string {
  return next() < 0.5 ? ['Patient', 'Observation', 'Condition'][t % 3]! : `T${t}${trickyString(next)}`;
}

function randomExport(seed: number): Json {
  const next = random(seed);
  let n = 0;
  const providers = Array.from({ length: 1 + Math.floor(next() * 3) }, (_, p) => {
    const fhir: Json = {};
    const types = Math.floor(next() * 4);
    for (let t = 0; t < types; t++) {
      fhir[typeKey(next, t)] = Array.from({ length: Math.floor(next() * 4) }, () =>
        next() < 0.8 ? randomResource(next, n++) : randomNonObject(next),
      );
    }
    // Members of a provider other than `fhir` are skipped, even when they look like it.
    return { name: trickyString(next), id: p, other: { fhir: { Patient: [{ id: trickyString(next) }] } }, fhir };
  });
  return { providers, [trickyString(next) || 'k']: [trickyString(next), { fhir: {} }] };
}

interface Found {
  resource: unknown;
  mapType: string;
  provider: number;
}

/** What the scanner should report, read off the parsed document. */
function expected(doc: Json): { found: Found[]; bad: string[] } {
  const found: Found[] = [];
  const bad: string[] = [];
  (doc.providers as Json[]).forEach((provider, p) => {
    for (const [mapType, list] of Object.entries(provider.fhir as Json)) {
      for (const member of list as unknown[]) {
        if (member !== null && typeof member === 'object' && !Array.isArray(member)) found.push({ resource: member, mapType, provider: p });
        else bad.push(`providers[${p}].fhir.${mapType}: member is not an object`);
      }
    }
  });
  return { found, bad };
}

/** Feeds `bytes` in chunks of the given sizes (cycled) and collects what the scanner reports. */
function scan(bytes: Buffer, sizes: number[]) {
  const found: Found[] = [];
  const texts: string[] = [];
  const lines: number[] = [];
  const bad: string[] = [];
  const scanner = new FastenExportScanner(
    {
      onResource: (text, line, mapType, provider) => {
        found.push({ resource: JSON.parse(text), mapType, provider });
        texts.push(text);
        lines.push(line);
      },
      onBadResource: (reason) => bad.push(reason),
    },
    1 << 20,
  );
  let end = -1;
  for (let pos = 0, k = 0; pos < bytes.length && end < 0; k++) {
    const size = sizes[k % sizes.length]!;
    const r = scanner.push(bytes.subarray(pos, pos + size));
    if (r >= 0) end = pos + r;
    pos += size;
  }
  return { found, texts, lines, bad, end, done: scanner.done, sawProviders: scanner.sawProviders };
}

describe('FastenExportScanner on random exports', () => {
  it('agrees with JSON.parse on tricky exports, pretty or compact, under any chunking', () => {
    for (let seed = 1; seed <= 150; seed++) {
      const doc = randomExport(seed);
      const text = seed % 2 ? JSON.stringify(doc) : JSON.stringify(doc, null, 2);
      const bytes = Buffer.from(`${text}\n`);
      const want = expected(doc);
      const chunk = 1 + (seed % 17);
      const whole = scan(bytes, [bytes.length]);
      for (const sizes of [[bytes.length], [chunk, chunk + 5, 1], [1]]) {
        const r = scan(bytes, sizes);
        expect(r.found).toEqual(want.found);
        expect(r.bad).toEqual(want.bad);
        expect(r.lines).toEqual(whole.lines);
        expect(r.done).toBe(true);
        expect(r.end).toBe(bytes.length - 1);
        expect(r.sawProviders).toBe(true);
      }
      // Each resource's text lies in the lines from the one reported for it, so it starts there.
      const docLines = text.split('\n');
      whole.texts.forEach((resourceText, k) => {
        const at = whole.lines[k]! - 1;
        const span = resourceText.split('\n').length;
        expect(docLines.slice(at, at + span).join('\n')).toContain(resourceText);
      });
    }
  });

  it('reports a resource larger than the cap by its path and line, and goes on', () => {
    const big = { resourceType: 'Patient', id: 'x'.repeat(100), note: 'a\\"]}' };
    const small = { resourceType: 'Patient', id: 'ok' };
    const text = JSON.stringify({ providers: [{ fhir: { 'Pa\\"t': [big, small] } }] }, null, 1);
    const found: string[] = [];
    const bad: [string, number][] = [];
    const scanner = new FastenExportScanner(
      { onResource: (t, _line, mapType) => found.push(`${mapType}:${JSON.parse(t).id}`), onBadResource: (reason, line) => bad.push([reason, line]) },
      80,
    );
    const bytes = Buffer.from(text);
    for (let pos = 0; pos < bytes.length; pos += 7) scanner.push(bytes.subarray(pos, pos + 7));
    expect(found).toEqual(['Pa\\"t:ok']);
    // The big resource's `{` is on the line before its first member (1-based: the member's 0-based index).
    const bigLine = text.split('\n').findIndex((l) => l.includes('"resourceType"'));
    expect(bad).toEqual([['providers[0].fhir.Pa\\"t: resource larger than 80 bytes', bigLine]]);
  });
});
