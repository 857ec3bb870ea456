import type { Argv, CommandModule } from 'yargs';
import type { Account } from '../../account.js';
import { UsageError } from '../../errors.js';
import { Checkpoint } from '../../ingest/checkpoint.js';
import { DEFAULT_BASE_URL, checkTarget, ingestClient, postHeaders, postUrl, type IngestTarget } from '../../ingest/target.js';
import {
  DEFAULT_INGEST_BYTES,
  DEFAULT_INGEST_ENTRIES,
  DEFAULT_INGEST_CONCURRENCY,
  postIngest,
  type IngestMode,
  type IngestStats,
} from '../../../transforms/postIngest.js';
import { parseByteSize } from './bundle.js';
import { runRecords, withInputOptions, type InputArgs } from '../common.js';

/** Options shared by `hx ingest`, `hx import` and `hx export-healthex --import`. */
export interface PostArgs {
  'base-url': string;
  'step-up-secret'?: string;
  concurrency: number;
  'max-bytes': string;
  'max-entries': number;
  checkpoint?: string;
  'dry-run': boolean;
}

export function withPostOptions<T>(yargs: Argv<T>): Argv<T & PostArgs> {
  return yargs
    .option('base-url', { describe: 'FHIR base URL', type: 'string', default: process.env.FHIR_LOCAL_BASE_URL ?? DEFAULT_BASE_URL })
    .option('step-up-secret', {
      describe: 'HMAC secret for step-up tokens (default: $STEP_UP_SECRET); never printed',
      type: 'string',
      requiresArg: true,
    })
    .option('concurrency', { describe: 'Bundles in flight at once', type: 'number', default: DEFAULT_INGEST_CONCURRENCY })
    .option('max-bytes', { describe: 'Largest Bundle posted (the server refuses 16 MiB)', type: 'string', default: `${DEFAULT_INGEST_BYTES / (1024 * 1024)}MiB` })
    .option('max-entries', { describe: 'Most entries per Bundle posted', type: 'number', default: DEFAULT_INGEST_ENTRIES })
    .option('checkpoint', {
      describe: 'Record acknowledged Bundles in FILE; rerunning the same command sends only the rest',
      type: 'string',
      requiresArg: true,
    })
    .option('dry-run', { describe: 'Show what would be sent (token as ***) and send nothing', type: 'boolean', default: false }) as unknown as Argv<
    T & PostArgs
  >;
}

export interface PostSettings {
  target: IngestTarget;
  maxBytes: number;
  maxEntries: number;
  concurrency: number;
  checkpoint?: string;
  dryRun: boolean;
}

export function postSettings(argv: PostArgs, mode: IngestMode, tenant: string | undefined): PostSettings {
  const maxEntries = argv['max-entries'];
  if (!(Number.isInteger(maxEntries) && maxEntries >= 1)) throw new UsageError('--max-entries must be a whole number of at least 1');
  const concurrency = argv.concurrency;
  if (!(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 64)) throw new UsageError('--concurrency must be a whole number from 1 to 64');
  const maxBytes = parseByteSize(argv['max-bytes'], '--max-bytes');
  const secret = argv['step-up-secret'] ?? process.env.STEP_UP_SECRET ?? undefined;
  const target = checkTarget({ base: argv['base-url'], mode, tenant, secret: secret || undefined });
  return { target, maxBytes, maxEntries, concurrency, checkpoint: argv.checkpoint, dryRun: argv['dry-run'] };
}

/** What a dry run would send: the URL, the headers with the token masked. */
export function dryRunHeader(settings: PostSettings): string {
  const headers = postHeaders(settings.target, () => '***');
  return `DRY RUN — would POST to: ${postUrl(settings.target)}\nHeaders: ${JSON.stringify(headers, null, 2)}\n`;
}

/**
 * Runs one post of `files` (resources or Bundles) with the shared run
 * policies; returns the account (its `stages.ingest` holds the sums).
 */
export async function runPost(input: InputArgs, settings: PostSettings, log: (text: string) => void): Promise<Account> {
  const { target } = settings;
  const client = ingestClient(target, (text) => log(`hx: ${text}\n`));
  // Everything that decides how chunks are cut and where they go: a checkpoint is only valid for the same.
  const identity = `${target.mode} ${postUrl(target)} tenant=${target.tenant ?? '-'} max-bytes=${settings.maxBytes} max-entries=${settings.maxEntries}`;
  const checkpoint = settings.checkpoint ? Checkpoint.open(settings.checkpoint, identity) : undefined;
  try {
    return await runRecords({
      input,
      sink: (ctx) =>
        postIngest(
          {
            base: target.base,
            mode: target.mode,
            client,
            maxBytes: settings.maxBytes,
            maxEntries: settings.maxEntries,
            concurrency: settings.concurrency,
            checkpoint,
            dryRun: settings.dryRun,
          },
          ctx,
        ),
    });
  } finally {
    await client.close();
  }
}

/** The summed answers, for people. */
export function ingestSummary(stats: IngestStats, dryRun: boolean): string {
  if (dryRun) return `Bundles: ${stats.chunks} (nothing sent)\n`;
  let text = `Bundles posted: ${stats.chunksPosted}`;
  if (stats.chunksResumed) text += ` (+${stats.chunksResumed} acknowledged by an earlier run)`;
  if (stats.splits) text += `, ${stats.splits} split after HTTP 413`;
  text += `\nResources sent: ${stats.sent}; stored: ${stats.resourceCount}; skipped: ${stats.skippedCount}`;
  const skipped = Object.entries(stats.skippedTypes).sort(([a], [b]) => (a < b ? -1 : 1));
  if (skipped.length) text += ` (${skipped.map(([type, n]) => `${type} ${n}`).join(', ')})`;
  text += '\n';
  if (stats.total && stats.chunksResumed) {
    text += `Whole import: ${stats.total.chunks} Bundles, ${stats.total.sent} sent, ${stats.total.resourceCount} stored, ${stats.total.skippedCount} skipped\n`;
  }
  if (stats.contextIds.length === 1) text += `context_id = ${stats.contextIds[0]}\n`;
  else if (stats.contextIds.length > 1) text += `context_ids: ${stats.contextIds.length} (one per Bundle; see --report)\n`;
  return text;
}

interface IngestArgs extends InputArgs, PostArgs {
  'tenant-id'?: string;
  mode: IngestMode;
}

export const ingestCommand: CommandModule<object, IngestArgs> = {
  command: 'ingest [files..]',
  describe: 'Post resources to HealthClaw ($ingest-context) or any FHIR server (transaction), in Bundles under the size limit',
  builder: (yargs) =>
    withPostOptions(withInputOptions(yargs))
      .option('tenant-id', { describe: 'Tenant to store into (X-Tenant-ID); required with --mode ingest', type: 'string', requiresArg: true })
      .option('mode', {
        describe: 'ingest: POST {base}/Bundle/$ingest-context (HealthClaw); transaction: POST {base} (any FHIR server)',
        choices: ['ingest', 'transaction'] as const,
        default: 'ingest' as IngestMode,
      })
      .example('hx ingest export.ndjson --tenant-id ev-archive', 'post to a local HealthClaw (secret from $STEP_UP_SECRET)')
      .example('hx fasten --url "$URL" | hx deid | hx ingest --tenant-id me --checkpoint me.ckpt', 'a Fasten download into HealthClaw, resumable')
      .example('hx ingest bulk/*.ndjson.gz --mode transaction --base-url http://localhost:8080/fhir', 'transactions to a plain FHIR server')
      .example('hx ingest healthex.json --tenant-id t --dry-run', 'show the Bundles and headers, send nothing'),
  handler: async (argv) => {
    const settings = postSettings(argv, argv.mode, argv['tenant-id']);
    if (settings.dryRun) process.stderr.write(dryRunHeader(settings));
    const account = await runPost(argv, settings, (text) => process.stderr.write(text));
    process.stderr.write(ingestSummary(account.stages.ingest as IngestStats, settings.dryRun));
  },
};
