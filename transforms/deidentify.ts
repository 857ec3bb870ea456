/**
 * deidentify: one FHIR resource in, its de-identified copy out, under one of
 * three profiles (see README, `hx deid`):
 *
 * - `export` (default): HealthClaw's patient-controlled export
 *   (src/deid/exportProfile.ts);
 * - `redact`: HealthClaw Guardrails' read-time redaction (src/deid/redactProfile.ts);
 * - `safe-harbor`: HIPAA Safe Harbor with keyed pseudonyms (src/deid/safeHarbor.ts).
 *
 * The per-record core is `createDeidentifier(options).deidentify` (or the
 * one-shot `deidentify(resource, options)`), with `editText` beside it for
 * the export profile on a record's JSON text (src/deid/exportText.ts); the
 * stream stage is `deidentifyStage` (options or a Deidentifier), and
 * `deidentifyToNdjson` the whole of `hx deid` on NDJSON lines, which parses
 * only the lines it cannot edit as text. No state crosses records except
 * bounded caches of HMACs and the report's counters, so the output of a
 * record depends only on the record's bytes, the key, the profile and the
 * options: byte-identical whatever the chunking, file split or thread.
 */
import { Transform } from 'node:stream';
import { RecordRejected, UsageError } from '../src/errors.js';
import { mapBatch, type StageContext } from '../src/stage.js';
import { BATCHES_IN_FLIGHT, type Batch, type RecordText, type Resource } from '../src/types.js';
import { ByteBuilder } from '../src/io/byteBuilder.js';
import { appendNdjson } from '../src/io/serialize.js';
import { exportByText, type ExportTextResult } from '../src/deid/exportText.js';
import { DEFAULT_MAX_LINE_BYTES, isOverlong, lineReader, type RawLines } from './ndjsonSplit.js';
import { parseCalendarDate, todayUtc, type CalendarDate } from '../src/deid/dates.js';
import { ExportProfile } from '../src/deid/exportProfile.js';
import { Pseudonymizer, type IdMode, type KeySource } from '../src/deid/pseudonym.js';
import { RedactProfile } from '../src/deid/redactProfile.js';
import { DeidReport } from '../src/deid/report.js';
import { SafeHarbor } from '../src/deid/safeHarbor.js';
import { CENSUS_UNION_ZIP3, type Zip3Table } from '../src/deid/zip3.js';

export const PROFILES = ['export', 'redact', 'safe-harbor'] as const;
export type Profile = (typeof PROFILES)[number];

export interface DeidentifyOptions {
  profile?: Profile;
  /**
   * The pseudonym key (bytes, or a string taken as UTF-8). Without one a
   * random key is drawn: pseudonyms then match nothing outside this run.
   */
  key?: Buffer | string;
  /** For the account only: where the key came from. */
  keySource?: KeySource;
  /** `hx` (default): UUID-shaped pseudonyms. `ms-compat`: hex HMAC-SHA256(key, id), as Microsoft's FHIR anonymizer. */
  idMode?: IdMode;
  /** `YYYY-MM-DD`, the day the 90+ rule is judged on (default: today, UTC). */
  asOf?: string;
  /** safe-harbor only: shift dates by a keyed per-patient offset in ±days instead of cutting them to the year. */
  dateShiftDays?: number;
  /** Restricted three-digit ZIP prefixes (default: the 2000/2010/2020 census union). */
  zip3?: Zip3Table;
  /** Count actions per element path too (the `--explain` report); costs some speed. */
  explain?: boolean;
  /** Counters to add to (a new one by default). */
  report?: DeidReport;
}

export interface Deidentifier {
  /**
   * Whether `editText` can answer (the export profile, without `--explain`,
   * whose per-path counts need the object walk).
   */
  readonly editsText: boolean;
  /**
   * The de-identified copy of the record whose JSON text is `text`, as text,
   * when the profile can tell it from the text alone (`exportByText`):
   * `JSON.parse` of it equals `deidentify` of `JSON.parse(text)`. Undefined:
   * parse the text and call `deidentify`. Counts nothing on the report.
   */
  editText(text: string): ExportTextResult | undefined;
  /** `editText`, counted on the report as `deidentify` counts. */
  deidentifyText(text: string): ExportTextResult | undefined;
  /**
   * The de-identified copy of `resource`. Never modifies `resource`; the
   * copy may share unchanged sub-objects with it (copy-on-write). Throws
   * RecordRejected (reason names the element path, never a value) for what
   * cannot be de-identified safely, e.g. an unknown modifierExtension.
   */
  deidentify(resource: Resource): Resource;
  readonly report: DeidReport;
  /** What the account shows about this run's settings. */
  readonly settings: DeidSettings;
}

export interface DeidSettings {
  profile: Profile;
  keyFingerprint: string;
  keySource: KeySource;
  idMode: IdMode;
  asOf: string;
  dateShiftDays: number;
  zip3Table: string;
  pseudonymisesIds: boolean;
  /** Whether the output depends on the key (all but redact: pseudonyms, the export's patient UUID). */
  usesKey: boolean;
}

export function createDeidentifier(options: DeidentifyOptions = {}): Deidentifier {
  const profile = options.profile ?? 'export';
  if (!PROFILES.includes(profile)) throw new UsageError(`unknown profile "${profile}" (one of ${PROFILES.join(', ')})`);
  const asOfText = options.asOf ?? todayUtc();
  const asOf: CalendarDate | undefined = parseCalendarDate(asOfText);
  if (!asOf) throw new UsageError('--as-of must be a date YYYY-MM-DD');
  const dateShiftDays = options.dateShiftDays ?? 0;
  if (!Number.isInteger(dateShiftDays) || dateShiftDays < 0 || dateShiftDays > 3650) {
    throw new UsageError('--date-shift must be a whole number of days from 1 to 3650');
  }
  if (dateShiftDays > 0 && profile !== 'safe-harbor') throw new UsageError('--date-shift applies to --profile safe-harbor only');
  const key = options.key === undefined ? Pseudonymizer.randomKey() : Buffer.isBuffer(options.key) ? options.key : Buffer.from(options.key, 'utf8');
  if (key.length === 0) throw new UsageError('the de-identification key is empty');
  const pseudonyms = new Pseudonymizer({ key, idMode: options.idMode });
  const report = options.report ?? new DeidReport(options.explain ?? false);
  const zip3 = options.zip3 ?? CENSUS_UNION_ZIP3;
  const apply = profileFunction(profile, { pseudonyms, report, asOf, dateShiftDays, zip3 });
  const settings: DeidSettings = {
    profile,
    keyFingerprint: pseudonyms.fingerprint,
    keySource: options.key === undefined ? 'random' : (options.keySource ?? 'given'),
    idMode: pseudonyms.idMode,
    asOf: asOfText,
    dateShiftDays,
    zip3Table: zip3.version,
    pseudonymisesIds: profile === 'safe-harbor',
    usesKey: profile !== 'redact',
  };
  const editsText = profile === 'export' && !report.tracksPaths;
  const editText = (text: string) => (editsText ? exportByText(text) : undefined);
  return {
    report,
    settings,
    editsText,
    editText,
    deidentifyText(text: string): ExportTextResult | undefined {
      const result = editText(text);
      if (result === undefined) return undefined;
      report.beginResource();
      for (let n = result.removed; n > 0; n--) report.record('', 'display-removed', 'Reference.display');
      report.endResource();
      return result;
    },
    deidentify(resource: Resource): Resource {
      report.beginResource();
      try {
        const out = apply(resource);
        report.endResource();
        return out;
      } catch (err) {
        if (err instanceof RecordRejected) report.rejected(err.reason);
        throw err;
      }
    },
  };
}

function profileFunction(
  profile: Profile,
  config: { pseudonyms: Pseudonymizer; report: DeidReport; asOf: CalendarDate; dateShiftDays: number; zip3: Zip3Table },
): (resource: Resource) => Resource {
  switch (profile) {
    case 'export': {
      const p = new ExportProfile(config);
      return (r) => p.apply(r);
    }
    case 'redact': {
      const p = new RedactProfile(config.report);
      return (r) => p.apply(r);
    }
    case 'safe-harbor': {
      const p = new SafeHarbor(config);
      return (r) => p.apply(r);
    }
  }
}

const oneShot = new WeakMap<DeidentifyOptions, Deidentifier>();

/**
 * The pure per-record function: `resource` de-identified under `options`.
 * Does not modify `resource` (the result may share unchanged sub-objects
 * with it). Reuses the keyed state for the same `options` object, so call
 * it with one options object per run. Throws RecordRejected for a record
 * that cannot be de-identified safely.
 */
export function deidentify(resource: Resource, options: DeidentifyOptions = {}): Resource {
  let d = oneShot.get(options);
  if (!d) {
    d = createDeidentifier(options);
    oneShot.set(options, d);
  }
  return d.deidentify(resource);
}

/**
 * The batch de-identified: `mapBatch` over the core. A record leaves with a
 * text (`Batch.texts`) only when `editText` made it from the record's own
 * text, never with the text it came with, not even for a resource the
 * profile left as it was: that text may hold what `JSON.parse` never showed
 * the profile (a repeated key keeps only its last value,
 * `"subject":{…"display":"Lin, Derrick"}` before a second `"subject"`), and
 * writing it would let that through. (`editText` refuses such text.)
 */
export function deidentifyBatch(batch: Batch, deidentifier: Deidentifier, ctx: StageContext): Batch {
  const core = (resource: Resource) => deidentifier.deidentify(resource);
  // A text with pretag's tags spliced in is edited whole, as `hx deid` would edit the line `hx pretag` wrote.
  const textOf = (text: RecordText | undefined) => (text === undefined ? undefined : deidentifier.editText(text.toString())?.text);
  return mapBatch(batch, core, ctx, 'dropped', deidentifier.editsText ? textOf : undefined);
}

/**
 * The stream stage: Batches in, de-identified Batches out; rejects go to the
 * run's policy. `deidentifyBatch` in a Transform that buffers one batch a
 * side rather than Node's 16: an output batch shares unchanged sub-objects
 * with its input, so buffered batches cost twice.
 */
export function deidentifyStage(options: Deidentifier | DeidentifyOptions, ctx: StageContext): Transform {
  const deidentifier = 'deidentify' in options ? options : createDeidentifier(options);
  registerDeidStats(deidentifier, ctx);
  return new Transform({
    objectMode: true,
    highWaterMark: 1,
    transform(batch: Batch, _encoding, callback) {
      try {
        callback(null, deidentifyBatch(batch, deidentifier, ctx));
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/** The `stages.deid` entry of the run's account: the settings and the report. */
export function registerDeidStats(deidentifier: Deidentifier, ctx: StageContext): void {
  ctx.account.stage('deid', () => ({ ...deidentifier.settings, toJSON: () => ({ ...deidentifier.settings, ...deidentifier.report.toJSON() }) }));
}

export interface LineOptions {
  maxLineBytes?: number;
  unpackBundles?: boolean;
}

/**
 * `hx deid` when it is the whole run: NDJSON lines (`RawLines`) straight to
 * de-identified NDJSON, appended to `out`. A line the profile edits as text
 * is never parsed (parsing and serialising cost about twice as much); the
 * others, in runs of consecutive lines, are read as `ndjsonSplit` reads them
 * (blank lines, Bundles, rejects with their line numbers) and go through
 * `deidentifyBatch`. The bytes are those of reading the lines into Batches
 * and serialising `deidentifyBatch` of them.
 */
export function deidentifyLines(deidentifier: Deidentifier, options: LineOptions): (raw: RawLines, ctx: StageContext, out: ByteBuilder) => void {
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  let reader: { source: string; ctx: StageContext; read: (text: string, firstLine: number) => Batch } | undefined;
  const readLines = (raw: RawLines, ctx: StageContext, out: ByteBuilder, start: number, end: number, firstLine: number) => {
    if (reader?.source !== raw.source || reader.ctx !== ctx) {
      reader = { source: raw.source, ctx, read: lineReader({ ...ctx, ...options, source: raw.source }) };
    }
    const batch = deidentifyBatch(reader.read(raw.text.slice(start, end), firstLine), deidentifier, ctx);
    appendNdjson(out, batch.resources, ctx.account, batch.texts);
  };
  return (raw, ctx, out) => {
    const { text } = raw;
    let pending = -1; // where the run of lines left to the reader starts
    let pendingLine = 0;
    for (let pos = 0, nl = text.indexOf('\n'), line = raw.firstLine; nl >= 0; pos = nl + 1, nl = text.indexOf('\n', pos), line++) {
      const end = text.charCodeAt(nl - 1) === 0x0d ? nl - 1 : nl;
      const lineText = text.slice(pos, end);
      // A line over the cap is the reader's to reject, by the same test.
      const result = isOverlong(lineText, maxLineBytes) ? undefined : deidentifier.deidentifyText(lineText);
      if (result === undefined) {
        if (pending < 0) [pending, pendingLine] = [pos, line];
        continue;
      }
      if (pending >= 0) readLines(raw, ctx, out, pending, pos, pendingLine);
      pending = -1;
      ctx.account.read++;
      out.append(result.text);
      out.append(NEWLINE);
      ctx.account.countWritten(result.resourceType);
    }
    if (pending >= 0) readLines(raw, ctx, out, pending, text.length, pendingLine);
  };
}

/**
 * `deidentifyLines` as the run's serializer on one thread: RawLines (and the
 * Batches of Bundle documents, through `deidentifyBatch`) to NDJSON bytes.
 */
export function deidentifyToNdjson(deidentifier: Deidentifier, ctx: StageContext, options: LineOptions): Transform {
  registerDeidStats(deidentifier, ctx);
  const lines = deidentifyLines(deidentifier, options);
  const out = new ByteBuilder(1 << 20);
  return new Transform({
    writableObjectMode: true,
    writableHighWaterMark: BATCHES_IN_FLIGHT,
    transform(item: RawLines | Batch, _encoding, callback) {
      try {
        if ('text' in item) lines(item, ctx, out);
        else {
          const batch = deidentifyBatch(item, deidentifier, ctx);
          appendNdjson(out, batch.resources, ctx.account, batch.texts);
        }
        callback(null, out.copy());
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

const NEWLINE = Buffer.from('\n');
