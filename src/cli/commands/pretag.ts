import { statSync } from 'node:fs';
import type { Readable, Transform } from 'node:stream';
import type { ArgumentsCamelCase, CommandModule } from 'yargs';
import {
  addPretagCounts,
  mayBeSmokingStatus,
  SMOKING_NEEDLES,
  newPretagStats,
  noteStates,
  PRETAG_CODES,
  pretagStage as pretagTransform,
  settlePatients,
  SmokingSpool,
  warnIfPassesDiffer,
  type PretagCounts,
  type PretagStats,
  type PretagCode,
  type PretagRules,
} from '../../../transforms/pretag.js';
import { Account } from '../../account.js';
import { UsageError } from '../../errors.js';
import { readInputs } from '../../io/input.js';
import { Rejects } from '../../rejects.js';
import { PatientStates } from '../../pretag/patientStates.js';
import type { StageContext } from '../../stage.js';
import type { Batch } from '../../types.js';
import { checkWorkers, type ParallelStage } from '../../io/workers.js';
import { buildJob, type JobCore } from '../../io/workerJobs.js';
import { withInputOptions, withOutputOptions, withWorkersOption, type InputArgs, type OutputArgs } from '../common.js';
import { inWorkers, runPlan, type StageCommand, type StagePlan } from '../pipeline.js';

interface PretagArgs extends InputArgs, OutputArgs {
  workers: number;
  rules?: string;
  'smoking-contradiction': boolean;
  'h-flag-titer': boolean;
  'missing-result': boolean;
  'temp-dir'?: string;
}

export const pretagCommand: CommandModule<object, PretagArgs> = {
  command: 'pretag [files..]',
  describe: 'Tag Observations with Curatr pre-tags (smoking contradiction, H flag, missing result) as FHIR extensions',
  builder: (yargs) => {
    // Opt-in here: each worker thread costs ~50 MB of RSS, and pretag's documented bound is 200 MB with files.
    let y = withWorkersOption(withOutputOptions(withInputOptions(yargs)), 1)
      .option('rules', {
        describe: `Apply only these rules (comma-separated: ${PRETAG_CODES.join(', ')}); --no-<rule> skips one`,
        type: 'string',
        requiresArg: true,
      })
      .option('temp-dir', {
        describe: 'Folder for the spool of smoking-status Observations when reading a pipe (default: $TMPDIR)',
        type: 'string',
        requiresArg: true,
      });
    for (const code of PRETAG_CODES) {
      y = y.option(kebab(code), {
        alias: code,
        describe: `Apply ${code} (--no-${code} skips it)`,
        type: 'boolean',
        default: true,
        hidden: true,
      });
    }
    return y
      .example('hx pretag export/*.ndjson.gz -o tagged.ndjson', 'tag a Bulk export; output keeps input order')
      .example('hx cat export.json | hx pretag | hx tags', 'from a pipe: smoking-status Observations come out last')
      .example('hx pretag --rules h_flag_titer,missing_result labs.ndjson', 'only the per-record rules')
      .example('hx pretag --no-smoking_contradiction labs.ndjson', 'skip one rule')
      .epilogue(
        'Rules (only Observations are tagged; nothing else changes): smoking_contradiction (a patient\'s LOINC 72166-2 ' +
          'Observations hold both a never-smoker and an ever-smoker SNOMED code: all of them are tagged), h_flag_titer ' +
          '(interpretation H/HH/HU, or valueString with ">>>" or starting with "H"), missing_result (no value[x]). ' +
          'Tagging twice adds nothing.\n\n' +
          'Order: with files as input, output order = input order (the files are read twice: a quick first read of ' +
          'the smoking-status Observations, then the tagging read). From a pipe (stdin, a FIFO), every other resource ' +
          'passes at once and the smoking-status Observations are held in a temporary file and written after ' +
          'everything else, in input order. Memory: a hash and 2 bits per patient (about 18-36 bytes), never the records.',
      ) as never;
  },
  handler: async (argv) => {
    const plan = pretagPlan(argv, true);
    await runPlan(argv, inWorkers([plan], checkWorkers(argv.workers), argv) ?? plan);
  },
};

/**
 * As a stage of `hx run`: two passes only when it is the first stage that
 * changes records and the inputs are regular files (the first pass must read
 * what the stage is given); otherwise the spool, as `hx pretag` on a pipe.
 */
export const pretagStage: StageCommand<PretagArgs> = {
  command: pretagCommand,
  plan: (argv, { readsInput }) => pretagPlan(argv, readsInput),
};

function pretagPlan(argv: ArgumentsCamelCase<PretagArgs>, readsInput: boolean): StagePlan {
  const rules = selectRules(argv);
  const files = argv.files;
  const rescan =
    readsInput && seekable(files)
      ? () =>
          readInputs(files, {
            // The first read only settles patients: its account and rejects are the second read's business.
            account: new Account(),
            rejects: new Unreported(new Account()),
            maxLineBytes: argv['max-line-bytes'],
            unpackBundles: argv.unpack,
            prefilter: mayBeSmokingStatus,
            needles: SMOKING_NEEDLES,
            // This read skips nearly every byte, so waits on the disk dominate: 256 KiB reads cut the pass
            // by a fifth, 1 MiB by a third; but their buffers pile up until V8 collects them, and the run's
            // peak RSS rose with the size (1 GB, interleaved: 64 KiB 93 MB, 128 KiB 91-96, 256 KiB 100-102,
            // 1 MiB 115). 128 KiB ran as fast as 256 in those runs.
            chunkBytes: 128 << 10,
          }) as Readable
      : undefined;
  return {
    // A Duplex, not a Transform: runRecords only hands its stages to stream.pipeline.
    stages: (ctx) => [pretagTransform({ rules, rescan, tempDir: argv['temp-dir'] }, ctx) as Transform],
    parallel: (ctx) => pretagInWorkers(rules, rescan, argv['temp-dir'], ctx),
  };
}

/**
 * Per-record tagging in worker threads, in the mode `pretagStage` would
 * choose. Two passes: the first settles every patient here and the workers
 * get a copy of the patient table (18-36 bytes per patient, per worker).
 * Spool: the workers send the smoking-status Observations back untouched;
 * they are spooled here and judged, tagged and passed on after the rest.
 */
function pretagInWorkers(rules: PretagRules, rescan: (() => Readable) | undefined, tempDir: string | undefined, ctx: StageContext): ParallelStage {
  const mode = !rules.has('smoking_contradiction') ? 'per-record' : rescan ? 'two-pass' : 'spool';
  // The stats `pretagStage` keeps, filled from the workers' counters and this thread's.
  const stats = ctx.account.stage<PretagStats>('pretag', () => newPretagStats(mode));
  const add = (counts: unknown) => addPretagCounts(stats, counts as PretagCounts);
  let expected = 0;
  let here: JobCore | undefined;
  let spool: SmokingSpool | undefined;
  const tag = (batch: Batch) => {
    const out = here!.map!(batch, ctx);
    add(here!.takeCounters!());
    return out;
  };
  return {
    job: async () => {
      let states: PatientStates | undefined;
      if (mode === 'two-pass') {
        states = new PatientStates();
        expected = await settlePatients(rescan!(), states);
        noteStates(states, stats);
      } else if (mode === 'spool') {
        spool = await SmokingSpool.open(tempDir);
        states = spool.states; // settled by the time the spool is released, and only judged then
      }
      here = buildJob({ kind: 'pretag', rules: [...rules], states });
      return { kind: 'pretag', rules: [...rules], states: mode === 'two-pass' ? states : undefined, hold: mode === 'spool' };
    },
    local: async (batch) => tag(spool ? await spool.holdFrom(batch) : batch),
    addCounters: add,
    hold: (source, held) => spool!.hold(source, held),
    release: async function* () {
      if (!spool) return;
      try {
        await spool.settle(stats);
        for await (const held of spool.release()) yield tag(held);
      } finally {
        await spool.close();
      }
    },
    ended: () => {
      if (mode === 'two-pass') warnIfPassesDiffer(expected, stats, ctx.account);
    },
    abort: () => void spool?.close(),
  };
}

/** `--rules a,b` (snake or kebab case), less every `--no-<rule>`. */
export function selectRules(argv: Pick<PretagArgs, 'rules'> & Partial<Record<string, unknown>>): PretagRules {
  let chosen: PretagCode[] = [...PRETAG_CODES];
  if (argv.rules !== undefined) {
    chosen = [];
    for (const name of argv.rules.split(',').map((s) => s.trim()).filter(Boolean)) {
      const code = name.replaceAll('-', '_') as PretagCode;
      if (!PRETAG_CODES.includes(code)) throw new UsageError(`--rules: unknown rule "${name}" (rules: ${PRETAG_CODES.join(', ')})`);
      chosen.push(code);
    }
  }
  const rules = new Set(chosen.filter((code) => argv[kebab(code)] !== false));
  if (rules.size === 0) throw new UsageError('no rule left to apply (see --rules and --no-<rule>)');
  return rules;
}

function kebab(code: string): string {
  return code.replaceAll('_', '-');
}

/** Regular files only can be read twice; stdin, FIFOs and process substitutions cannot. */
function seekable(files: string[]): boolean {
  if (files.length === 0) return false;
  try {
    return files.every((path) => path !== '-' && statSync(path).isFile());
  } catch {
    return false; // a missing file: the main read reports it
  }
}

/** Rejects of the first read go nowhere: the second read meets the same lines and reports them. */
class Unreported extends Rejects {
  override reject(): void {}
}
