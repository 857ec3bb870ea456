import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { ndjsonBytes, ndjsonSerialize, Utf8Builder } from '../src/io/serialize.js';
import type { Resource } from '../src/types.js';

// ASCII, Latin-1, above Latin-1 (the pre-tag em dash, Greek), astral (a surrogate pair), a lone surrogate.
const TEXTS = ['{"a":1}', 'Müller é', 'tagged \u2014 review', 'Σωκράτης', 'emoji \u{1F600}', 'lone \ud800 half', '', 'plain'];

describe('Utf8Builder', () => {
  it('encodes any mix of one-byte and two-byte strings exactly as Buffer.from of their concatenation', () => {
    for (let start = 0; start < TEXTS.length; start++) {
      const texts = [...TEXTS.slice(start), ...TEXTS.slice(0, start)];
      const builder = new Utf8Builder();
      for (const [i, text] of texts.entries()) {
        if (i % 2 === 0) builder.add(text);
        else builder.addLine(text);
      }
      const expected = texts.map((t, i) => (i % 2 === 0 ? t : t + '\n')).join('');
      expect(builder.take().equals(Buffer.from(expected, 'utf8'))).toBe(true);
    }
  });

  it('starts empty again after take', () => {
    const builder = new Utf8Builder();
    expect(builder.empty).toBe(true);
    builder.add('x \u2014');
    expect(builder.empty).toBe(false);
    expect(builder.take().toString()).toBe('x \u2014');
    expect(builder.empty).toBe(true);
    expect(builder.take().length).toBe(0);
  });
});

describe('ndjsonSerialize', () => {
  const resources: Resource[] = TEXTS.map((text, i) => ({ resourceType: i % 2 ? 'Patient' : 'Observation', id: `r${i}`, text }));

  it('writes one line per resource, UTF-8, and counts them by type', async () => {
    const account = new Account();
    const bytes = ndjsonBytes(resources, account);
    expect(bytes.toString('utf8')).toBe(resources.map((r) => JSON.stringify(r) + '\n').join(''));
    expect(account.written).toBe(TEXTS.length);
    expect(Object.fromEntries(account.writtenByType)).toEqual({ Observation: 4, Patient: 4 });
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
