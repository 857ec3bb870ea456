import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { HxError } from '../src/errors.js';
import { looksLikeDocument, parseRecord } from '../transforms/ndjsonSplit.js';
import { SHARED, tempDir } from './support/cli.js';
import { splitBytes } from './support/split.js';

const P = (id: string, extra = '') => `{"resourceType":"Patient","id":"${id}"${extra}}`;

describe('parseRecord (the core)', () => {
  it('accepts an object with a resourceType', () => {
    expect(parseRecord(P('a'))).toEqual({ resourceType: 'Patient', id: 'a' });
  });
  it('names the reason and the column, never the content', () => {
    const bad = parseRecord('{"name":"Lin, Derrick" oops}');
    expect(bad).toMatchObject({ reason: 'invalid JSON (column 24)' });
    expect(String((bad as Error).message)).not.toContain('Derrick');
    expect(parseRecord('[1,2]')).toMatchObject({ reason: 'not a JSON object (array)' });
    expect(parseRecord('"x"')).toMatchObject({ reason: 'not a JSON object (string)' });
    expect(parseRecord('null')).toMatchObject({ reason: 'not a JSON object (null)' });
    expect(parseRecord('{"id":"x"}')).toMatchObject({ reason: 'missing resourceType' });
    expect(parseRecord('{"resourceType":7}')).toMatchObject({ reason: 'resourceType is not a FHIR type name' });
    expect(parseRecord('{"resourceType":"../etc"}')).toMatchObject({ reason: 'resourceType is not a FHIR type name' });
  });
});

describe('NDJSON framing', () => {
  it('handles CRLF, a BOM, blank lines and a last line without newline', async () => {
    const input = `\uFEFF${P('a')}\r\n\r\n  \n${P('b')}\n\n${P('c')}`;
    const r = await splitBytes(input);
    expect(r.resources.map((x) => x.id)).toEqual(['a', 'b', 'c']);
    expect(r.lines).toEqual([1, 4, 6]);
    expect(r.account.skippedBlank).toBe(3);
    expect(r.account.read).toBe(3);
  });

  it('gives the same records and line numbers whatever the chunking', async () => {
    const text = [P('a', ',"name":[{"text":"é \\" \\\\"}]'), '', P('b'), `{"resourceType":"Bundle","type":"collection","entry":[{"resource":${P('c')}}]}`, P('d')].join('\n') + '\n';
    const whole = await splitBytes(text);
    for (const sizes of [[1], [2, 3], [7], [64]]) {
      const r = await splitBytes(text, sizes);
      expect(r.resources).toEqual(whole.resources);
      expect(r.lines).toEqual(whole.lines);
    }
    expect(whole.resources.map((x) => x.id)).toEqual(['a', 'b', 'c', 'd']);
    expect(whole.lines).toEqual([1, 3, 4, 5]);
  });

  it('with needles, reads only the lines holding one, numbered as without them, whatever the chunking', async () => {
    const lines = [
      P('a', ',"code":"72166-2"'),
      '',
      P('b'),
      ...Array.from({ length: 40 }, (_, n) => P(`n${n}`)), // past the first 1 KiB, which is sniffed whole
      P('c', ',"x":"\\u0037"'),
      '   ',
      P('d', ',"y":"ñ 72166-2 日本"') + '\r',
      P('e', ',"z":"72166-2","w":"\\u00e9"'),
      '{"resourceType":"Patient" 72166-2 broken',
      P('f'),
    ];
    const text = lines.join('\n'); // the last line without a newline
    const needles = ['72166-2', '\\u'];
    const rejectsPath = join(tempDir(), 'rejects.ndjson');
    const prefilter = (line: string) => needles.some((n) => line.includes(n));
    const plain = await splitBytes(text, undefined, { prefilter, rejectsPath });
    expect(plain.resources.map((x) => x.id)).toEqual(['a', 'c', 'd', 'e']);
    expect(plain.lines).toEqual([1, 44, 46, 47]);
    expect(plain.account.rejected).toBe(1);
    for (const sizes of [[1], [2, 3], [7], [40], [100], [250], [1000]]) {
      const r = await splitBytes(text, sizes, { prefilter, needles, rejectsPath });
      expect(r.resources).toEqual(plain.resources);
      expect(r.lines).toEqual(plain.lines);
      expect(r.account.rejected).toBe(1); // line 8: bad JSON, and it holds a needle
    }
    // After a Bundle document, the rest of its last line is still judged.
    const afterBundle = `{"resourceType":"Bundle","entry":[{"resource":${P('x', ',"c":"72166-2"')}}]} trailing\n${P('y', ',"c":"72166-2"')}\n`;
    for (const sizes of [[1], [5], [1000]]) {
      const r = await splitBytes(afterBundle, sizes, { prefilter, needles, rejectsPath });
      expect(r.resources.map((x) => x.id)).toEqual(['x', 'y']);
      expect(r.account.rejected).toBe(1);
    }
  });

  it('keeps multi-byte characters split across chunks intact', async () => {
    const text = P('a', ',"x":"日本語 ñ 🎉"') + '\n';
    const r = await splitBytes(text, [1]);
    expect(r.resources[0]).toEqual(JSON.parse(text));
  });

  it('rejects a line over the cap with its number, and goes on', async () => {
    const dir = tempDir();
    const long = P('long', `,"pad":"${'x'.repeat(500)}"`);
    const text = `${P('a')}\n${long}\n${P('b')}\n${long}`;
    for (const sizes of [[1000], [13], [100000]]) {
      const rejectsPath = join(dir, `r${sizes[0]}.ndjson`);
      const r = await splitBytes(text, sizes, { maxLineBytes: 200, rejectsPath });
      expect(r.resources.map((x) => x.id)).toEqual(['a', 'b']);
      expect(r.account.rejected).toBe(2);
      const rows = readFileSync(rejectsPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      expect(rows).toEqual([
        { source: 'in.ndjson', line: 2, reason: 'line longer than 200 bytes' },
        { source: 'in.ndjson', line: 4, reason: 'line longer than 200 bytes' },
      ]);
    }
  });

  it('stops at the first bad line by default, naming file and line only', async () => {
    const text = `${P('a')}\n{"resourceType":"Patient","name":"Secret Name",}\n${P('b')}\n`;
    const err = await splitBytes(text).catch((e) => e);
    expect(err).toBeInstanceOf(HxError);
    expect(err.message).toBe('in.ndjson:2: invalid JSON (column 48)');
  });

  it('balances the account on a messy corpus: read = written + rejected', async () => {
    const dir = tempDir();
    const lines = [P('1'), '', 'not json', '[]', '{"id":"no-type"}', P('2'), '   ', '{"resourceType":"Bundle","type":"searchset","entry":[{"resource":' + P('3') + '},{"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","diagnostics":"Unknown parameter _offset"}]}},{"request":{"method":"DELETE","url":"Patient/9"}},{"resource":{"id":"x"}}]}', '{"trunc', P('4')];
    const account = new Account();
    const warnings: string[] = [];
    account.onWarning = (m) => warnings.push(m);
    const r = await splitBytes(lines.join('\n'), [5], { account, rejectsPath: join(dir, 'r.ndjson') });
    expect(r.resources.map((x) => x.id)).toEqual(['1', '2', '3', '4']);
    expect(account.read).toBe(9);
    expect(account.rejected).toBe(5);
    expect(account.skippedBlank).toBe(2);
    expect(account.entriesWithoutResource).toBe(1);
    expect(warnings).toEqual(['in.ndjson:8: entry 1: search outcome: warning: Unknown parameter _offset']);
    expect(account.read).toBe(r.resources.length + account.rejected);
    const reasons = readFileSync(join(dir, 'r.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).map((x) => `${x.line}: ${x.reason}`);
    expect(reasons).toEqual([
      '3: invalid JSON',
      '4: not a JSON object (array)',
      '5: missing resourceType',
      '8: entry 3: missing resourceType',
      '9: invalid JSON (column 8)',
    ]);
  });
});

describe('Bundle documents', () => {
  const bundlePath = join(SHARED, 'data/bulk-data-server/synthea-bundles/Abram_Lemke_6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2.json');

  it('streams a pretty-printed Bundle entry by entry, with the line each entry starts on', async () => {
    const text = readFileSync(bundlePath, 'utf8');
    const expected = JSON.parse(text).entry.map((e: { resource: unknown }) => e.resource);
    const r = await splitBytes(text, [4096, 777]);
    expect(r.resources).toEqual(expected);
    const startLines = text.split('\n').flatMap((l, i) => (/^    \{$/.test(l) ? [i + 1] : []));
    expect(r.lines).toEqual(startLines);
  });

  it('streams a one-line Bundle whatever the chunking, and reports its members', async () => {
    const doc = JSON.parse(readFileSync(bundlePath, 'utf8'));
    const oneLine = JSON.stringify({ resourceType: 'Bundle', type: 'searchset', total: 273, link: [{ relation: 'self', url: 'x' }], entry: doc.entry });
    const seen: unknown[] = [];
    for (const sizes of [[1 << 16], [3, 1000, 5]]) {
      const r = await splitBytes(oneLine, sizes, { onBundle: (b) => seen.push(b) });
      expect(r.resources).toEqual(doc.entry.map((e: { resource: unknown }) => e.resource));
    }
    expect(seen).toEqual([
      { resourceType: 'Bundle', type: 'searchset', total: 273, link: [{ relation: 'self', url: 'x' }] },
      { resourceType: 'Bundle', type: 'searchset', total: 273, link: [{ relation: 'self', url: 'x' }] },
    ]);
  });

  it('reads NDJSON that follows a Bundle on the first line (chunked bundles)', async () => {
    const b = (ids: string[]) => JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: ids.map((id) => ({ resource: { resourceType: 'Patient', id } })) });
    const r = await splitBytes(`${b(['1', '2'])}\n${b(['3'])}\n${b(['4'])}\n`, [7]);
    expect(r.resources.map((x) => x.id)).toEqual(['1', '2', '3', '4']);
    expect(r.lines).toEqual([1, 1, 2, 3]);
    expect(r.account.skippedBlank).toBe(0);
  });

  it('streams a top-level array of resources and rejects its non-objects', async () => {
    const dir = tempDir();
    const r = await splitBytes(`[\n ${P('a')},\n 42,\n ${P('b')}\n]\n`, [3], { rejectsPath: join(dir, 'r') });
    expect(r.resources.map((x) => x.id)).toEqual(['a', 'b']);
    expect(r.account.rejected).toBe(1);
    expect(readFileSync(join(dir, 'r'), 'utf8')).toContain('"line":3,"reason":"array element is not an object"');
  });

  it('reads a single pretty-printed resource that is not a Bundle', async () => {
    const r = await splitBytes(JSON.stringify({ resourceType: 'Patient', id: 'p', entry: [{ a: 1 }] }, null, 2));
    expect(r.resources).toEqual([{ resourceType: 'Patient', id: 'p', entry: [{ a: 1 }] }]);
  });

  it('rejects a truncated document after emitting the entries it holds', async () => {
    const text = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', id: 'a' } }, { resource: { resourceType: 'Patient', id: 'b' } }] });
    const err = await splitBytes(text.slice(0, -20)).catch((e) => e);
    expect(err.message).toBe('in.ndjson:1: JSON document ends before its closing bracket (truncated input?)');
  });

  it('caps a huge entry without holding it', async () => {
    const dir = tempDir();
    const big = { resource: { resourceType: 'Binary', id: 'big', data: 'A'.repeat(5000) } };
    const text = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [big, { resource: { resourceType: 'Patient', id: 'a' } }] });
    const r = await splitBytes(text, [100], { maxLineBytes: 1000, rejectsPath: join(dir, 'r') });
    expect(r.resources.map((x) => x.id)).toEqual(['a']);
    expect(r.account.rejected).toBe(1);
  });

  it('sniffs documents from their first bytes', () => {
    expect(looksLikeDocument(Buffer.from('{\n  "resourceType": "Bundle"'))).toBe(true);
    expect(looksLikeDocument(Buffer.from(' {"resourceType" : "Bundle","entry":[]}'))).toBe(true);
    expect(looksLikeDocument(Buffer.from('[{"resourceType":"Patient"}]'))).toBe(true);
    expect(looksLikeDocument(Buffer.from('{"resourceType":"Patient"}\n{"resourceType":"Bundle"}'))).toBe(false);
  });
});
