import type { CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import { bundleOutput, checkWorkers } from '../../io/workers.js';
import { BundleAssembler, BUNDLE_TYPES, bundleFiles, toTransactionBundle, type BundleOptions, type BundleStats, type BundleType } from '../../../transforms/toTransactionBundle.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { inWorkers, runPlan, type StageCommand, type StagePlan } from '../pipeline.js';

interface BundleArgs extends InputArgs, OutputArgs {
  workers: number;
  type: BundleType;
  'full-url'?: string;
  'max-entries'?: number;
  'max-bytes'?: string;
  dir?: string;
  dedupe: boolean;
  pretty: boolean;
}

export const bundleCommand: CommandModule<object, BundleArgs> = {
  command: 'bundle [files..]',
  describe: 'Write the resources as one FHIR transaction Bundle, or as Bundles of a bounded size (one per line, or one per file)',
  builder: (yargs) =>
    // Opt-in, as for pretag: each worker thread costs ~50 MB on top of the dedupe set.
    withWorkersOption(withOutputOptions(withInputOptions(yargs)), 1)
      .option('type', { describe: 'Bundle.type (collection entries carry no request)', choices: BUNDLE_TYPES, default: 'transaction' as BundleType })
      .option('full-url', { describe: 'Give each entry fullUrl = BASE/Type/id', type: 'string', requiresArg: true })
      .option('max-entries', { describe: 'Cut into Bundles of at most N entries, written one per line (NDJSON)', type: 'number', requiresArg: true })
      .option('max-bytes', {
        describe: 'Cut into Bundles of at most B bytes (head and tail included; 8MiB, 500KB, 2M… accepted), one per line',
        type: 'string',
        requiresArg: true,
      })
      .option('dir', { describe: 'Write each Bundle to DIR/bundle-000001.json, … instead', type: 'string', requiresArg: true })
      .option('dedupe', {
        describe: 'Keep only the first resource of each (type, id) over the whole run, all chunks included (--no-dedupe keeps all)',
        type: 'boolean',
        default: true,
      })
      .option('pretty', { describe: 'Indent with two spaces, like the Python exporter (not with NDJSON chunks)', type: 'boolean', default: false })
      .example('hx bundle export.ndjson -o healthex.json', 'one transaction Bundle, as export_healthex.py writes it')
      .example('hx deid bulk/*.ndjson.gz | hx pretag | hx bundle --max-bytes 8MiB --max-entries 1000 > chunks.ndjson', 'Bundles ready to post, one per line')
      .example('hx bundle export.ndjson --max-bytes 8MiB --dir out/', 'the same, one file per Bundle')
      .example('hx bundle a.ndjson --type collection --full-url https://example.org/fhir --pretty', 'a readable collection Bundle')
      .example('hx bundle --workers 2 export.ndjson -o export.json', 'entries made on two threads, this one and a worker (not with --dir)'),
  handler: async (argv) => {
    const plan = bundlePlan(argv);
    await runPlan(argv, inWorkers([plan], checkWorkers(argv.workers), argv) ?? plan);
  },
};

/** As a stage of `hx run`: it writes the bytes, so it can only be the last. */
export const bundleStage: StageCommand<BundleArgs> = { command: bundleCommand, plan: (argv) => bundlePlan(argv) };

function bundlePlan(argv: BundleArgs): StagePlan {
  const options = bundleOptions(argv);
  const dir = argv.dir;
  return {
    ...(dir === undefined
      ? {
          serializer: (ctx) => toTransactionBundle(options, ctx),
          parallelOutput: (ctx) => bundleOutput({ kind: 'bundle', options }, (emit) => new BundleAssembler(options, ctx, emit)),
        }
      : { sink: (ctx) => bundleFiles(dir, options, ctx) }),
    finish: (account) => {
      if (!account || !argv.verbose) return;
      const stats = account.stages.bundle as BundleStats;
      const bundles = stats.chunks === 1 ? '1 Bundle' : `${stats.chunks} Bundles`;
      process.stderr.write(
        `hx: bundle: ${stats.entries} entries in ${bundles}, ${stats.duplicatesDropped} duplicates dropped, ${stats.withoutId} without id\n`,
      );
    },
  };
}

function bundleOptions(argv: BundleArgs): BundleOptions {
  const maxEntries = argv['max-entries'];
  if (maxEntries !== undefined && !(Number.isInteger(maxEntries) && maxEntries >= 1)) {
    throw new UsageError('--max-entries must be a whole number of at least 1');
  }
  const maxBytes = argv['max-bytes'] === undefined ? undefined : parseByteSize(argv['max-bytes'], '--max-bytes');
  const chunked = maxEntries !== undefined || maxBytes !== undefined;
  if (argv.dir !== undefined && argv.output !== undefined) throw new UsageError('--dir and --output exclude each other');
  if (argv.dir !== undefined && argv.gzip) throw new UsageError('--gzip is for --output, not --dir');
  if (argv.pretty && chunked && argv.dir === undefined) {
    throw new UsageError('--pretty cannot be one Bundle per line: use --dir, or drop --max-entries/--max-bytes');
  }
  let fullUrl = argv['full-url'];
  if (fullUrl !== undefined) {
    if (!URL.canParse(fullUrl)) throw new UsageError('--full-url must be an absolute URL, such as https://example.org/fhir');
    fullUrl = fullUrl.replace(/\/+$/, '');
  }
  return { type: argv.type, fullUrl, pretty: argv.pretty, dedupe: argv.dedupe, maxEntries, maxBytes };
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
};

/** `16777216`, `8MiB`, `8M` (binary, like split -b), `500KB` (decimal) → bytes. */
export function parseByteSize(text: string, option: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new UsageError(`${option}: not a size (examples: 16777216, 8MiB, 500KB)`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (bytes < 1) throw new UsageError(`${option} must be at least 1 byte`);
  return bytes;
}
