/**
 * hx as a library: the spine (reading, framing, accounting, output) and one
 * transform per module. A transform is a pure per-record core plus a stream
 * stage over `Batch`es; compose them with `stream.pipeline`:
 *
 *     await pipeline(readInputs(files, ctx), deidentifyStage(opts, ctx), ndjsonSerialize(ctx.account), process.stdout)
 */
export { Account } from './account.js';
export { HxError, RecordRejected, UsageError } from './errors.js';
export { Rejects } from './rejects.js';
export { mapBatch, mapStage, type RecordCore, type StageContext } from './stage.js';
export type { Batch, Location, Resource } from './types.js';
export { inputSize, readInputs, type ReadOptions } from './io/input.js';
export { openOutput, type Output, type OutputOptions } from './io/output.js';
export { ndjsonSerialize } from './io/serialize.js';
export { DocumentScanner } from './io/documentScanner.js';
export { DEFAULT_MAX_LINE_BYTES, ndjsonSplit, parseRecord, unpackEntry, type SplitOptions } from '../transforms/ndjsonSplit.js';
