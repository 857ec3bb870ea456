/**
 * The per-record work a worker thread can do, built from options that cross
 * the thread boundary (structured clones: data, no methods). The main thread
 * builds the same cores for the Batches it transforms itself.
 */
import { createDeidentifier, type DeidentifyOptions } from '../../transforms/deidentify.js';
import { addTags, isSmokingObservation, pretagCodes, pretagCodesOf, subjectReference, type PretagCode } from '../../transforms/pretag.js';
import { EntryEncoder, type EntryOptions } from '../../transforms/toTransactionBundle.js';
import { CONTRADICTORY, PatientStates } from '../pretag/patientStates.js';
import type { RecordCore } from '../stage.js';

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
  /** Sets the smoking-status Observations of each batch aside (`holdSmoking`) before `core`. */
  holds?: boolean;
  core?: RecordCore;
  /** `core` never changes a resource it returns as the same object: such resources keep their text (`mapBatch`). */
  keepsTexts?: boolean;
  /** Encodes each batch as Bundle entries instead of NDJSON. */
  encoder?: EntryEncoder;
  /** Counters to add to the run's stage stats since the last call (then zeroed). */
  takeCounters?: () => Record<string, number>;
  /** The job's report when the run ends (deid's DeidReport). */
  report?: () => unknown;
}

export function buildJob(job: WorkerJob): JobCore {
  switch (job.kind) {
    case 'cat':
      return {};
    case 'deid': {
      const deidentifier = createDeidentifier(job.options);
      return { core: (resource) => deidentifier.deidentify(resource), report: () => deidentifier.report };
    }
    case 'pretag':
      // addTags copies the resource it tags, so an untouched one is the same object.
      return { ...pretagJob(job.rules, job.states), holds: job.hold, keepsTexts: true };
    case 'bundle':
      return { encoder: new EntryEncoder(job.options) };
  }
}

/** The counters of `PretagStats` that per-record tagging adds to. */
export const PRETAG_COUNTERS = ['examined', 'observations', 'smokingObservations', 'resourcesTagged', 'smoking_contradiction', 'h_flag_titer', 'missing_result'] as const;
type PretagCounter = (typeof PRETAG_COUNTERS)[number];

/** What `pretagStage`'s Tagger does to one record, on settled patient states, counting the same things. */
function pretagJob(ruleList: PretagCode[], cloned: PatientStates | undefined): JobCore {
  const rules = new Set(ruleList);
  const smokingRule = rules.has('smoking_contradiction');
  // A structured clone keeps the table's typed arrays, not its class.
  const states = cloned && (Object.setPrototypeOf(cloned, PatientStates.prototype) as PatientStates);
  let counts = zero();
  return {
    core: (resource) => {
      counts.examined++;
      if (resource.resourceType !== 'Observation') return resource;
      counts.observations++;
      const smoking = smokingRule && isSmokingObservation(resource);
      if (smoking) counts.smokingObservations++;
      const contradictory = smoking && states !== undefined && states.get(subjectReference(resource)) === CONTRADICTORY;
      const codes = pretagCodes(resource, rules, contradictory);
      if (codes.length === 0) return resource;
      const tagged = addTags(resource, codes); // throws RecordRejected when extension is not an array
      if (tagged === resource) return resource;
      const present = pretagCodesOf(resource);
      for (const code of codes) if (!present.includes(code)) counts[code]++;
      counts.resourcesTagged++;
      return tagged;
    },
    takeCounters: () => {
      const out = counts;
      counts = zero();
      return out;
    },
  };
}

function zero(): Record<PretagCounter, number> {
  return { examined: 0, observations: 0, smokingObservations: 0, resourcesTagged: 0, smoking_contradiction: 0, h_flag_titer: 0, missing_result: 0 };
}
