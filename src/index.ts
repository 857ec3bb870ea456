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
export { KeySet, type KeySetOptions } from './util/keySet.js';
export {
  BundleAssembler,
  BundleFormat,
  bundleEntry,
  bundleFiles,
  EntryEncoder,
  entryUuid,
  requestUrl,
  toTransactionBundle,
  type BundleOptions,
  type EncodedEntries,
  type BundleStats,
  type BundleType,
  type EntryOptions,
} from '../transforms/toTransactionBundle.js';
export {
  addTags,
  ALL_RULES,
  hFlagTiter,
  isSmokingObservation,
  mayBeSmokingStatus,
  missingResult,
  NEVER_SMOKER_CODES,
  PRETAG_CODES,
  PRETAG_TEXT,
  PRETAG_URL,
  pretagCodes,
  pretagCodesOf,
  pretagExtension,
  pretagRecord,
  pretagStage,
  smokingStatus,
  subjectReference,
  type PretagCode,
  type PretagOptions,
  type PretagRules,
  type PretagStats,
  type SmokingStatus,
} from '../transforms/pretag.js';
export { PatientStates } from './pretag/patientStates.js';
export {
  EXPORT_TYPES,
  everythingSearch,
  fetchPages,
  fetchStage,
  typeSearches,
  type EverythingOptions,
  type FetchOptions,
  type FetchStage,
  type Search,
  type SearchStats,
} from '../transforms/fetchPages.js';
export * from './http/index.js';
export { checkTenant, mintStepUpToken, signStepUpToken, StepUpTokens, TENANT_PATTERN, type StepUpClaims } from './healthclaw/stepUp.js';
export {
  createDeidentifier,
  deidentify,
  deidentifyStage,
  PROFILES,
  type Deidentifier,
  type DeidentifyOptions,
  type DeidSettings,
  type Profile,
} from '../transforms/deidentify.js';
export { Pseudonymizer, uuidFromDigest, type IdMode, type KeySource } from './deid/pseudonym.js';
export { DeidReport } from './deid/report.js';
export { CENSUS_UNION_ZIP3, loadZip3Table, safeHarborZip, type Zip3Table } from './deid/zip3.js';
export {
  BulkAccount,
  DirDestination,
  FileFetcher,
  LineCounter,
  SmartAuth,
  StdoutDestination,
  bearerAuth,
  cancelExport,
  checkStatus,
  clientAssertion,
  downloadFiles,
  loadSigningKey,
  noAuth,
  parseManifest,
  planFiles,
  pollStatus,
  runDownload,
  runExport,
  type Auth,
  type BulkSession,
  type ExportParameters,
  type KickoffRequest,
  type Manifest,
  type PollPolicy,
} from './bulk/index.js';
export {
  DROPPED_NO_ID,
  DROPPED_SUPERSEDED,
  DROPPED_TYPE,
  FASTEN_DEFAULT_TYPES,
  fastenConvert,
  fastenKey,
  fastenStats,
  indexCollisions,
  type FastenOptions,
  type FastenStats,
} from '../transforms/fastenConvert.js';
export { CollisionIndex, lastUpdatedOf } from './fasten/collisions.js';
export { FastenExportScanner, looksLikeFastenExport } from './fasten/exportScanner.js';
export { fastenSplit, type FastenSplitOptions, type Misfiled } from './fasten/split.js';
export { fastenCredentials, readFastenInputs, type FastenInput } from './fasten/read.js';
export {
  DEFAULT_INGEST_BYTES,
  DEFAULT_INGEST_ENTRIES,
  DEFAULT_INGEST_CONCURRENCY,
  postChunk,
  postIngest,
  type ChunkAnswer,
  type IngestMode,
  type IngestStats,
  type PostIngestOptions,
} from '../transforms/postIngest.js';
export { Checkpoint, type ServerSums } from './ingest/checkpoint.js';
export { checkTarget, ingestClient, postHeaders, postUrl, type IngestTarget } from './ingest/target.js';
