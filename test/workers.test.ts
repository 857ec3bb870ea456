import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeCorpus } from '../bench/generate.js';
import { hx, tempDir } from './support/cli.js';

const env = { HX_DEID_KEY: 'workers-test-key' };
const DEID = ['deid', '--profile', 'safe-harbor', '--as-of', '2025-01-01'];
let dir: string;
/** A generated corpus of ~20 read batches with bad and odd lines spread through it. */
let messy: string;
let messyText: string;

beforeAll(async () => {
  dir = tempDir('hx-workers-');
  const sink = new PassThrough();
  const parts: Buffer[] = [];
  sink.on('data', (c: Buffer) => parts.push(c));
  await writeCorpus(sink, 1_200_000, 11);
  const lines = Buffer.concat(parts).toString().split('\n').filter(Boolean);
  const odd = [
    '{"resourceType":"Patient","id":"bad"', // invalid JSON
    '',
    '   ',
    '[1,2]',
    '{"id":"no-type"}',
    '{"resourceType":"Observation","id":"mod","modifierExtension":[{"url":"http://x/y","valueString":"Zebulon"}]}', // deid rejects it
    '{"resourceType":"Bundle","type":"searchset","entry":[{"resource":{"resourceType":"Patient","id":"in-bundle"}},' +
      '{"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome","issue":[{"severity":"warning","diagnostics":"partial"}]}},' +
      '{"request":{"method":"DELETE","url":"Patient/x"}}]}',
    `{"resourceType":"Basic","id":"long","text":"${'x'.repeat(3000)}"}`, // over --max-line-bytes 2000
    '{"resourceType":"Observation","id":"ext","status":"final","extension":{"url":"http://x"}}', // pretag cannot add its tag
    '{"resourceType":"Basic","code":{"text":"no id"}}', // bundle names it by its position in the stream
    '{"resourceType":"Patient","id":"dup-1"}', // bundle keeps the first
  ];
  const out: string[] = [];
  for (const [i, line] of lines.entries()) {
    out.push(line);
    if (i % 37 === 20) out.push(odd[((i / 37) | 0) % odd.length]!);
  }
  messyText = out.map((line, i) => (i % 5 === 0 ? line + '\r' : line)).join('\n') + '\n';
  messy = join(dir, 'messy.ndjson');
  writeFileSync(messy, messyText);
});

/** `command` on the messy corpus with one worker and with two: the same bytes and account, balanced. */
async function oneAndTwo(command: string[], tag: string) {
  const one = await runWith([...command, messy], 1, tag);
  const two = await runWith([...command, messy], 2, tag);
  expect(two.stdout.equals(one.stdout)).toBe(true);
  expect(two.account).toEqual(one.account);
  expect(two.account.balanced).toBe(true);
  return { one, two };
}

/** Reject rows in line order (the same set, whichever thread met them first). */
function byLine(rows: { line: number; reason: string }[]) {
  return [...rows].sort((a, b) => a.line - b.line || (a.reason < b.reason ? -1 : 1));
}

function countOf(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

/** One run with a reject file and a report; returns what it wrote, the account and the rejected rows. */
async function runWith(args: string[], workers: number, tag: string, stdin?: string) {
  const rejects = join(dir, `rejects-${tag}-${workers}.ndjson`);
  const report = join(dir, `report-${tag}-${workers}.json`);
  const r = await hx([...args, '--workers', String(workers), '--max-line-bytes', '2000', '--rejects', rejects, '--report', report], {
    env,
    stdin,
  });
  expect(r.code, r.stderr).toBe(0);
  const { elapsedSeconds: _elapsed, workerThreads, ...account } = JSON.parse(readFileSync(report, 'utf8'));
  expect(workerThreads).toBe(workers - 1);
  const rows = readFileSync(rejects, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  return { stdout: r.stdout, stderr: r.stderr, account, rows };
}

describe('--workers', () => {
  it.each([
    ['cat', ['cat']],
    ['deid', DEID],
    ['deid (export: lines edited as text)', ['deid']],
    ['pretag', ['pretag']],
    ['pretag --no-smoking-contradiction', ['pretag', '--no-smoking-contradiction']],
  ])('hx %s: two workers write the bytes, account and rejects of one thread', async (tag, command) => {
    const { one, two } = await oneAndTwo(command, tag);
    // Every odd line was met: invalid JSON, not an object, no type, the long line (and deid's modifier extension).
    expect(two.account.rejected).toBeGreaterThanOrEqual(4 * 3);
    expect(two.account.skippedBlank).toBeGreaterThan(0);
    expect(two.account.entriesWithoutResource).toBeGreaterThan(0);
    // The same rows; in order of input batch (within a batch, the reader's rejects come before the stage's, and
    // one thread may read a batch ahead of the stage, so only the set is the same for stages that reject).
    expect(byLine(two.rows)).toEqual(byLine(one.rows));
    if (tag === 'cat') expect(two.rows).toEqual(byLine(two.rows));
    // Line numbers are the input's: each names a line holding what was rejected.
    const inputLines = messyText.split('\n');
    for (const row of two.rows) expect(inputLines[row.line - 1]!.replace(/\r$/, '')).toBe(row.text ?? inputLines[row.line - 1]!.replace(/\r$/, ''));
    // Warnings (the search outcome) are told with their place, by either path.
    expect(two.stderr).toMatch(/messy\.ndjson:\d+: entry 1: search outcome: warning: partial/);
  });

  it('an input of one read batch is parsed on the main thread: no worker starts', async () => {
    const small = join(dir, 'small.ndjson');
    writeFileSync(small, messyText.split('\n').slice(0, 60).join('\n') + '\n');
    const one = await runWith(['cat', small], 1, 'small');
    const report = join(dir, 'report-small-2.json');
    const rejects = join(dir, 'rejects-small-2.ndjson');
    const two = await hx(['cat', small, '--workers', '2', '--max-line-bytes', '2000', '--rejects', rejects, '--report', report]);
    expect(two.stdout.equals(one.stdout)).toBe(true);
    expect(JSON.parse(readFileSync(report, 'utf8')).workerThreads).toBe(0);
    // Its bad line is still rejected, with its number.
    expect(one.rows).toEqual([expect.objectContaining({ line: 22, reason: expect.stringMatching(/^invalid JSON/) })]);
    expect(readFileSync(rejects, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line))).toEqual(one.rows);
  });

  it('hx pretag: two workers judge smoking contradictions on the first pass, as one thread does', async () => {
    const one = await runWith(['pretag', messy], 1, 'smoking');
    const two = await runWith(['pretag', messy], 2, 'smoking');
    expect(two.account.stages.pretag.mode).toBe('two-pass');
    expect(two.account.stages.pretag.tagsAdded.smoking_contradiction).toBeGreaterThan(0);
    expect(two.account.stages.pretag).toEqual(one.account.stages.pretag);
    expect(two.stdout.equals(one.stdout)).toBe(true);
    expect(two.rows.some((row) => row.reason === 'Observation: extension is not an array (cannot add a pre-tag)')).toBe(true);
  });

  it.each([
    ['bundle', ['bundle', '--max-bytes', '64KiB']],
    ['bundle --no-dedupe', ['bundle', '--no-dedupe', '--max-entries', '40']],
    ['run deid | pretag | bundle', ['run', `${DEID.join(' ')} | pretag | bundle --max-bytes 64KiB`]],
    ['run deid (export) | pretag | bundle', ['run', 'deid | pretag | bundle --max-bytes 64KiB']],
    ['run pretag | deid', ['run', `pretag | ${DEID.join(' ')}`]],
    ['run cat | pretag --no-h-flag-titer | bundle', ['run', 'cat | pretag --no-h-flag-titer | bundle --type collection']],
  ])('hx %s: the main thread assembles what the workers made, as one thread does', async (tag, command) => {
    const { one, two } = await oneAndTwo(command, tag);
    expect(byLine(two.rows)).toEqual(byLine(one.rows));
    const text = two.stdout.toString();
    if (tag.includes('bundle')) {
      // Named by position, deduplicated (or not) and cut as one thread does; the spool's records come last.
      expect(text).toMatch(/"fullUrl":"urn:uuid:[0-9a-f]{8}-/);
      if (tag.startsWith('bundle')) expect(countOf(text, '"id":"dup-1"')).toBe(tag.includes('no-dedupe') ? countOf(messyText, '"id":"dup-1"') : 1);
    }
    if (tag.includes('pretag')) expect(two.account.stages.pretag.mode).toBe(tag.startsWith('run pretag') ? 'two-pass' : 'spool');
    if (tag.includes('pretag')) expect(two.account.stages.pretag.tagsAdded.smoking_contradiction).toBeGreaterThan(0);
  });

  it('hx deid (export) writes, record for record, what the object path writes, with the same account and rejects', async () => {
    // --explain counts per element path, which only the object walk can: it makes every record take the object path.
    const objectPath = await runWith(['deid', messy, '--explain', join(dir, 'object-path.tsv')], 1, 'object-path');
    for (const workers of [1, 2]) {
      const textPath = await runWith(['deid', messy], workers, 'text-path');
      const got = textPath.stdout.toString().split('\n');
      const want = objectPath.stdout.toString().split('\n');
      expect(got.length).toBe(want.length);
      let edited = 0;
      for (let i = 0; i < got.length - 1; i++) {
        expect(JSON.parse(got[i]!)).toStrictEqual(JSON.parse(want[i]!));
        if (got[i] !== want[i]) edited++;
      }
      // The generated lines are canonical JSON: the same bytes, but for the odd lines kept as they came.
      expect(edited).toBeLessThan(20);
      expect(textPath.rows).toEqual(objectPath.rows);
      expect(textPath.account).toEqual(objectPath.account);
    }
  });

  it('hx deid: the --explain report adds up the workers', async () => {
    const explain = (n: number) => join(dir, `explain-${n}.tsv`);
    for (const n of [1, 2]) {
      const r = await hx([...DEID, messy, '--rejects', join(dir, 'x.ndjson'), '--max-line-bytes', '2000', '--workers', String(n), '--explain', explain(n)], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const text = readFileSync(explain(2), 'utf8');
    expect(text.split('\n').length).toBeGreaterThan(10);
    expect(text).toBe(readFileSync(explain(1), 'utf8'));
  });

  it('stdin and a Bundle document (parsed on the main thread) give the same bytes', async () => {
    const bundle = JSON.stringify({
      resourceType: 'Bundle',
      type: 'collection',
      entry: messyText
        .split('\n')
        .filter((line) => line.startsWith('{"resourceType":"Patient","id":"') && line.endsWith('}'))
        .slice(0, 50)
        .map((line) => ({ resource: JSON.parse(line) })),
    });
    const doc = join(dir, 'doc.json');
    writeFileSync(doc, bundle + '\n' + messyText.split('\n').slice(0, 400).join('\n') + '\n');
    const one = await runWith([...DEID, doc], 1, 'doc');
    const two = await runWith([...DEID, doc], 2, 'doc');
    expect(two.stdout.equals(one.stdout)).toBe(true);
    expect(two.account).toEqual(one.account);
    const piped = await runWith([...DEID], 2, 'stdin', messyText);
    const file = await runWith([...DEID, messy], 1, 'file');
    expect(piped.stdout.equals(file.stdout)).toBe(true);
  });

  it('without a reject file, stops at the first bad line in input order, naming it', async () => {
    const r = await hx(['cat', messy, '--workers', '2'], { env });
    expect(r.code).toBe(1);
    const first = messyText.split('\n').findIndex((line) => line.startsWith('{"resourceType":"Patient","id":"bad"')) + 1;
    expect(r.stderr).toContain(`messy.ndjson:${first}: invalid JSON`);
    expect(r.stderr).not.toContain('Zebulon');
  });

  it('refuses --workers 0', async () => {
    const r = await hx(['cat', messy, '--workers', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--workers must be a whole number of at least 1');
  });
});
