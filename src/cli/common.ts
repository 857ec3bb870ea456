import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { availableParallelism } from 'node:os';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Argv } from 'yargs';
import { Account } from '../account.js';
import { HxError, asUserError } from '../errors.js';
import { inputSize, readInputs } from '../io/input.js';
import { openOutput, type Output } from '../io/output.js';
import { ndjsonSerialize } from '../io/serialize.js';
import { Progress } from '../progress.js';
import { Rejects } from '../rejects.js';
import type { StageContext } from '../stage.js';
import { DEFAULT_MAX_LINE_BYTES } from '../../transforms/ndjsonSplit.js';

/** Options every run shares, whatever its source. */
export interface RunArgs {
  rejects?: string;
  report?: string;
  verbose: boolean;
  progress?: boolean;
  'max-line-bytes': number;
}

/** Options every command that reads records from files or stdin shares. */
export interface InputArgs extends RunArgs {
  files: string[];
  unpack: boolean;
}

export interface OutputArgs {
  output?: string;
  gzip: boolean;
}

export function withInputOptions<T>(yargs: Argv<T>): Argv<T & InputArgs> {
  return withRunOptions(
    yargs.positional('files', {
      describe: 'NDJSON, Bundle JSON or .gz files (stdin when none, or "-")',
      type: 'string',
      array: true,
      default: [] as string[],
    }),
  ).option('unpack', {
    describe: 'Read the resources of Bundles rather than the Bundles (--no-unpack keeps them whole)',
    type: 'boolean',
    default: true,
  }) as unknown as Argv<T & InputArgs>;
}

/** The options of a run whatever its source (files, or a server for `hx fetch`). */
export function withRunOptions<T>(yargs: Argv<T>): Argv<T & RunArgs> {
  return yargs
    .option('rejects', {
      describe: 'Write rejected lines (with line number and reason) to FILE and go on, instead of stopping at the first',
      type: 'string',
      requiresArg: true,
    })
    .option('report', { describe: 'Write the account of the run to FILE as JSON', type: 'string', requiresArg: true })
    .option('verbose', { alias: 'v', describe: 'Print the account on stderr at the end', type: 'boolean', default: false })
    .option('progress', { describe: 'Show progress on stderr (default: when stderr is a terminal)', type: 'boolean' })
    .option('max-line-bytes', {
      describe: 'Longest line or Bundle entry accepted',
      type: 'number',
      default: DEFAULT_MAX_LINE_BYTES,
    }) as unknown as Argv<T & RunArgs>;
}

/** `--workers N` for commands whose per-record work can run in worker threads (`src/io/workers.ts`). */
export function withWorkersOption<T>(yargs: Argv<T>, byDefault: 'cores' | 1 = 'cores'): Argv<T & { workers: number }> {
  return yargs.option('workers', {
    describe: 'Parse, transform and write NDJSON lines on N threads: this one and N-1 worker threads (1: no worker)',
    type: 'number',
    default: byDefault === 'cores' ? availableParallelism() : 1,
    defaultDescription: byDefault === 'cores' ? 'the number of cores' : '1',
    requiresArg: true,
  }) as unknown as Argv<T & { workers: number }>;
}

export function withOutputOptions<T>(yargs: Argv<T>): Argv<T & OutputArgs> {
  return yargs
    .option('output', {
      alias: 'o',
      describe: 'Write to FILE (atomically: renamed into place when complete) instead of stdout',
      type: 'string',
      requiresArg: true,
    })
    .option('gzip', { describe: 'Compress the output with gzip', type: 'boolean', default: false }) as unknown as Argv<
    T & OutputArgs
  >;
}

export interface RunSpec {
  /** The run's options; `files`/`unpack` are read only when there is no `source`. */
  input: RunArgs & Partial<Pick<InputArgs, 'files' | 'unpack'>>;
  /** Batches from elsewhere than files or stdin (a server, for `hx fetch`); `onBytes` feeds the progress line. */
  source?: (ctx: StageContext, onBytes?: (bytes: number) => void) => Readable;
  /** Per-record stages, in order. */
  stages?: (ctx: StageContext) => Transform[];
  /** Batches → bytes; NDJSON by default. */
  serializer?: (ctx: StageContext) => Transform;
  /** Where bytes go; `openOutput` of these options by default. */
  output?: OutputArgs;
  /** Read NDJSON lines unparsed (`RawLines`), for a serializer that parses them in worker threads. */
  rawLines?: boolean;
  /**
   * The first stage writes every record afresh: do not keep the text each was
   * read from (`Batch.texts`; for a Bundle document, the bytes of each entry's
   * resource, which cost a decoding each).
   */
  ignoresTexts?: boolean;
  /** A sink that takes Batches itself (count, split) instead of serializer + output. */
  sink?: (ctx: StageContext) => Writable & { finish?: () => Promise<void> };
}

/**
 * Runs input → stages → serializer → output with the shared policies: exact
 * account, rejects, progress, atomic output, quiet exit on a closed stdout.
 * Returns the account; throws HxError for the CLI to print.
 */
export async function runRecords(spec: RunSpec): Promise<Account> {
  const { input } = spec;
  // A report or reject file that cannot be written fails the run now, not once the input is read.
  for (const path of [input.report, input.rejects]) if (path) prepareFile(path);
  const account = new Account();
  account.onWarning = (message) => process.stderr.write(`hx: warning: ${message}\n`);
  const rejects = new Rejects(account, input.rejects);
  const ctx: StageContext = { account, rejects };
  const showProgress = input.progress ?? Boolean(process.stderr.isTTY);
  const files = input.files ?? [];
  const progress = showProgress ? new Progress(account, spec.source ? undefined : inputSize(files)).start() : undefined;
  const onBytes = progress ? (bytes: number) => progress.setBytes(bytes) : undefined;
  const source = spec.source
    ? spec.source(ctx, onBytes)
    : readInputs(files, { ...ctx, maxLineBytes: input['max-line-bytes'], unpackBundles: input.unpack ?? true, rawLines: spec.rawLines, keepTexts: !spec.ignoresTexts, onBytes });
  const stages = spec.stages?.(ctx) ?? [];
  let output: Output | undefined;
  try {
    if (spec.sink) {
      const sink = spec.sink(ctx);
      await pipeline([source, ...stages, sink]);
      await sink.finish?.();
    } else {
      output = openOutput({ path: spec.output?.output, gzip: spec.output?.gzip });
      const serializer = spec.serializer?.(ctx) ?? ndjsonSerialize(account);
      await pipeline([source, ...stages, serializer, output.stream], { end: output.stream !== process.stdout });
      await output.commit();
    }
    await rejects.close();
  } catch (err) {
    output?.abort();
    progress?.stop();
    if (isClosedPipe(err)) process.exit(0);
    writeReport(input, account, err as Error);
    throw err;
  }
  progress?.stop();
  writeReport(input, account);
  return account;
}

/** Makes the directory of an output file; fails when the file cannot be made there. */
function prepareFile(path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  if (existsSync(path) && statSync(path).isDirectory()) throw new HxError(`${path}: is a directory`);
}

function writeReport(input: RunArgs, account: Account, error?: Error): void {
  if (input.report) {
    const report = { ...account.toJSON(), ...(error ? { failed: asUserError(error)?.message ?? 'internal error' } : {}) };
    writeFileSync(input.report, JSON.stringify(report, null, 2) + '\n');
  }
  if (input.verbose) process.stderr.write(`hx: ${account.summary()}\n`);
}

function isClosedPipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'EPIPE' || (err as NodeJS.ErrnoException)?.code === 'ERR_STREAM_PREMATURE_CLOSE' && process.stdout.destroyed;
}
