import type { CommandModule } from 'yargs';
import { Account } from '../../account.js';
import { UsageError } from '../../errors.js';
import { CollisionIndex } from '../../fasten/collisions.js';
import { SpoolDir, download, fastenCredentials, readFastenInputs, type FastenInput } from '../../fasten/read.js';
import type { Misfiled } from '../../fasten/split.js';
import { HttpClient } from '../../http/client.js';
import { Rejects } from '../../rejects.js';
import { FASTEN_DEFAULT_TYPES, fastenConvert, fastenStats, indexCollisions, type FastenOptions } from '../../../transforms/fastenConvert.js';
import { toTransactionBundle } from '../../../transforms/toTransactionBundle.js';
import { runRecords, withInputOptions, withOutputOptions, type InputArgs, type OutputArgs } from '../common.js';

interface FastenArgs extends InputArgs, OutputArgs {
  url?: string[];
  types?: string[];
  'all-types': boolean;
  bundle: boolean;
  pretty: boolean;
  'spool-dir'?: string;
}

/** Misfiled resources named one by one before only their count is given. */
const MISFILED_SHOWN = 10;

export const fastenCommand: CommandModule<object, FastenArgs> = {
  command: 'fasten [files..]',
  describe: 'Convert Fasten Health exports (export JSON or Fasten Connect NDJSON) to FHIR resources, newest version of each',
  builder: (yargs) =>
    withOutputOptions(withInputOptions(yargs))
      .option('url', {
        describe:
          'Download a Fasten Connect file (streamed to a temporary file); Basic auth from FASTEN_PUBLIC_KEY/FASTEN_PRIVATE_KEY is sent only to https hosts under fastenhealth.com',
        type: 'string',
        array: true,
        requiresArg: true,
      })
      .option('types', {
        describe: `Resource types to keep (default: ${FASTEN_DEFAULT_TYPES.join(' ')})`,
        type: 'string',
        array: true,
      })
      .option('all-types', { describe: 'Keep every resource type (overrides --types)', type: 'boolean', default: false })
      .option('bundle', { describe: 'Write one FHIR transaction Bundle (as `hx fasten … | hx bundle`)', type: 'boolean', default: false })
      .option('pretty', { describe: 'With --bundle: indent like convert_fasten.py (json.dump indent=2)', type: 'boolean', default: false })
      .option('spool-dir', { describe: 'Folder for the copy of stdin or a download (default: $TMPDIR)', type: 'string', requiresArg: true })
      .example('hx fasten health-records-2026-01-15.json -o fasten.ndjson', 'a Fasten export file → NDJSON, the newest version of each resource')
      .example('hx fasten a.json b.json --bundle -o healthclaw-bundle.json', 'merge two exports into one transaction Bundle (convert_fasten.py)')
      .example('hx fasten --url "$DOWNLOAD_URL" --all-types | hx ingest --tenant-id me', 'a Fasten Connect download, every type, into HealthClaw')
      .example('zcat export.ndjson.gz | hx fasten --types Patient Observation -v > out.ndjson', 'stdin, two types, with the account'),
  handler: async (argv) => {
    if (argv.pretty && !argv.bundle) throw new UsageError('--pretty goes with --bundle');
    const options: FastenOptions = { types: argv['all-types'] ? undefined : new Set(argv.types?.length ? argv.types : FASTEN_DEFAULT_TYPES) };
    const spool = await SpoolDir.create(argv['spool-dir']);
    try {
      const inputs = await gatherInputs(argv, spool);
      // Pass 1: the collision index. Rejects and warnings are pass 2's to report.
      const scratch = new Account();
      const quiet = new QuietRejects(scratch);
      const read = (ctx: { account: Account; rejects: Rejects }, onMisfiled?: (m: Misfiled) => void) =>
        readFastenInputs(inputs, { ...ctx, maxLineBytes: argv['max-line-bytes'], unpackBundles: argv.unpack, onMisfiled });
      const index = await indexCollisions(read({ account: scratch, rejects: quiet }), options, new CollisionIndex());
      let misfiled = 0;
      const account = await runRecords({
        input: argv,
        output: argv,
        source: (ctx) =>
          read(ctx, (m) => {
            fastenStats(ctx.account).misfiled = ++misfiled;
            const text = `${m.source}:${m.line}: filed under ${m.mapType} but resourceType is ${m.resourceType} (kept as ${m.resourceType})`;
            if (misfiled <= MISFILED_SHOWN) ctx.account.warn(text);
            else if (misfiled === MISFILED_SHOWN + 1) ctx.account.warn('more misfiled resources: only their count is reported');
          }),
        stages: (ctx) => [fastenConvert(index, options, ctx)],
        serializer: argv.bundle ? (ctx) => toTransactionBundle({ pretty: argv.pretty }, ctx) : undefined,
      });
      if (argv.verbose || argv.output) printSummary(account);
    } finally {
      await spool.close();
    }
  },
};

/** Files as given; stdin and downloads copied to the spool first (they are read twice). */
async function gatherInputs(argv: FastenArgs, spool: SpoolDir): Promise<FastenInput[]> {
  const inputs: FastenInput[] = [];
  const urls = argv.url ?? [];
  const files = argv.files.length > 0 || urls.length > 0 ? argv.files : ['-'];
  for (const file of files) {
    inputs.push(file === '-' ? { path: await spool.copy(process.stdin), name: '-' } : { path: file, name: file });
  }
  for (const text of urls) {
    if (!URL.canParse(text)) throw new UsageError('--url must be an absolute URL');
    const url = new URL(text);
    const authorization = fastenCredentials(url, process.env);
    if (!authorization && process.env.FASTEN_PUBLIC_KEY && process.env.FASTEN_PRIVATE_KEY) {
      process.stderr.write(`hx: not sending the Fasten keys to ${url.protocol}//${url.host}: only to https hosts under fastenhealth.com\n`);
    }
    const client = new HttpClient({
      trustedOrigin: authorization ? url.origin : undefined,
      credentials: authorization ? () => ({ authorization }) : undefined,
      onRetry: (n) => process.stderr.write(`hx: ${n.what}: ${n.reason}; retrying in ${Math.round(n.delayMs / 100) / 10} s\n`),
    });
    const name = client.redactor.url(url);
    try {
      inputs.push({ path: await download(client, url, spool, `download ${name}`), name });
    } finally {
      await client.close();
    }
  }
  return inputs;
}

/** The Python script's summary (per type, sorted, and the total), on stderr. */
function printSummary(account: Account): void {
  const stats = fastenStats(account);
  let text = 'Resource counts:\n';
  for (const [type, n] of [...account.writtenByType].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) text += `  ${type}: ${n}\n`;
  text += `  TOTAL: ${account.written}\n`;
  text += `dropped: ${stats.superseded} superseded, ${stats.withoutId} without id, ${stats.typeNotSelected} of other types; ${stats.misfiled} misfiled\n`;
  process.stderr.write(text);
}

/** Pass 1 sees the same bad records as pass 2, which reports them: here they are only skipped. */
class QuietRejects extends Rejects {
  override reject(): void {}
}
