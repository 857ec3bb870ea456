/**
 * pretag: Curatr pre-tags on Observations (contract: shared/contracts/healthclaw.md,
 * "Curatr pre-tags"). A tag is a FHIR extension appended to `extension[]`;
 * nothing else of any resource changes.
 *
 * The per-record cores are `hFlagTiter`, `missingResult`, `smokingStatus`
 * and `addTags`. `smoking_contradiction` needs the other smoking-status
 * Observations of the same patient, so the stream stage `pretagStage` keeps a
 * few bits per patient (see `PatientStates`) and works in one of two ways:
 *
 * - two passes (`rescan` given, for seekable files): a first cheap read
 *   of the smoking-status Observations settles every patient, the second
 *   read tags and writes. Output order = input order.
 * - spool (a pipe): every resource other than a smoking-status Observation
 *   passes at once; the smoking-status Observations go to a temporary file
 *   and come out, tagged where their patient turned out contradictory, after
 *   everything else, in input order.
 *
 * Either way memory holds the patient bits, never the records. The core
 * `addTags` returns a copy; the stage adds its tags in place, as it owns the
 * resources of the batches it is handed.
 */
import { Duplex } from 'node:stream';
import type { Account } from '../src/account.js';
import { RecordRejected } from '../src/errors.js';
import { CONTRADICTORY, EVER, NEVER, PatientStates } from '../src/pretag/patientStates.js';
import { Spool } from '../src/pretag/spool.js';
import type { Rejects } from '../src/rejects.js';
import type { RecordCore, StageContext } from '../src/stage.js';
import { EncodedText, SplicedText, type Batch, type Location, type RecordText, type Resource } from '../src/types.js';

export const PRETAG_URL = 'https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag';

/** The tags, in the order they are added to one resource. */
export const PRETAG_CODES = ['smoking_contradiction', 'h_flag_titer', 'missing_result'] as const;
export type PretagCode = (typeof PRETAG_CODES)[number];

export const PRETAG_TEXT: Readonly<Record<PretagCode, string>> = {
  smoking_contradiction: 'Conflicting smoking status records detected \u2014 review recommended',
  h_flag_titer: 'High-value flag present \u2014 clinical review recommended',
  missing_result: 'Observation has no result value \u2014 may indicate pending or cancelled result',
};

/** LOINC "Tobacco smoking status": the Observations `smoking_contradiction` compares. */
export const SMOKING_STATUS_CODE = '72166-2';
/** SNOMED "Never smoker" codes; any other SNOMED code means "ever smoked". */
export const NEVER_SMOKER_CODES: ReadonlySet<string> = new Set(['266919005', '221000119102']);
const HIGH_FLAGS: ReadonlySet<string> = new Set(['H', 'HH', 'HU']);

export type SmokingStatus = 'never' | 'ever' | 'unknown';

// ---------------------------------------------------------------- per-record cores

/** Is this an Observation with a `code.coding[].code` of 72166-2 (any system)? */
export function isSmokingObservation(resource: Resource): boolean {
  if (resource.resourceType !== 'Observation') return false;
  const coding = (resource.code as { coding?: unknown } | undefined)?.coding;
  if (!Array.isArray(coding)) return false;
  for (const c of coding) if ((c as { code?: unknown } | null)?.code === SMOKING_STATUS_CODE) return true;
  return false;
}

/**
 * The smoking status a smoking-status Observation records, from the first
 * `valueCodeableConcept.coding[]` whose system, lower-cased, contains
 * "snomed": a never-smoker code is 'never', any other code 'ever'; no such
 * coding (or one without a code) is 'unknown'. `undefined` when the resource
 * is not a smoking-status Observation.
 */
export function smokingStatus(resource: Resource): SmokingStatus | undefined {
  if (!isSmokingObservation(resource)) return undefined;
  const coding = (resource.valueCodeableConcept as { coding?: unknown } | undefined)?.coding;
  if (!Array.isArray(coding)) return 'unknown';
  for (const c of coding as ({ system?: unknown; code?: unknown } | null)[]) {
    if (typeof c?.system !== 'string' || !c.system.toLowerCase().includes('snomed')) continue;
    if (typeof c.code !== 'string') return 'unknown';
    return NEVER_SMOKER_CODES.has(c.code) ? 'never' : 'ever';
  }
  return 'unknown';
}

/**
 * `h_flag_titer`: an interpretation code H, HH or HU, or a `valueString`
 * that contains ">>>" or starts, after leading white space, with a capital H
 * (so "High" and "Hemolyzed" are tagged, "high" is not: the contract's rule).
 */
export function hFlagTiter(resource: Resource): boolean {
  if (resource.resourceType !== 'Observation') return false;
  const interpretation = resource.interpretation;
  if (Array.isArray(interpretation)) {
    for (const concept of interpretation) {
      const coding = (concept as { coding?: unknown } | null)?.coding;
      if (!Array.isArray(coding)) continue;
      for (const c of coding) {
        const code = (c as { code?: unknown } | null)?.code;
        if (typeof code === 'string' && HIGH_FLAGS.has(code)) return true;
      }
    }
  }
  const text = resource.valueString;
  return typeof text === 'string' && (text.includes('>>>') || text.trimStart().startsWith('H'));
}

/** `missing_result`: no top-level key starting with "value" (a `valueBoolean: false` is a result). */
export function missingResult(resource: Resource): boolean {
  if (resource.resourceType !== 'Observation') return false;
  for (const key in resource) if (key.startsWith('value')) return false;
  return true;
}

/** Whose smoking status a record is: `subject.reference`, or '' for the subject-less, judged together. */
export function subjectReference(resource: Resource): string {
  const reference = (resource.subject as { reference?: unknown } | undefined)?.reference;
  return typeof reference === 'string' ? reference : '';
}

/** One pre-tag extension, exactly as the contract spells it. */
export function pretagExtension(code: PretagCode): Record<string, unknown> {
  const text = PRETAG_TEXT[code];
  return {
    url: PRETAG_URL,
    valueCodeableConcept: { coding: [{ system: PRETAG_URL, code, display: text }], text },
  };
}

/** The pre-tag codes a resource carries, in order of its extensions (any code, known or not). */
export function pretagCodesOf(resource: Resource): string[] {
  const extensions = resource.extension;
  if (!Array.isArray(extensions)) return [];
  const codes: string[] = [];
  for (const ext of extensions as ({ url?: unknown; valueCodeableConcept?: { coding?: unknown } } | null)[]) {
    if (ext?.url !== PRETAG_URL) continue;
    const coding = ext.valueCodeableConcept?.coding;
    const code = Array.isArray(coding) ? (coding[0] as { code?: unknown } | null)?.code : undefined;
    if (typeof code === 'string') codes.push(code);
  }
  return codes;
}

/**
 * The resource with a pre-tag for each of `codes` it does not carry yet,
 * appended after its existing extensions in the contract's order (smoking,
 * H flag, missing). Returns the same object when nothing is added, else a
 * shallow copy: the input is never changed. Rejects a resource whose
 * `extension` is not an array, as a tag cannot be added to it.
 */
export function addTags(resource: Resource, codes: readonly PretagCode[]): Resource {
  const toAdd = tagsToAdd(resource, codes);
  return toAdd.length === 0 ? resource : withTags(resource, toAdd);
}

function tagsToAdd(resource: Resource, codes: readonly PretagCode[]): readonly PretagCode[] {
  if (codes.length === 0) return NO_CODES;
  const present = pretagCodesOf(resource);
  const missing = PRETAG_CODES.filter((code) => codes.includes(code) && !present.includes(code));
  if (missing.length > 0 && resource.extension !== undefined && !Array.isArray(resource.extension)) {
    throw new RecordRejected('extension is not an array (cannot add a pre-tag)');
  }
  return missing;
}

function withTags(resource: Resource, codes: readonly PretagCode[]): Resource {
  const existing = (resource.extension as unknown[] | undefined) ?? [];
  return { ...resource, extension: [...existing, ...codes.map(pretagExtension)] };
}

/**
 * The text of a resource tagged with `codes`, made from `text`, the JSON
 * text it was read from, when the resource had no `extension`: the tags as
 * a new last member, the same member `appendTags` adds to the object, so
 * the text still says what the object holds. Splicing is cheaper than
 * serialising the tagged resource again, and in the benchmark corpus a fifth
 * of the records get a tag. `text` must be a JSON object whose parse had no
 * `extension` member (then the text has none, not even a duplicate); it
 * ends with its closing brace, and holds a member before it (every
 * Observation has its `resourceType`).
 */
export function spliceTags(text: string, codes: readonly PretagCode[]): SplicedText {
  const key = codes.join();
  let tail = TAG_TAILS.get(key);
  if (!tail) {
    tail = new EncodedText(`,"extension":[${codes.map((code) => JSON.stringify(pretagExtension(code))).join()}]}`);
    TAG_TAILS.set(key, tail);
  }
  return new SplicedText(text.slice(0, -1), tail);
}

/** The end of a tagged text, per list of codes, encoded once (at most 7 lists). */
const TAG_TAILS = new Map<string, EncodedText>();

/**
 * `withTags` in place, for the stream stage only: a stage owns the resources
 * of the batches it is handed (nothing upstream keeps them), and on a Bulk
 * export where a fifth of the records get a tag, copying them cost about
 * 15 MB of peak RSS and a tenth of the CPU time in our measurements.
 */
function appendTags(resource: Resource, codes: readonly PretagCode[]): void {
  const existing = resource.extension as unknown[] | undefined;
  if (existing) for (const code of codes) existing.push(pretagExtension(code));
  else resource.extension = codes.map(pretagExtension);
}

/**
 * Can this raw JSON text hold a smoking-status Observation? False only when
 * it cannot: the code "72166-2" appears in it either literally or through a
 * `\u` escape (JSON has no other escape for a digit or a hyphen). The first
 * pass parses only the texts that pass, which is what makes it cheap.
 */
export function mayBeSmokingStatus(text: string): boolean {
  return SMOKING_NEEDLES.some((needle) => text.includes(needle));
}

/** What `mayBeSmokingStatus` looks for, for the splitter's byte search (`needles`). */
export const SMOKING_NEEDLES: readonly string[] = [SMOKING_STATUS_CODE, '\\u'];

/** The rules to apply; all of them by default. */
export type PretagRules = ReadonlySet<PretagCode>;
export const ALL_RULES: PretagRules = new Set(PRETAG_CODES);

/**
 * The tags `resource` should carry under `rules`. `contradictory` says
 * whether its patient holds both a never- and an ever-smoker record (only
 * asked of smoking-status Observations; the stage knows it, a single record
 * cannot).
 */
export function pretagCodes(resource: Resource, rules: PretagRules, contradictory: boolean): readonly PretagCode[] {
  if (resource.resourceType !== 'Observation') return NO_CODES;
  let codes: PretagCode[] | undefined; // allocated for the few records that get a tag
  if (contradictory && rules.has('smoking_contradiction') && isSmokingObservation(resource)) (codes ??= []).push('smoking_contradiction');
  if (rules.has('h_flag_titer') && hFlagTiter(resource)) (codes ??= []).push('h_flag_titer');
  if (rules.has('missing_result') && missingResult(resource)) (codes ??= []).push('missing_result');
  return codes ?? NO_CODES;
}

const NO_CODES: readonly PretagCode[] = Object.freeze([]);

/** The per-record core of the rules that need nothing but the record (`h_flag_titer`, `missing_result`). */
export function pretagRecord(rules: PretagRules = ALL_RULES): RecordCore {
  return (resource) => addTags(resource, pretagCodes(resource, rules, false));
}

// ---------------------------------------------------------------- stream stage

export interface PretagOptions {
  rules?: PretagRules;
  /**
   * A fresh read of the very resources the stage will be given (the same
   * files again). With it the stage makes two passes and keeps input order;
   * without it, smoking-status Observations are spooled and written last.
   * It may skip anything that is not a smoking-status Observation (the CLI
   * reads with a line prefilter that skips the rest unparsed).
   */
  rescan?: () => AsyncIterable<Batch>;
  /** Folder for the spool (default: the system's temporary folder). */
  tempDir?: string;
}

/** The stage's counters, under `stages.pretag` of the account. */
export interface PretagStats extends Record<string, unknown> {
  mode: 'two-pass' | 'spool' | 'per-record';
  /** Resources that went through the stage. */
  examined: number;
  observations: number;
  /** Smoking-status Observations (LOINC 72166-2) tagged or not, when the smoking rule applies. */
  smokingObservations: number;
  /** Tags added, per code (tags already present are not counted: they are not added again). */
  tagsAdded: Record<PretagCode, number>;
  /** Resources that got at least one tag. */
  resourcesTagged: number;
  /** Patients (subject references) held in the smoking-status state at its largest. */
  peakPatients: number;
  contradictoryPatients: number;
  /** Bytes of the patient table at its largest. */
  patientStateBytes: number;
  /** Bytes written to the spool (pipe input only). */
  spoolBytes: number;
}

/** The counters per-record tagging adds to, as a worker thread sends them (a structured clone). */
export type PretagCounts = Pick<PretagStats, 'examined' | 'observations' | 'smokingObservations' | 'resourcesTagged' | 'tagsAdded'>;

/** The counts since the last call, and zero in `stats`. */
export function takePretagCounts(stats: PretagStats): PretagCounts {
  const { examined, observations, smokingObservations, resourcesTagged, tagsAdded } = stats;
  Object.assign(stats, { examined: 0, observations: 0, smokingObservations: 0, resourcesTagged: 0, tagsAdded: newPretagStats(stats.mode).tagsAdded });
  return { examined, observations, smokingObservations, resourcesTagged, tagsAdded };
}

export function addPretagCounts(into: PretagStats, from: PretagCounts): void {
  into.examined += from.examined;
  into.observations += from.observations;
  into.smokingObservations += from.smokingObservations;
  into.resourcesTagged += from.resourcesTagged;
  for (const code of PRETAG_CODES) into.tagsAdded[code] += from.tagsAdded[code];
}

const SPOOL_BATCH = 512;

/** The account section of a pretag run, all counters at zero. */
export function newPretagStats(mode: PretagStats['mode']): PretagStats {
  return {
    mode,
    examined: 0,
    observations: 0,
    smokingObservations: 0,
    tagsAdded: { smoking_contradiction: 0, h_flag_titer: 0, missing_result: 0 },
    resourcesTagged: 0,
    peakPatients: 0,
    contradictoryPatients: 0,
    patientStateBytes: 0,
    spoolBytes: 0,
  };
}

export function pretagStage(options: PretagOptions, ctx: StageContext): Duplex {
  const rules = options.rules ?? ALL_RULES;
  const stats = ctx.account.stage<PretagStats>('pretag', () => newPretagStats('per-record'));
  const tagger = new Tagger(rules, stats);
  if (!rules.has('smoking_contradiction')) {
    return Duplex.from(async function* (batches: AsyncIterable<Batch>) {
      for await (const batch of batches) yield tagger.batch(batch, () => false, ctx.rejects);
    });
  }
  const { rescan } = options;
  if (rescan) {
    stats.mode = 'two-pass';
    return Duplex.from(async function* (batches: AsyncIterable<Batch>) {
      const states = new PatientStates();
      const expected = await settlePatients(rescan(), states);
      noteStates(states, stats);
      const contradictory = (resource: Resource) => states.get(subjectReference(resource)) === CONTRADICTORY;
      for await (const batch of batches) yield tagger.batch(batch, contradictory, ctx.rejects);
      warnIfPassesDiffer(expected, stats, ctx.account);
    });
  }
  stats.mode = 'spool';
  return Duplex.from(async function* (batches: AsyncIterable<Batch>) {
    const spool = await SmokingSpool.open(options.tempDir);
    try {
      for await (const batch of batches) {
        const tagged = tagger.batch(await spool.holdFrom(batch), () => false, ctx.rejects);
        if (tagged.resources.length > 0) yield tagged;
      }
      const contradictory = await spool.settle(stats);
      for await (const held of spool.release()) {
        const tagged = tagger.batch(held, contradictory, ctx.rejects);
        if (tagged.resources.length > 0) yield tagged;
      }
    } finally {
      await spool.close();
    }
  });
}

/** A smoking-status Observation set aside for the spool, as compact JSON, with what its patient's state needs. */
export interface HeldRecord {
  line: number;
  status: SmokingStatus;
  subject: string;
  text: string;
}

/**
 * Splits `batch` into its smoking-status Observations (held, as text: a
 * worker thread sends them to the spool on the main thread) and the rest.
 */
export function holdSmoking(batch: Batch): { rest: Batch; held: HeldRecord[] } {
  const held: HeldRecord[] = [];
  let rest: Batch | undefined;
  const { source, lines, resources, texts } = batch;
  for (let i = 0; i < resources.length; i++) {
    const resource = resources[i]!;
    const status = resource.resourceType === 'Observation' ? smokingStatus(resource) : undefined;
    if (status === undefined) {
      rest?.resources.push(resource);
      rest?.lines.push(lines[i]!);
      rest?.texts?.push(texts![i]);
      continue;
    }
    rest ??= { source, lines: lines.slice(0, i), resources: resources.slice(0, i), ...(texts ? { texts: texts.slice(0, i) } : {}) };
    held.push({ line: lines[i]!, status, subject: subjectReference(resource), text: String(texts?.[i] ?? JSON.stringify(resource)) });
  }
  return { rest: rest ?? batch, held };
}

/**
 * The spool of a pipe: smoking-status Observations on disk, in input order,
 * with their source and line; their patients' states in memory. Once every
 * record has been seen, `release()` gives them back as Batches.
 */
export class SmokingSpool {
  readonly states = new PatientStates();

  private constructor(private readonly spool: Spool) {}

  static async open(tempDir?: string): Promise<SmokingSpool> {
    return new SmokingSpool(await Spool.open(tempDir));
  }

  /** Holds the smoking-status Observations of `batch`; returns the rest. */
  async holdFrom(batch: Batch): Promise<Batch> {
    const { rest, held } = holdSmoking(batch);
    await this.hold(batch.source, held);
    return rest;
  }

  async hold(source: string, held: readonly HeldRecord[]): Promise<void> {
    if (held.length === 0) return;
    const name = JSON.stringify(source);
    let text = '';
    for (const record of held) {
      if (record.status !== 'unknown') this.states.mark(record.subject, record.status === 'never' ? NEVER : EVER);
      text += `[${name},${record.line},${record.text}]\n`;
    }
    await this.spool.write(text);
  }

  /** Every record seen: the patient table's figures into `stats`; says whose records are contradictory. */
  async settle(stats: PretagStats): Promise<(resource: Resource) => boolean> {
    await this.spool.flush();
    stats.spoolBytes = this.spool.bytes;
    noteStates(this.states, stats);
    return (resource) => this.states.get(subjectReference(resource)) === CONTRADICTORY;
  }

  /**
   * The held records, in the order held, as Batches of one source and at most
   * SPOOL_BATCH records, each with its text as held (`Batch.texts`), so that an
   * untagged one is written as it came, as from a file.
   */
  async *release(): AsyncGenerator<Batch> {
    let out: Batch | undefined;
    for await (const held of this.spool.lines()) {
      for (const text of held) {
        const [source, line, resource] = JSON.parse(text) as [string, number, Resource];
        if (out && (out.source !== source || out.resources.length >= SPOOL_BATCH)) {
          yield out;
          out = undefined;
        }
        out ??= { source, lines: [], resources: [], texts: [] };
        out.resources.push(resource);
        out.lines.push(line);
        // `hold` wrote `[source,line,text]` with JSON.stringify(source): the text is what follows `[source,line,`.
        out.texts!.push(text.slice(JSON.stringify(source).length + String(line).length + 3, -1));
      }
    }
    if (out) yield out;
  }

  close(): Promise<void> {
    return this.spool.close();
  }
}

/**
 * Pass one: the smoking status of every patient, into `states`. Returns the
 * number of smoking-status Observations (the second pass must meet as many).
 */
export async function settlePatients(batches: AsyncIterable<Batch>, states: PatientStates): Promise<number> {
  let count = 0;
  for await (const batch of batches) {
    for (const resource of batch.resources) {
      const status = smokingStatus(resource);
      if (status === undefined) continue;
      count++;
      if (status !== 'unknown') states.mark(subjectReference(resource), status === 'never' ? NEVER : EVER);
    }
  }
  return count;
}

/** Two passes over files that changed in between: the tags may be wrong, and the run says so. */
export function warnIfPassesDiffer(firstPass: number, stats: PretagStats, account: Account): void {
  if (stats.smokingObservations === firstPass) return;
  account.warn(
    `pretag: the first read found ${firstPass} smoking-status Observations, the second ${stats.smokingObservations}: ` +
      'did the input change during the run? Their smoking_contradiction tags may be wrong',
  );
}

/** The patient table's figures, into the stage's stats. */
export function noteStates(states: PatientStates, stats: PretagStats): void {
  stats.peakPatients = Math.max(stats.peakPatients, states.size);
  stats.patientStateBytes = Math.max(stats.patientStateBytes, states.bytes);
  stats.contradictoryPatients = states.count(CONTRADICTORY);
}

/**
 * Applies the rules to the records of Batches, counting into `stats`, and
 * routing a record that cannot be tagged to the reject policy. Used by the
 * stream stage and by the worker threads (`src/io/workerJobs.ts`).
 */
export class Tagger {
  private readonly smokingRule: boolean;

  constructor(
    private readonly rules: PretagRules,
    private readonly stats: PretagStats,
  ) {
    this.smokingRule = rules.has('smoking_contradiction');
  }

  /**
   * The batch tagged, in place. An untagged resource keeps the text it was
   * read from (`Batch.texts`); a tagged one gets that text with its tags
   * spliced in when it had no extension (`spliceTags`), else none.
   * `contradictory` is asked of smoking-status Observations only.
   */
  batch(batch: Batch, contradictory: (resource: Resource) => boolean, rejects: Rejects): Batch {
    const { source, lines, resources, texts } = batch;
    this.stats.examined += resources.length;
    const out: Resource[] = [];
    const outLines: number[] = [];
    const outTexts: (RecordText | undefined)[] | undefined = texts && [];
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i]!;
      let text = texts?.[i];
      if (resource.resourceType === 'Observation') {
        const hadExtension = resource.extension !== undefined;
        const added = this.observation(resource, { source, line: lines[i]! }, contradictory, rejects);
        if (added === undefined) continue;
        if (added.length > 0 && text !== undefined) text = hadExtension ? undefined : spliceTags(String(text), added);
      }
      out.push(resource);
      outLines.push(lines[i]!);
      outTexts?.push(text);
    }
    return outTexts ? { source, lines: outLines, resources: out, texts: outTexts } : { source, lines: outLines, resources: out };
  }

  /** Tags `resource` in place (see `appendTags`); the tags added, or undefined when it is rejected. */
  private observation(
    resource: Resource,
    loc: Location,
    contradictory: (resource: Resource) => boolean,
    rejects: Rejects,
  ): readonly PretagCode[] | undefined {
    const stats = this.stats;
    stats.observations++;
    const smoking = this.smokingRule && isSmokingObservation(resource);
    if (smoking) stats.smokingObservations++;
    try {
      const codes = tagsToAdd(resource, pretagCodes(resource, this.rules, smoking && contradictory(resource)));
      if (codes.length === 0) return codes;
      for (const code of codes) stats.tagsAdded[code]++;
      stats.resourcesTagged++;
      appendTags(resource, codes);
      return codes;
    } catch (err) {
      if (!(err instanceof RecordRejected)) throw err;
      rejects.reject(loc, `Observation: ${err.reason}`, () => JSON.stringify(resource));
      return undefined;
    }
  }
}
