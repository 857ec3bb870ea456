import { existsSync, statSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CommandModule } from 'yargs';
import { Account } from '../../account.js';
import { HxError } from '../../errors.js';
import { readInputs } from '../../io/input.js';
import { Rejects } from '../../rejects.js';
import { DEFAULT_MAX_LINE_BYTES } from '../../../transforms/ndjsonSplit.js';
import type { IngestStats } from '../../../transforms/postIngest.js';
import type { InputArgs } from '../common.js';
import { dryRunHeader, ingestSummary, postSettings, runPost, withPostOptions, type PostArgs } from './ingest.js';

interface ImportArgs extends PostArgs {
  'bundle-file': string;
  'tenant-id': string;
  report?: string;
  verbose: boolean;
  progress?: boolean;
}

/**
 * `import_healthex.py`'s interface: one Bundle file into one tenant, with
 * its errors (missing file, invalid JSON, not a Bundle, no secret), checked
 * before anything is sent. hx then posts it in chunks (the Python script's
 * single request fails at the server's 16 MiB limit).
 */
export const importCommand: CommandModule<object, ImportArgs> = {
  command: 'import',
  describe: 'Import a FHIR Bundle file into HealthClaw with step-up auth (import_healthex.py), in chunks',
  builder: (yargs) =>
    withPostOptions(yargs)
      .option('bundle-file', { describe: 'Path to a FHIR R4 Bundle JSON file (any size)', type: 'string', demandOption: true, requiresArg: true })
      .option('tenant-id', { describe: 'Tenant ID to store resources under', type: 'string', default: 'desktop-demo', requiresArg: true })
      .option('report', { describe: 'Write the account of the run to FILE as JSON', type: 'string', requiresArg: true })
      .option('verbose', { alias: 'v', describe: 'Print the account on stderr at the end', type: 'boolean', default: false })
      .option('progress', { describe: 'Show progress on stderr', type: 'boolean' })
      .example('hx import --bundle-file exports/healthex-2026-11-23.json --tenant-id ev-archive', 'secret from $STEP_UP_SECRET')
      .example('hx import --bundle-file big.json --tenant-id t --checkpoint big.ckpt', 'resumable: rerun after a failure sends only the rest')
      .example('hx import --bundle-file my-records.json --dry-run', 'validate and show the headers (token as ***), send nothing'),
  handler: async (argv) => {
    const path = argv['bundle-file'];
    if (!existsSync(path)) throw new HxError(`ERROR: Bundle file not found: ${path}`);
    if (statSync(path).isDirectory()) throw new HxError(`ERROR: Bundle file not found: ${path} is a directory`);
    const entries = await checkBundleFile(path);
    const settings = postSettings(argv, 'ingest', argv['tenant-id']);
    if (settings.dryRun) {
      process.stdout.write(dryRunHeader(settings));
      process.stdout.write(`Bundle entries: ${entries}\n`);
    } else process.stdout.write(`POSTing bundle (${entries} entries) to ${settings.target.base}/Bundle/$ingest-context ...\n`);
    const input: InputArgs = {
      files: [path],
      unpack: true,
      report: argv.report,
      verbose: argv.verbose,
      progress: argv.progress,
      'max-line-bytes': DEFAULT_MAX_LINE_BYTES,
    };
    const account = await runPost(input, settings, (text) => process.stderr.write(text));
    const stats = account.stages.ingest as IngestStats;
    process.stdout.write(ingestSummary(stats, settings.dryRun));
    if (!settings.dryRun) process.stdout.write(`\nIngested successfully. ${stats.contextIds.length === 1 ? `context_id = ${stats.contextIds[0]}` : `${stats.contextIds.length} context ids`}\n`);
  },
};

/**
 * The Python script's checks, streamed: the file is JSON, and a Bundle.
 * Returns its entry count. Reads the file once (it may be far larger than
 * memory); messages name the line, never the content.
 */
async function checkBundleFile(path: string): Promise<number> {
  const account = new Account();
  let bundles = 0;
  let firstType: string | undefined;
  let entries = 0;
  // Without a reject file, the first bad record stops the read with its place and reason.
  const source = readInputs([path], {
    account,
    rejects: new Rejects(account),
    onBundle: () => bundles++,
  });
  const sink = new Writable({
    objectMode: true,
    write(batch: { resources: { resourceType: string }[] }, _encoding, callback) {
      firstType ??= batch.resources[0]?.resourceType;
      entries += batch.resources.length;
      callback();
    },
  });
  try {
    await pipeline(source, sink);
  } catch (err) {
    if (err instanceof HxError) throw new HxError(`ERROR: Invalid JSON in bundle file: ${err.message}`);
    throw err;
  }
  if (bundles !== 1) {
    throw new HxError(`ERROR: Expected resourceType Bundle, got ${bundles > 1 ? 'several Bundles' : (firstType ?? 'None')}`);
  }
  return entries;
}
