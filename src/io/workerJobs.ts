/**
 * The per-record work a worker thread can do, built from options that cross
 * the thread boundary (structured clones: data, no methods). The main thread
 * builds the same cores for the Batches it transforms itself.
 */
import { createDeidentifier, deidentifyBatch, deidentifyLines, type DeidentifyOptions, type LineOptions } from '../../transforms/deidentify.js';
import type { RawLines } from '../../transforms/ndjsonSplit.js';
import type { ByteBuilder } from './byteBuilder.js';
import { newPretagStats, subjectReference, Tagger, takePretagCounts, type PretagCode } from '../../transforms/pretag.js';
import { EntryEncoder, type EntryOptions } from '../../transforms/toTransactionBundle.js';
import { CONTRADICTORY, PatientStates } from '../pretag/patientStates.js';
import type { RecordCore, StageContext } from '../stage.js';
import type { Batch, Resource } from '../types.js';

export type WorkerJob =
  | { kind: 'cat' }
  | { kind: 'deid'; options: DeidentifyOptions }
  /**
   * pretag's per-record rules. With the smoking rule, either `states` holds
   * every patient, settled by a first pass, or `hold` sends the
   * smoking-status Observations back untouched, to the main thread's spool.
   */
  | { kind: 'pretag'; rules: PretagCode[]; states?: PatientStates; hold?: boolean }
  /** bundle's entries, encoded for the main thread's assembler: the last job of a chain. */
  | { kind: 'bundle'; options: EntryOptions & { maxBytes?: number } };

export interface JobCore {
  /** Sets the smoking-status Observations of each batch aside (`holdSmoking`) before `core` or `map`. */
  holds?: boolean;
  core?: RecordCore;
  /** Or the work on whole Batches, which keeps or rewrites their texts itself (pretag's Tagger). */
  map?: (batch: Batch, ctx: StageContext) => Batch;
  /**
   * When it is the only job (NDJSON out): the whole work on raw lines,
   * parsing only what it must (deid's `deidentifyLines`); the result is that
   * of splitting the lines and `map`.
   */
  lines?: (raw: RawLines, ctx: StageContext, out: ByteBuilder) => void;
  /** Encodes each batch as Bundle entries instead of NDJSON. */
  encoder?: EntryEncoder;
  /** Counters to add to the run's stage stats since the last call (then zeroed); structured-cloneable. */
  takeCounters?: () => unknown;
  /** The job's report when the run ends (deid's DeidReport). */
  report?: () => unknown;
}

export function buildJob(job: WorkerJob, lineOptions: LineOptions = {}): JobCore {
  switch (job.kind) {
    case 'cat':
      return {};
    case 'deid': {
      const deidentifier = createDeidentifier(job.options);
      return {
        map: (batch, ctx) => deidentifyBatch(batch, deidentifier, ctx),
        lines: deidentifier.editsText ? deidentifyLines(deidentifier, lineOptions) : undefined,
        report: () => deidentifier.report,
      };
    }
    case 'pretag':
      return { ...pretagJob(job.rules, job.states), holds: job.hold };
    case 'bundle':
      return { encoder: new EntryEncoder(job.options) };
  }
}

/** `pretagStage`'s Tagger, on settled patient states (or none: the smoking-status Observations are held). */
function pretagJob(rules: PretagCode[], cloned: PatientStates | undefined): JobCore {
  // A structured clone keeps the table's typed arrays, not its class.
  const states = cloned && (Object.setPrototypeOf(cloned, PatientStates.prototype) as PatientStates);
  const contradictory = (resource: Resource) => states?.get(subjectReference(resource)) === CONTRADICTORY;
  const stats = newPretagStats('per-record');
  const tagger = new Tagger(new Set(rules), stats);
  return {
    map: (batch, ctx) => tagger.batch(batch, contradictory, ctx.rejects),
    takeCounters: () => takePretagCounts(stats),
  };
}
