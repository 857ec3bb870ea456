import yargs, { type ArgumentsCamelCase, type CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import { checkWorkers } from '../../io/workers.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { withoutHelpCache } from '../helpCache.js';
import { composePlans, inWorkers, runPlan, splitPipeline, type StageCommand, type StagePlan } from '../pipeline.js';

interface RunArgs extends InputArgs, OutputArgs {
  pipeline: string;
  workers: number;
}

/** The commands that can be stages, loaded only when named. */
const STAGES: Record<string, () => Promise<StageCommand<never>>> = {
  cat: async () => (await import('./cat.js')).catStage as never,
  deid: async () => (await import('./deid.js')).deidStage as never,
  pretag: async () => (await import('./pretag.js')).pretagStage as never,
  bundle: async () => (await import('./bundle.js')).bundleStage as never,
};

/** Options that belong to the whole run (given once, to `hx run`), with their aliases. */
const RUN_WIDE = new Set(['rejects', 'report', 'verbose', 'v', 'progress', 'max-line-bytes', 'maxLineBytes', 'unpack', 'output', 'o', 'gzip', 'workers']);
/** Of these, the ones the last stage may carry, as the user writes the pipe (`… | bundle -o out.json`). */
const LAST_STAGE_MAY_HAVE = new Set(['output', 'o', 'gzip']);

export const runCommand: CommandModule<object, RunArgs> = {
  command: 'run <pipeline> [files..]',
  describe: 'Run a pipe of transforms ("deid | pretag | bundle") in one process: one parse and one serialisation per resource',
  builder: (y) =>
    withWorkersOption(withOutputOptions(withInputOptions(y)))
      .positional('pipeline', {
        describe: `Stages separated by "|", each a command with its own options (stages: ${Object.keys(STAGES).join(', ')})`,
        type: 'string',
      })
      .example('hx run "deid --profile safe-harbor | pretag | bundle -o out.json" bulk/*.ndjson', 'the pipe, in one process')
      .example('hx run "deid | pretag" -v --rejects bad.ndjson export.ndjson > tagged.ndjson', 'run-wide options go to hx run')
      .example('hx run "deid | bundle" --workers 1 export.ndjson > bundle.json', 'on one thread (less memory)')
      .epilogue(
        'Output is byte-identical to the same commands joined by a unix pipe. Each stage takes the options of its ' +
          'command; the options of the whole run (files, --rejects, --report, -v, --progress, --max-line-bytes, ' +
          '--no-unpack, -o, --gzip, --workers) are given once to hx run (-o and --gzip may also close the last stage). Only the ' +
          'last stage may write bytes (bundle). pretag reads regular input files twice, keeping input order, only ' +
          'when it is the first stage; after a stage that changes records (deid) it spools the smoking-status ' +
          'Observations and writes them last, as `hx deid | hx pretag` does.\n\n' +
          'With --workers N (default: the cores), N threads (this one and N-1 workers) parse the NDJSON lines and run ' +
          'every stage\'s per-record work; this thread keeps what spans records (bundle\'s dedupe set and open Bundle, pretag\'s ' +
          'spool and patient table) and writes in input order, so the bytes are those of one thread. bundle --dir ' +
          'keeps the run on one thread.',
      ) as never,
  handler: async (argv) => {
    const plans = await planStages(argv);
    await runPlan(argv, inWorkers(plans, checkWorkers(argv.workers), argv) ?? composePlans(plans));
  },
};

/**
 * Parses and checks every stage, before any input is read: an unknown stage
 * or option, or a misplaced one, is a usage error.
 */
async function planStages(argv: ArgumentsCamelCase<RunArgs>): Promise<StagePlan[]> {
  let words: string[][];
  try {
    words = splitPipeline(argv.pipeline);
  } catch (err) {
    throw new UsageError(`run: ${(err as Error).message} in the pipeline`);
  }
  if (words.some((stage) => stage.length === 0)) throw new UsageError('run: empty stage in the pipeline (a "|" too many?)');
  const commands = await Promise.all(
    words.map(([name]) => {
      const load = STAGES[name!];
      if (!load) throw new UsageError(`run: "${name}" cannot be a stage (stages: ${Object.keys(STAGES).join(', ')})`);
      return load();
    }),
  );
  const stageArgs = words.map(([name, ...rest], i) => parseStage(commands[i]!, name!, rest, i === words.length - 1));
  const last = stageArgs.at(-1)!;
  if (last.output !== undefined && argv.output !== undefined) throw new UsageError('run: -o given twice (to hx run and to the last stage)');
  const shared = {
    files: argv.files,
    rejects: argv.rejects,
    report: argv.report,
    verbose: argv.verbose,
    progress: argv.progress,
    'max-line-bytes': argv['max-line-bytes'],
    maxLineBytes: argv['max-line-bytes'],
    unpack: argv.unpack,
    output: argv.output ?? last.output,
    gzip: argv.gzip || last.gzip,
  };
  argv.output = shared.output;
  argv.gzip = shared.gzip;
  return stageArgs.map((stage, i) => {
    Object.assign(stage, shared);
    const plan = commands[i]!.plan(stage as never, { readsInput: i === 0 });
    if ((plan.serializer || plan.sink) && i < words.length - 1) {
      throw new UsageError(`run: ${words[i]![0]} writes the output, so it can only be the last stage`);
    }
    return plan;
  });
}

/** One stage's words, parsed with its command's own options. */
function parseStage(command: StageCommand<never>, name: string, words: string[], last: boolean): ArgumentsCamelCase<InputArgs & OutputArgs> {
  for (const word of words) {
    const option = /^--?(?:no-)?([^=]+)/.exec(word)?.[1];
    if (option === undefined || !RUN_WIDE.has(option) || (last && LAST_STAGE_MAY_HAVE.has(option))) continue;
    throw new UsageError(`run: ${word} applies to the whole run: give it to hx run, not to the ${name} stage`);
  }
  let parsed: ArgumentsCamelCase<InputArgs & OutputArgs> | undefined;
  withoutHelpCache(yargs())
    .scriptName('hx run')
    .command({ ...(command.command as CommandModule<object, InputArgs & OutputArgs>), handler: (argv) => void (parsed = argv) })
    .strict()
    .help(false)
    .version(false)
    .exitProcess(false)
    .fail((message, error) => {
      throw error ?? new UsageError(`run: ${name}: ${message}`);
    })
    .parseSync([name, ...words]);
  if (!parsed) throw new UsageError(`run: ${name}: could not parse its options`);
  if (parsed.files.length > 0) throw new UsageError(`run: ${name}: input files go after the pipeline, to hx run`);
  return parsed;
}
