/**
 * What a transform command contributes to a run, shared by `hx <command>`
 * and the stages of `hx run "a | b | c"`: both build the run from the same
 * `plan` of the same parsed options, so a stage takes exactly the options of
 * its command, with the same checks and the same effect.
 */
import type { Transform } from 'node:stream';
import type { ArgumentsCamelCase, CommandModule } from 'yargs';
import type { Account } from '../account.js';
import { parallelSerialize, type ParallelOutput, type ParallelStage } from '../io/workers.js';
import type { StageContext } from '../stage.js';
import { runRecords, type InputArgs, type OutputArgs, type RunSpec } from './common.js';

export interface StagePlan {
  /** Batch → Batch stages, in order. */
  stages?: (ctx: StageContext) => Transform[];
  /** Batches → bytes (NDJSON when absent): only the last stage of a run may have one. */
  serializer?: RunSpec['serializer'];
  /** The serializer parses NDJSON lines itself (in worker threads): read them unparsed. */
  rawLines?: boolean;
  /** The stage writes every record afresh (deid): the reader need not keep the text it was read from. */
  ignoresTexts?: boolean;
  /** The stage's work with records parsed in worker threads (`--workers`); without it, the run keeps to one thread. */
  parallel?: (ctx: StageContext) => ParallelStage;
  /** The last stage's bytes from worker threads' results (bundle's); NDJSON when absent. */
  parallelOutput?: (ctx: StageContext) => ParallelOutput;
  /** A sink taking Batches itself, instead of serializer + output: last stage only. */
  sink?: RunSpec['sink'];
  /**
   * Called once the run is over, `account` undefined when it failed: the
   * stage's own reports (`--explain`, its `-v` lines).
   */
  finish?: (account: Account | undefined) => void;
}

export interface PlanContext {
  /**
   * No stage before this one changes the records: the input files hold
   * exactly what the stage will be given (pretag may read them twice).
   */
  readsInput: boolean;
}

/** A command that can be a stage of `hx run`. */
export interface StageCommand<A extends InputArgs & OutputArgs = InputArgs & OutputArgs> {
  command: CommandModule<object, A>;
  /** Checks the options (throwing UsageError) and builds the plan; reads no input. */
  plan(argv: ArgumentsCamelCase<A>, context: PlanContext): StagePlan;
}

/** Runs a plan alone, as `hx <command>` does. */
export async function runPlan(argv: InputArgs & OutputArgs, plan: StagePlan): Promise<Account> {
  let account: Account | undefined;
  try {
    account = await runRecords({ input: argv, output: argv, ...plan });
    return account;
  } finally {
    plan.finish?.(account);
  }
}

/**
 * The plans of a run's stages with their records parsed in `workers`
 * threads (`src/io/workers.ts`), or undefined when one thread it is: one
 * worker asked for, or a stage that cannot (bundle --dir writes files).
 */
export function inWorkers(plans: StagePlan[], workers: number, input: InputArgs): StagePlan | undefined {
  if (workers <= 1) return undefined;
  const last = plans.at(-1)!;
  const stages = last.parallelOutput ? plans.slice(0, -1) : plans;
  if (!stages.every((plan) => plan.parallel) || ((last.serializer || last.sink) && !last.parallelOutput)) return undefined;
  return {
    rawLines: true,
    ignoresTexts: plans[0]!.ignoresTexts,
    serializer: (ctx) =>
      parallelSerialize(
        {
          workers,
          maxLineBytes: input['max-line-bytes'],
          unpackBundles: input.unpack,
          dropReason: 'dropped',
          stages: stages.map((plan) => plan.parallel!(ctx)),
          output: last.parallelOutput?.(ctx),
        },
        ctx,
      ),
    finish: (account) => {
      for (const plan of plans) plan.finish?.(account);
    },
  };
}

/** The plans of a run's stages as one plan: stages in order, the last one's bytes. */
export function composePlans(plans: StagePlan[]): StagePlan {
  const last = plans.at(-1);
  return {
    ignoresTexts: plans[0]?.ignoresTexts,
    stages: (ctx) => plans.flatMap((plan) => plan.stages?.(ctx) ?? []),
    serializer: last?.serializer,
    sink: last?.sink,
    finish: (account) => {
      for (const plan of plans) plan.finish?.(account);
    },
  };
}

/**
 * Splits `deid --profile safe-harbor | pretag | bundle -o "my out.json"`
 * into the words of each stage, as a POSIX shell would: single quotes
 * literal, double quotes with `\"` and `\\`, backslash escapes outside
 * quotes, `|` a separator unless quoted. Throws on an unclosed quote.
 */
export function splitPipeline(text: string): string[][] {
  const stages: string[][] = [[]];
  let word: string | undefined;
  const endWord = () => {
    if (word !== undefined) stages.at(-1)!.push(word);
    word = undefined;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      endWord();
    } else if (c === '|') {
      endWord();
      stages.push([]);
    } else if (c === "'") {
      const close = text.indexOf("'", i + 1);
      if (close < 0) throw new Error('unclosed single quote');
      word = (word ?? '') + text.slice(i + 1, close);
      i = close;
    } else if (c === '"') {
      word ??= '';
      for (i++; ; i++) {
        if (i >= text.length) throw new Error('unclosed double quote');
        const d = text[i]!;
        if (d === '"') break;
        if (d === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) word += text[++i];
        else word += d;
      }
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i];
    } else {
      word = (word ?? '') + c;
    }
  }
  endWord();
  return stages;
}
