import { createWriteStream, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeCorpus } from '../bench/generate.js';
import { Account } from '../src/account.js';
import { splitPipeline } from '../src/cli/pipeline.js';
import { readInputs } from '../src/io/input.js';
import { Rejects } from '../src/rejects.js';
import { deidentifyStage } from '../transforms/deidentify.js';
import { pretagStage, type PretagStats } from '../transforms/pretag.js';
import { toTransactionBundle } from '../transforms/toTransactionBundle.js';
import { hx, tempDir } from './support/cli.js';

const KEY = 'run-test-key';
const env = { HX_DEID_KEY: KEY };
const DEID = ['--profile', 'safe-harbor', '--as-of', '2025-01-01'];
let dir: string;
let corpus: string;

beforeAll(async () => {
  dir = tempDir('hx-run-');
  corpus = join(dir, 'corpus.ndjson');
  const out = createWriteStream(corpus);
  await writeCorpus(out, 600_000, 7);
  out.end();
  await once(out, 'finish');
});

/** `hx a … | hx b … | hx c …`: each process reads the previous one's stdout on its stdin. */
async function unixPipe(commands: string[][], input: string[]): Promise<Buffer> {
  let stdin: Buffer | undefined;
  for (const [i, args] of commands.entries()) {
    const r = await hx(i === 0 ? [...args, ...input] : args, { stdin, env });
    expect(r.code, r.stderr).toBe(0);
    stdin = r.stdout;
  }
  return stdin!;
}

describe('hx run', () => {
  it.each([1, 2])('writes the bytes of the unix pipe deid | pretag | bundle, in one process (--workers %i)', async (workers) => {
    const piped = await unixPipe([['deid', ...DEID], ['pretag'], ['bundle']], [corpus]);
    const out = join(dir, `run-${workers}.json`);
    const report = join(dir, `report-${workers}.json`);
    const r = await hx(['run', `deid ${DEID.join(' ')} | pretag | bundle -o ${out}`, corpus, '--report', report, '--workers', String(workers)], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(piped)).toBe(true);
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account.balanced).toBe(true);
    expect(account.workerThreads).toBe(workers - 1);
    // The corpus has contradictory smokers: the spool path of pretag was taken and tagged them.
    expect(account.stages.pretag.mode).toBe('spool');
    expect(account.stages.pretag.tagsAdded.smoking_contradiction).toBeGreaterThan(0);
    expect(account.stages.deid.profile).toBe('safe-harbor');
  });

  it.each([1, 2])('pretag first reads the files twice, as `hx pretag FILE` does (--workers %i)', async (workers) => {
    const piped = await unixPipe([['pretag'], ['bundle', '--max-entries', '50']], [corpus]);
    const report = join(dir, `report2-${workers}.json`);
    const r = await hx(['run', 'pretag | bundle --max-entries 50', corpus, '--report', report, '--workers', String(workers)], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.equals(piped)).toBe(true);
    expect(JSON.parse(readFileSync(report, 'utf8')).stages.pretag.mode).toBe('two-pass');
  });

  it('ends with NDJSON when the last stage does not write bytes itself, -o and --gzip given to run', async () => {
    const piped = await unixPipe([['deid', ...DEID], ['pretag', '--rules', 'h_flag_titer']], [corpus]);
    const out = join(dir, 'tagged.ndjson.gz');
    const r = await hx(['run', `deid ${DEID.join(' ')} | pretag --rules "h_flag_titer"`, corpus, '-o', out, '--gzip'], { env });
    expect(r.code, r.stderr).toBe(0);
    const { gunzipSync } = await import('node:zlib');
    expect(gunzipSync(readFileSync(out)).equals(piped)).toBe(true);
  });

  it.each([
    ['frob | bundle', /"frob" cannot be a stage/],
    ['deid --nope | bundle', /deid: Unknown argument: nope/],
    ['deid --profile nope', /deid: Invalid values/],
    ['bundle | pretag', /bundle writes the output, so it can only be the last stage/],
    ['deid -v | bundle', /-v applies to the whole run/],
    ['deid --rejects x.ndjson | bundle', /--rejects applies to the whole run/],
    ['deid -o x | bundle', /-o applies to the whole run/],
    ['deid --workers 2 | bundle', /--workers applies to the whole run/],
    ['deid || bundle', /empty stage/],
    ['deid "a', /unclosed double quote/],
    ['deid a.ndjson | bundle', /input files go after the pipeline/],
    ['bundle --max-entries 0', /--max-entries must be a whole number/],
  ])('refuses %s with exit 2 before reading any input', async (text, message) => {
    // A missing input would fail with exit 1 if it were read.
    const r = await hx(['run', text, join(dir, 'missing.ndjson')], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/no such file/);
  });
});

describe('splitPipeline', () => {
  it('splits stages and words as a shell would', () => {
    expect(splitPipeline(`deid --profile safe-harbor | pretag|bundle -o "my out.json"`)).toEqual([
      ['deid', '--profile', 'safe-harbor'],
      ['pretag'],
      ['bundle', '-o', 'my out.json'],
    ]);
    expect(splitPipeline(`a 'x | y' "q\\"r" s\\ t ''`)).toEqual([['a', 'x | y', 'q"r', 's t', '']]);
  });
});

describe('library composition', () => {
  it('stream.pipeline(source, deid, pretag, bundle, sink) parses each record once and writes the CLI bytes', async () => {
    const account = new Account();
    const ctx = { account, rejects: new Rejects(account) };
    const chunks: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk.toString());
        callback();
      },
    });
    const parse = JSON.parse;
    let parses = 0;
    JSON.parse = ((text: string, reviver?: (this: unknown, key: string, value: unknown) => unknown) => {
      parses++;
      return parse(text, reviver);
    }) as typeof JSON.parse;
    try {
      await pipeline(
        readInputs([corpus], ctx),
        deidentifyStage({ profile: 'safe-harbor', key: KEY, keySource: 'env', asOf: '2025-01-01' }, ctx),
        pretagStage({}, ctx),
        toTransactionBundle({ type: 'transaction', dedupe: true }, ctx),
        sink,
      );
    } finally {
      JSON.parse = parse;
    }
    const stats = account.stages.pretag as PretagStats;
    // One parse per line read, plus one for each smoking-status Observation back from pretag's spool.
    expect(parses).toBe(account.read + stats.smokingObservations);
    const cli = await hx(['run', `deid ${DEID.join(' ')} | pretag | bundle`, corpus], { env });
    expect(chunks.join('')).toBe(cli.stdout.toString());
  });
});
