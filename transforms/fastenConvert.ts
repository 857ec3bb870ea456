/**
 * fastenConvert: the resources of Fasten Health exports → the FHIR resources
 * HealthClaw's `convert_fasten.py` would keep, in input order.
 *
 * The per-record core is `fastenKey` (a resource → its `Type/id` key, or
 * the reason it is dropped); the stream stage `fastenConvert()` applies it
 * with the collision rule of the contract, decided by a `CollisionIndex`
 * filled by a first pass (`indexCollisions`) over the same input. Reading
 * the two Fasten forms is `src/fasten/` (export file scanner, reader).
 *
 * What differs from the Python script on purpose: the type is the
 * resource's `resourceType` (a misfiled resource is reported, not written
 * under its map key); the output keeps input order (a sort would need the
 * whole input in memory); and nothing is loaded whole.
 */
import { Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Account } from '../src/account.js';
import { RecordRejected } from '../src/errors.js';
import { CollisionIndex, lastUpdatedOf } from '../src/fasten/collisions.js';
import type { StageContext } from '../src/stage.js';
import { BATCHES_IN_FLIGHT, type Batch, type Resource } from '../src/types.js';
import { requestUrl } from './toTransactionBundle.js';

/** The types `convert_fasten.py` keeps by default, in its order. */
export const FASTEN_DEFAULT_TYPES: readonly string[] = [
  'Patient',
  'Condition',
  'Observation',
  'Immunization',
  'MedicationRequest',
  'AllergyIntolerance',
  'DiagnosticReport',
  'Procedure',
  'CarePlan',
  'Coverage',
  'Encounter',
];

export const DROPPED_NO_ID = 'no id';
export const DROPPED_TYPE = 'type not selected';
export const DROPPED_SUPERSEDED = 'superseded (type, id)';

export interface FastenOptions {
  /** Types to keep; every type when undefined (`--all-types`). */
  types?: ReadonlySet<string>;
}

/** The counters of this stage, under `stages.fasten`. */
export interface FastenStats extends Record<string, unknown> {
  kept: number;
  withoutId: number;
  typeNotSelected: number;
  superseded: number;
  /** Resources filed under a map key other than their resourceType (export files). */
  misfiled: number;
  collidingKeys: number;
  /** Memory of the collision index at the end, in bytes. */
  indexBytes: number;
}

export function fastenStats(account: Account): FastenStats {
  return account.stage('fasten', () => ({
    kept: 0,
    withoutId: 0,
    typeNotSelected: 0,
    superseded: 0,
    misfiled: 0,
    collidingKeys: 0,
    indexBytes: 0,
  }));
}

/**
 * The core: the key (`Type/id`, as `hx bundle` writes it in `request.url`)
 * of a resource to convert, or why it is dropped. Throws RecordRejected for
 * an id that is not a string.
 */
export function fastenKey(resource: Resource, options: FastenOptions): string | typeof DROPPED_NO_ID | typeof DROPPED_TYPE {
  if (options.types !== undefined && !options.types.has(resource.resourceType)) return DROPPED_TYPE;
  // Python's `if not rid` drops a missing, null or empty id alike, as requestUrl does.
  return requestUrl(resource) ?? DROPPED_NO_ID;
}

const isDrop = (key: string): key is typeof DROPPED_NO_ID | typeof DROPPED_TYPE => key === DROPPED_NO_ID || key === DROPPED_TYPE;

/**
 * Pass 1: reads `source` (Batches) to its end, recording every key in the
 * index. Records the core rejects are skipped here; pass 2 reports them.
 */
export async function indexCollisions(source: Readable, options: FastenOptions, index = new CollisionIndex()): Promise<CollisionIndex> {
  let position = 0;
  const sink = new Writable({
    objectMode: true,
    highWaterMark: BATCHES_IN_FLIGHT,
    write(batch: Batch, _encoding, callback) {
      for (const resource of batch.resources) {
        position++;
        let key: string;
        try {
          key = fastenKey(resource, options);
        } catch (err) {
          if (err instanceof RecordRejected) continue;
          return callback(err as Error);
        }
        if (!isDrop(key)) index.observe(key, lastUpdatedOf(resource), position);
      }
      callback();
    },
  });
  await pipeline(source, sink);
  return index;
}

/**
 * Pass 2, the stream stage: keeps the resources the core and the index
 * keep, drops (and counts) the others. Its input must be the same record
 * sequence pass 1 read.
 */
export function fastenConvert(index: CollisionIndex, options: FastenOptions, ctx: StageContext): Transform {
  const stats = fastenStats(ctx.account);
  let position = 0;
  const drop = (reason: string) => {
    ctx.account.countDropped(reason);
    if (reason === DROPPED_NO_ID) stats.withoutId++;
    else if (reason === DROPPED_TYPE) stats.typeNotSelected++;
    else stats.superseded++;
  };
  return new Transform({
    objectMode: true,
    highWaterMark: BATCHES_IN_FLIGHT,
    transform(batch: Batch, _encoding, callback) {
      const resources: Resource[] = [];
      const lines: number[] = [];
      for (let i = 0; i < batch.resources.length; i++) {
        const resource = batch.resources[i]!;
        position++;
        let key: string;
        try {
          key = fastenKey(resource, options);
        } catch (err) {
          if (!(err instanceof RecordRejected)) return callback(err as Error);
          try {
            ctx.rejects.reject({ source: batch.source, line: batch.lines[i]! }, `${resource.resourceType}: ${err.reason}`, () =>
              JSON.stringify(resource),
            );
          } catch (failure) {
            return callback(failure as Error);
          }
          continue;
        }
        if (isDrop(key)) drop(key);
        else if (!index.wins(key, lastUpdatedOf(resource), position)) drop(DROPPED_SUPERSEDED);
        else {
          stats.kept++;
          resources.push(resource);
          lines.push(batch.lines[i]!);
        }
      }
      callback(null, resources.length > 0 ? { source: batch.source, lines, resources } : undefined);
    },
    flush(callback) {
      stats.collidingKeys = index.collidingKeys;
      stats.indexBytes = index.bytes;
      const n = stats.withoutId;
      if (n > 0) ctx.account.warn(`${n} ${n === 1 ? 'resource' : 'resources'} without id dropped (as convert_fasten.py does)`);
      callback();
    },
  });
}
