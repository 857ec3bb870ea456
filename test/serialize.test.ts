import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { ndjsonBytes, ndjsonSerialize } from '../src/io/serialize.js';
import { EncodedText, SplicedText, type RecordText, type Resource } from '../src/types.js';

// ASCII, Latin-1, above Latin-1 (the pre-tag em dash, Greek), astral (a surrogate pair), a lone surrogate.
const TEXTS = ['{"a":1}', 'Müller é', 'tagged \u2014 review', 'Σωκράτης', 'emoji \u{1F600}', 'lone \ud800 half', '', 'plain'];

describe('ndjsonSerialize', () => {
  const resources: Resource[] = TEXTS.map((text, i) => ({ resourceType: i % 2 ? 'Patient' : 'Observation', id: `r${i}`, text }));

  it('writes one line per resource, UTF-8, and counts them by type', async () => {
    const account = new Account();
    const bytes = ndjsonBytes(resources, account);
    expect(bytes.toString('utf8')).toBe(resources.map((r) => JSON.stringify(r) + '\n').join(''));
    expect(account.written).toBe(TEXTS.length);
    expect(Object.fromEntries(account.writtenByType)).toEqual({ Observation: 4, Patient: 4 });
  });

  it('writes the texts it is given as they are, spliced ones as head then tail, and serialises where there is none', () => {
    const tail = new EncodedText(' \u2014 tail');
    for (let start = 0; start < TEXTS.length; start++) {
      const rotated = [...TEXTS.slice(start), ...TEXTS.slice(0, start)];
      // Every third text none (serialised), every third spliced, the rest strings.
      const texts: (RecordText | undefined)[] = rotated.map((text, i) => (i % 3 === 0 ? undefined : i % 3 === 1 ? new SplicedText(text, tail) : text));
      const expected = texts.map((text, i) => (text === undefined ? JSON.stringify(resources[i]) : String(text)) + '\n').join('');
      expect(ndjsonBytes(resources, new Account(), texts).equals(Buffer.from(expected, 'utf8'))).toBe(true);
    }
  });

  it('gives the same bytes whatever the batching', async () => {
    const whole = ndjsonBytes(resources, new Account());
    for (const size of [1, 3, 5]) {
      const batches = [];
      for (let i = 0; i < resources.length; i += size) batches.push({ source: '-', lines: [], resources: resources.slice(i, i + size) });
      const serialize = ndjsonSerialize(new Account());
      const [, out] = await Promise.all([pipeline(Readable.from(batches), serialize), buffer(serialize)]);
      expect(out.equals(whole)).toBe(true);
    }
  });
});
