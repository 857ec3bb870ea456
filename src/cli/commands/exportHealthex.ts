import type { Transform } from 'node:stream';
import type { CommandModule } from 'yargs';
import type { Account } from '../../account.js';
import { UsageError } from '../../errors.js';
import { StepUpTokens, checkTenant } from '../../healthclaw/stepUp.js';
import { HttpClient } from '../../http/client.js';
import { rateLimitNotice } from '../../http/rateLimit.js';
import { Redactor } from '../../http/redact.js';
import { countingSink } from '../../io/countingSink.js';
import { createDeidentifier, deidentifyStage } from '../../../transforms/deidentify.js';
import { EXPORT_TYPES, fetchPages, fetchStage, trimBase, typeSearches } from '../../../transforms/fetchPages.js';
import { pretagStage, type PretagStats } from '../../../transforms/pretag.js';
import { toTransactionBundle, type BundleStats } from '../../../transforms/toTransactionBundle.js';
import type { IngestStats } from '../../../transforms/postIngest.js';
import { runRecords, withRunOptions, type InputArgs, type RunArgs } from '../common.js';
import { ingestSummary, postSettings, runPost, withPostOptions, type PostArgs } from './ingest.js';
import { RESOURCE_TYPE_NAME } from '../../util/fhirSyntax.js';

interface ExportArgs extends RunArgs, PostArgs {
  'tenant-id': string;
  types?: string[];
  output?: string;
  import: boolean;
  'import-tenant'?: string;
  'import-base-url'?: string;
  deidentify: boolean;
  pretag: boolean;
  'temp-dir'?: string;
  pretty: boolean;
}

/** Pseudonym key of the Patient identifier injected by de-identification (random per run without it). */
const KEY_ENV = 'HX_DEID_KEY';

/**
 * `export_healthex.py` as one streaming command: every page of every type of
 * a HealthClaw tenant → de-identification (export profile) → Curatr
 * pre-tags → one transaction Bundle written to a file, in one process and
 * constant memory; then, with `--import`, that file posted to another tenant
 * in chunks. The console follows the Python script's layout.
 */
export const exportHealthexCommand: CommandModule<object, ExportArgs> = {
  command: 'export-healthex',
  describe: 'Export a HealthClaw tenant as a de-identified, Curatr-pre-tagged transaction Bundle (export_healthex.py), and import it',
  builder: (yargs) =>
    withPostOptions(withRunOptions(yargs))
      .option('tenant-id', { describe: 'Source tenant to export from', type: 'string', default: 'desktop-demo', requiresArg: true })
      .option('types', { describe: `Resource types, in this order [default: ${EXPORT_TYPES.join(' ')}]`, type: 'string', array: true })
      .option('output', { alias: 'o', describe: 'Output Bundle path [default: exports/healthex-<YYYY-MM-DD>.json]', type: 'string', requiresArg: true })
      .option('import', { describe: 'Import the written Bundle (POST /Bundle/$ingest-context, in chunks)', type: 'boolean', default: false })
      .option('import-tenant', { describe: 'Tenant to import into [default: --tenant-id]', type: 'string', requiresArg: true })
      .option('import-base-url', { describe: 'Server to import into [default: --base-url]', type: 'string', requiresArg: true })
      .option('deidentify', { describe: 'De-identify Patients (--no-deidentify skips it)', type: 'boolean', default: true })
      .option('pretag', { describe: 'Add Curatr pre-tags (--no-pretag skips it)', type: 'boolean', default: true })
      .option('dry-run', { describe: 'Print the counts only: no file written, nothing imported', type: 'boolean', default: false })
      .option('concurrency', { describe: 'Types fetched at once (output keeps type order), and Bundles posted at once with --import', type: 'number', default: 2 })
      .option('pretty', { describe: 'Indent the file like the Python script (json.dump indent=2): larger and slower', type: 'boolean', default: false })
      .option('temp-dir', { describe: 'Folder for the spool of smoking-status Observations (default: $TMPDIR)', type: 'string', requiresArg: true })
      .example('hx export-healthex --tenant-id ev-personal', 'all eleven types to exports/healthex-<date>.json')
      .example('hx export-healthex --tenant-id ev-personal --import --import-tenant ev-archive', 'export, then import into a second tenant ($STEP_UP_SECRET)')
      .example('hx export-healthex --tenant-id ev-personal --dry-run', 'counts only, nothing written')
      .example('hx export-healthex --tenant-id ev-personal --types Condition Observation AllergyIntolerance', 'a subset of types'),
  handler: async (argv) => {
    const tenant = checkTenant(argv['tenant-id']);
    const types = (argv.types ?? EXPORT_TYPES).flatMap((t) => t.split(',')).filter(Boolean);
    for (const type of types) if (!RESOURCE_TYPE_NAME.test(type)) throw new UsageError(`--types: not a FHIR type name: ${type}`);
    if (new Set(types).size !== types.length) throw new UsageError('--types names a type twice');
    const base = trimBase(argv['base-url']);
    if (!URL.canParse(base)) throw new UsageError('--base-url must be an http(s) URL');
    const secret = argv['step-up-secret'] ?? process.env.STEP_UP_SECRET ?? '';
    const output = argv.output ?? `exports/healthex-${localDate()}.json`;
    const toStdout = output === '-';
    if (argv.import && toStdout && !argv['dry-run']) throw new UsageError('--import reads the written file: give --output a file, not -');
    // Checked before the export, so a missing secret never costs a whole export first. A dry run imports nothing.
    const importSettings =
      argv.import && !argv['dry-run']
        ? postSettings({ ...argv, 'base-url': argv['import-base-url'] ?? base, 'dry-run': false }, 'ingest', argv['import-tenant'] ?? tenant)
        : undefined;
    const say = (text: string) => (toStdout ? process.stderr : process.stdout).write(text);

    say(`Exporting tenant '${tenant}' from ${base}\nResource types: ${types.join(', ')}\n\n`);
    const redactor = new Redactor();
    redactor.add(secret);
    const tokens = secret ? new StepUpTokens({ secret, tenant, subject: 'hx-export' }, (token) => redactor.add(token)) : undefined;
    const client = new HttpClient({
      trustedOrigin: base,
      // The server may require a token on reads; with none, a 401 fails the run rather than exporting nothing.
      credentials: () => ({ 'x-tenant-id': tenant, ...(tokens ? { 'x-step-up-token': tokens.current() } : {}) }),
      headers: { accept: 'application/fhir+json', 'user-agent': 'hx-fhir' },
      redactor,
      advice: { 401: 'the server requires a read token for this tenant: pass --step-up-secret or set STEP_UP_SECRET' },
      onRetry: (n) => process.stderr.write(`hx: ${n.what}: ${n.reason}; retrying in ${Math.round(n.delayMs / 100) / 10} s\n`),
      onRateLimit: (ms) => process.stderr.write(`hx: ${rateLimitNotice(ms)}\n`),
    });
    const deidentifier = argv.deidentify ? createDeidentifier({ profile: 'export', key: process.env[KEY_ENV] || undefined, keySource: 'env' }) : undefined;
    let account: Account;
    try {
      account = await runRecords({
        input: argv,
        source: (ctx, onBytes) => fetchPages({ client, searches: typeSearches(base, types, 200), concurrency: argv.concurrency, onBytes }, ctx),
        stages: (ctx) => [
          ...(deidentifier ? [deidentifyStage(deidentifier, ctx)] : []),
          ...(argv.pretag ? [pretagStage({ tempDir: argv['temp-dir'] }, ctx) as Transform] : []),
        ],
        ...(argv['dry-run']
          ? { sink: (ctx) => countingSink(ctx.account) }
          : {
              // No second dedupe set: fetchPages already drops a repeated (type, id), and neither the export
              // profile nor pretag changes ids, so the Bundle's set would hold the same keys again (16 bytes each).
              serializer: (ctx) => toTransactionBundle({ pretty: argv.pretty, dedupe: false }, ctx),
              output: { output, gzip: false },
            }),
      });
    } finally {
      await client.close();
    }

    say(fetchLines(account, types));
    if (deidentifier) say('De-identification applied (name/address/telecom/EHR identifiers removed)\n');
    const tags = argv.pretag ? tagCounts(account) : [];
    if (tags.length) say(`Curatr pre-tags applied: {${tags.map(([code, n]) => `'${code}': ${n}`).join(', ')}}\n`);
    if (argv['dry-run']) say('\nDry run — not writing output.\n');
    else say(`\nWritten: ${output} (${(account.stages.bundle as BundleStats).entries} entries)\n`);
    say('\n' + summary(account, tags));

    if (importSettings) {
      const into = importSettings.target;
      say(`\nImporting into tenant '${into.tenant}': POST ${into.base}/Bundle/$ingest-context\n`);
      const input: InputArgs = { files: [output], unpack: true, verbose: argv.verbose, progress: argv.progress, 'max-line-bytes': argv['max-line-bytes'] };
      const imported = await runPost(input, importSettings, (text) => process.stderr.write(text));
      say(ingestSummary(imported.stages.ingest as IngestStats, false));
    }
  },
};

/** `  Patient: 13 (server total 13)` per type in request order, and the total, as the Python script prints them. */
function fetchLines(account: Account, types: string[]): string {
  const searches = fetchStage(account).searches;
  let text = '';
  let total = 0;
  for (const type of types) {
    const s = searches[type];
    const fetched = s?.fetched ?? 0;
    total += fetched;
    text += `  ${type}: ${fetched}${s?.total !== undefined ? ` (server total ${s.total})` : ''}\n`;
  }
  return `${text}\nTotal resources fetched: ${total}\n`;
}

function tagCounts(account: Account): [string, number][] {
  const stats = account.stages.pretag as PretagStats | undefined;
  if (!stats) return [];
  return Object.entries(stats.tagsAdded)
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => (a < b ? -1 : 1));
}

/** The Python script's `summarise`: counts per type, sorted, the total, then the pre-tags. */
function summary(account: Account, tags: [string, number][]): string {
  let text = 'Resource counts:\n';
  for (const [type, n] of [...account.writtenByType].sort(([a], [b]) => (a < b ? -1 : 1))) text += `  ${type}: ${n}\n`;
  text += `  TOTAL: ${account.written}\n`;
  if (tags.length) text += `\nCuratr pre-tags:\n${tags.map(([code, n]) => `  ${code}: ${n}\n`).join('')}`;
  return text;
}


/** Today as `YYYY-MM-DD` in local time, as Python's `date.today()`. */
function localDate(): string {
  const d = new Date();
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}
