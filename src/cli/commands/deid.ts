import { readFileSync, writeFileSync } from 'node:fs';
import type { CommandModule } from 'yargs';
import { HxError, UsageError } from '../../errors.js';
import type { IdMode, KeySource } from '../../deid/pseudonym.js';
import { loadZip3Table } from '../../deid/zip3.js';
import {
  createDeidentifier,
  deidentifyBatch,
  deidentifyStage,
  deidentifyToNdjson,
  PROFILES,
  registerDeidStats,
  type Deidentifier,
  type DeidentifyOptions,
  type Profile,
} from '../../../transforms/deidentify.js';
import type { Account } from '../../account.js';
import { Pseudonymizer } from '../../deid/pseudonym.js';
import type { DeidReport } from '../../deid/report.js';
import { checkWorkers } from '../../io/workers.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { inWorkers, runPlan, type StageCommand, type StagePlan } from '../pipeline.js';

/** Environment variable holding the key (UTF-8), when no --key-file is given. */
export const KEY_ENV = 'HX_DEID_KEY';

interface DeidArgs extends InputArgs, OutputArgs {
  workers: number;
  profile: Profile;
  'key-file'?: string;
  'id-mode': IdMode;
  'as-of'?: string;
  'date-shift'?: number;
  'zip3-table'?: string;
  explain?: string;
}

export const deidCommand: CommandModule<object, DeidArgs> = {
  command: 'deid [files..]',
  describe: 'De-identify resources: HealthClaw export, HealthClaw redaction, or HIPAA Safe Harbor with keyed pseudonyms',
  builder: (yargs) =>
    withWorkersOption(withOutputOptions(withInputOptions(yargs)))
      .option('profile', {
        describe:
          'export: Patient/Person/RelatedPerson lose name, address, telecom, photo, contact and EHR identifiers, person reference displays go; ' +
          'redact: HealthClaw read redaction (initials, ***last4, year, state+country); ' +
          'safe-harbor: HIPAA Safe Harbor, ids pseudonymised',
        choices: PROFILES,
        default: 'export' as Profile,
      })
      .option('key-file', {
        describe: `Pseudonym key: the bytes of FILE (one trailing newline dropped). Else $${KEY_ENV}; else a random key for this run`,
        type: 'string',
        requiresArg: true,
      })
      .option('id-mode', {
        describe: 'hx: pseudonyms are UUIDs; ms-compat: lowercase hex HMAC-SHA256(key, id), as Microsoft\'s FHIR anonymizer',
        choices: ['hx', 'ms-compat'] as const,
        default: 'hx' as IdMode,
      })
      .option('as-of', { describe: 'Day (YYYY-MM-DD) the 90+ age rule is judged on (default: today, UTC)', type: 'string', requiresArg: true })
      .option('date-shift', {
        describe: 'safe-harbor: shift each patient\'s dates by a keyed offset within ±DAYS instead of cutting them to the year (NOT Safe Harbor)',
        type: 'number',
        requiresArg: true,
      })
      .option('zip3-table', { describe: 'Restricted three-digit ZIP prefixes, one a line (default: 2000/2010/2020 census union)', type: 'string', requiresArg: true })
      .option('explain', {
        describe: 'Write what was done per element path (path, action, count, tab-separated) to FILE ("-": stderr)',
        type: 'string',
        requiresArg: true,
      })
      .example('hx deid bulk/*.ndjson.gz > export.ndjson', 'the HealthClaw export profile (the default)')
      .example(`${KEY_ENV}=… hx deid --profile safe-harbor --as-of 2025-01-01 everything.json -o deid.ndjson`, 'Safe Harbor with a stable key')
      .example('hx deid --profile safe-harbor --key-file key.bin --explain report.tsv -v data.ndjson > deid.ndjson', 'with a review report and the account')
      .example('hx deid --profile safe-harbor --id-mode ms-compat --key-file key.txt a.ndjson', 'ids as Microsoft\'s anonymizer writes them'),
  handler: async (argv) => {
    const { stage, alone } = deidPlans(argv);
    await runPlan(argv, inWorkers([stage], checkWorkers(argv.workers), argv) ?? alone);
  },
};

/** As a stage of `hx run`. */
export const deidStage: StageCommand<DeidArgs> = { command: deidCommand, plan: (argv) => deidPlans(argv).stage };

/** deid as a stage of a run, and as the whole run on one thread (NDJSON lines straight to NDJSON: `deidentifyLines`). */
function deidPlans(argv: DeidArgs): { stage: StagePlan; alone: StagePlan } {
  const { key = Pseudonymizer.randomKey(), keySource = 'random' } = readKey(argv['key-file']);
  // Workers build their own Deidentifier from these options: the key is drawn here, once, for all of them.
  const options: DeidentifyOptions = {
    profile: argv.profile,
    key,
    keySource,
    idMode: argv['id-mode'],
    asOf: argv['as-of'],
    dateShiftDays: argv['date-shift'],
    zip3: argv['zip3-table'] ? loadZip3Table(argv['zip3-table']) : undefined,
    explain: argv.explain !== undefined,
  };
  const deidentifier = createDeidentifier(options);
  const { settings } = deidentifier;
  if (settings.keySource === 'random' && settings.usesKey) {
    const what = settings.pseudonymisesIds ? 'pseudonyms' : 'urn:healthclaw:patient identifiers';
    process.stderr.write(
      `hx: deid: no key given (--key-file or $${KEY_ENV}): drew a random key for this run (fingerprint ${settings.keyFingerprint}); its ${what} match no other run\n`,
    );
  }
  const finish = (account: Account | undefined) => {
    if (account && argv.verbose) process.stderr.write(accountLines(deidentifier, account.rejected));
    if (argv.explain !== undefined) writeExplain(deidentifier, argv.explain, account === undefined);
  };
  const stage: StagePlan = {
    // The texts that records were read from are what `editText` works on.
    ignoresTexts: !deidentifier.editsText,
    stages: (ctx) => [deidentifyStage(deidentifier, ctx)],
    // In worker threads: each builds its own Deidentifier from the same options; their reports are added up here.
    parallel: (ctx) => {
      registerDeidStats(deidentifier, ctx);
      return {
        job: { kind: 'deid', options },
        local: (batch) => deidentifyBatch(batch, deidentifier, ctx),
        mergeReport: (report) => mergeReport(deidentifier.report, report as DeidReport),
      };
    },
    finish,
  };
  const lineOptions = { maxLineBytes: argv['max-line-bytes'], unpackBundles: argv.unpack };
  const alone: StagePlan = deidentifier.editsText
    ? { ignoresTexts: false, rawLines: true, serializer: (ctx) => deidentifyToNdjson(deidentifier, ctx, lineOptions), finish }
    : stage;
  return { stage, alone };
}

/** Adds a worker's counters (a structured clone: fields, no methods) to this thread's report. */
function mergeReport(into: DeidReport, from: DeidReport): void {
  into.resources += from.resources;
  into.changed += from.changed;
  for (const name of ['byPathAction', 'resourcesByRule', 'removedByKind', 'extensionsDropped', 'rejectedByReason'] as const) {
    for (const [key, n] of from[name]) into[name].set(key, (into[name].get(key) ?? 0) + n);
  }
}

/** The key from --key-file or the environment; never printed anywhere. */
function readKey(path: string | undefined): { key?: Buffer; keySource?: KeySource } {
  if (path !== undefined) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (err) {
      throw new UsageError(`--key-file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    // `echo secret > key` leaves a newline the user did not mean as key material.
    if (bytes.at(-1) === 0x0a) bytes = bytes.subarray(0, bytes.at(-2) === 0x0d ? -2 : -1);
    if (bytes.length === 0) throw new UsageError(`--key-file ${path} is empty`);
    return { key: bytes, keySource: 'key-file' };
  }
  const env = process.env[KEY_ENV];
  if (env !== undefined && env !== '') return { key: Buffer.from(env, 'utf8'), keySource: 'env' };
  return {};
}

function writeExplain(deidentifier: Deidentifier, target: string, failed: boolean): void {
  const text = deidentifier.report.explain();
  if (target === '-') {
    process.stderr.write(text);
    return;
  }
  try {
    writeFileSync(target, text);
  } catch (err) {
    if (!failed) throw new HxError(`--explain: cannot write ${target} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** The deid part of the account, for -v. */
function accountLines(deidentifier: Deidentifier, rejected: number): string {
  const { settings, report } = deidentifier;
  const json = report.toJSON() as Record<string, Record<string, number>>;
  const table = (title: string, map: Record<string, number>) => {
    const rows = Object.entries(map);
    return rows.length === 0 ? '' : `hx: deid: ${title}:\n` + rows.map(([k, n]) => `hx:   ${k}: ${n}\n`).join('');
  };
  const key = `key ${settings.keyFingerprint} (${settings.keySource === 'random' ? 'random, drawn for this run' : `from ${settings.keySource}`})`;
  const shift = settings.dateShiftDays > 0 ? `, dates shifted within ±${settings.dateShiftDays} days` : '';
  return (
    `hx: deid: profile ${settings.profile}, ${key}, ids ${settings.pseudonymisesIds ? `pseudonymised (${settings.idMode})` : 'kept'}, ` +
    `as-of ${settings.asOf}${shift}, ZIP table ${settings.zip3Table}\n` +
    `hx: deid: ${report.changed} of ${report.resources} resources changed, ${rejected} rejected\n` +
    table('resources changed by rule', json.resourcesByRule!) +
    table('elements removed by kind', json.removedByKind!) +
    table('extensions dropped by URL', json.extensionsDropped!) +
    table('rejected', json.rejectedByReason!)
  );
}
