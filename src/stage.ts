import { Transform } from 'node:stream';
import type { Account } from './account.js';
import { RecordRejected } from './errors.js';
import type { Rejects } from './rejects.js';
import { BATCHES_IN_FLIGHT, type Batch, type Location, type RecordText, type Resource } from './types.js';

/** What every stream stage needs from the run: the account and the reject policy. */
export interface StageContext {
  account: Account;
  rejects: Rejects;
}

/**
 * A per-record core: returns the resource to pass on (the same object or a
 * new one), or `null` to drop it on purpose; throws `RecordRejected` to
 * reject it.
 */
export type RecordCore = (resource: Resource, loc: Location) => Resource | null;

/**
 * The stream stage built on a per-record core: maps each batch, routes
 * rejects to the run's policy and counts drops under `dropReason`.
 */
export function mapStage(core: RecordCore, ctx: StageContext, dropReason = 'dropped'): Transform {
  return new Transform({
    objectMode: true,
    highWaterMark: BATCHES_IN_FLIGHT,
    transform(batch: Batch, _encoding, callback) {
      try {
        callback(null, mapBatch(batch, core, ctx, dropReason));
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/**
 * The batch through a per-record core. The new Batch carries no texts
 * (`Batch.texts`: a core may change a resource in place) unless `textOf`
 * gives them: the text of each record kept, from its input text.
 */
export function mapBatch(
  batch: Batch,
  core: RecordCore,
  ctx: StageContext,
  dropReason: string,
  textOf?: (input: RecordText | undefined) => RecordText | undefined,
): Batch {
  const resources: Resource[] = [];
  const lines: number[] = [];
  const texts = textOf && batch.texts ? ([] as (RecordText | undefined)[]) : undefined;
  const { source } = batch;
  for (let i = 0; i < batch.resources.length; i++) {
    const loc = { source, line: batch.lines[i]! };
    const input = batch.resources[i]!;
    let output: Resource | null;
    try {
      output = core(input, loc);
    } catch (err) {
      if (!(err instanceof RecordRejected)) throw err;
      ctx.rejects.reject(loc, `${input.resourceType}: ${err.reason}`, () => JSON.stringify(input));
      continue;
    }
    if (output === null) {
      ctx.account.countDropped(dropReason);
      continue;
    }
    resources.push(output);
    lines.push(loc.line);
    texts?.push(textOf!(batch.texts![i]));
  }
  return texts ? { source, lines, resources, texts } : { source, lines, resources };
}
