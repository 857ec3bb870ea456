/**
 * postIngest: resources → HealthClaw (or any FHIR server), in Bundles cut
 * by toTransactionBundle's budgets and posted with bounded concurrency.
 *
 * - HealthClaw (`mode: 'ingest'`): `POST {base}/Bundle/$ingest-context`
 *   with `X-Tenant-ID`, a step-up token renewed before it expires,
 *   `X-Human-Confirmed: true`; the 201 answers are summed.
 * - Any FHIR server (`mode: 'transaction'`): `POST {base}` of a transaction
 *   Bundle; entries answered 2xx count as acknowledged.
 *
 * The sink is a Writable of Batches: each batch goes into a
 * `BundleAssembler`; each Bundle it completes is posted through p-limit, and
 * the write callback waits while `concurrency` posts are in flight, so
 * reading pauses (backpressure) and memory holds at most concurrency + 1
 * chunks. Retries (429 with Retry-After, 5xx, resets) are the HTTP client's;
 * a 413 splits the chunk in two and posts the halves; any other 4xx stops
 * the run, naming the chunk and quoting the server's diagnostics.
 *
 * The per-record core is the assembler's (`bundleEntry`); the chunk-level
 * core is `postChunk` (one Bundle text → the server's acknowledgement).
 */
import { Writable } from 'node:stream';
import pLimit from 'p-limit';
import { Account } from '../src/account.js';
import { HxError } from '../src/errors.js';
import { HttpError, type HttpClient } from '../src/http/client.js';
import { Checkpoint, chunkDigest, type ServerSums } from '../src/ingest/checkpoint.js';
import type { StageContext } from '../src/stage.js';
import type { Batch, Resource } from '../src/types.js';
import { ByteBuilder } from '../src/io/byteBuilder.js';
import { BundleAssembler } from './toTransactionBundle.js';

export type IngestMode = 'ingest' | 'transaction';

/** Default budgets: half the server's 16 MiB limit leaves room for its own overhead. */
export const DEFAULT_INGEST_BYTES = 8 * 1024 * 1024;
export const DEFAULT_INGEST_ENTRIES = 5000;
export const DEFAULT_INGEST_CONCURRENCY = 2;

export interface PostIngestOptions {
  /** FHIR base URL, without a trailing `/`. */
  base: string;
  mode: IngestMode;
  client: HttpClient;
  maxBytes?: number;
  maxEntries?: number;
  concurrency?: number;
  checkpoint?: Checkpoint;
  /** Cut the chunks and count them, but send nothing. */
  dryRun?: boolean;
  /** Told after each chunk is acknowledged (progress, tests). */
  onChunk?: (n: number, answer: ChunkAnswer) => void;
}

/** What the server said about one chunk. */
export interface ChunkAnswer {
  sent: number;
  resourceCount: number;
  skippedCount: number;
  skippedTypes: Record<string, number>;
  contextIds: string[];
}

/** The counters of this stage, under `stages.ingest` in the report. */
export interface IngestStats extends Record<string, unknown> {
  mode: IngestMode;
  chunks: number;
  chunksPosted: number;
  /** Chunks acknowledged by an earlier run (checkpoint), not sent again. */
  chunksResumed: number;
  /** Extra posts made by splitting chunks the server found too large (413). */
  splits: number;
  /** Entries sent in chunks the server acknowledged, this run. */
  sent: number;
  /** Summed server answers, this run: `resource_count`, `skipped_count`, `skipped_types`. */
  resourceCount: number;
  skippedCount: number;
  skippedTypes: Record<string, number>;
  /** Entries sent whose fate the answers do not account for (sent − stored − skipped). */
  unacknowledged: number;
  contextIds: string[];
  /** Sums over the whole import, earlier runs included (with a checkpoint). */
  total?: ServerSums;
}

export const RESUMED_REASON = 'acknowledged by an earlier run (checkpoint)';
export const DRY_RUN_REASON = 'dry run (not sent)';

/** The sink: Batches → posted chunks; it finishes when the last answer is in. */
export function postIngest(options: PostIngestOptions, ctx: StageContext): Writable {
  return new IngestSink(options, ctx);
}

interface Chunk {
  n: number;
  body: Buffer;
  entries: number;
  /** Resources per type in this chunk, counted as written once it is acknowledged. */
  types: Map<string, number>;
}

class IngestSink extends Writable {
  readonly stats: IngestStats;
  private readonly assembler: BundleAssembler;
  /** The assembler counts into its own account; the run's counts a resource when the server has it. */
  private readonly chunkAccount: Account;
  private readonly limit: ReturnType<typeof pLimit>;
  private readonly concurrency: number;
  private readonly checkpoint: Checkpoint;
  private readonly inFlight = new Set<Promise<void>>();
  private open: Chunk;
  /** The open chunk's bytes: no copy for the request (undici sends a Buffer as is). */
  private readonly buffer = new ByteBuilder(1 << 20);
  private next = 1;
  private failure: Error | undefined;
  private readonly one: Batch = { source: '', lines: [0], resources: [] };

  constructor(
    private readonly options: PostIngestOptions,
    private readonly ctx: StageContext,
  ) {
    super({ objectMode: true, highWaterMark: 1 });
    this.concurrency = Math.max(1, options.concurrency ?? DEFAULT_INGEST_CONCURRENCY);
    this.limit = pLimit(this.concurrency);
    this.checkpoint = options.checkpoint ?? Checkpoint.open(undefined, '');
    this.stats = ctx.account.stage('ingest', () => ({
      mode: options.mode,
      chunks: 0,
      chunksPosted: 0,
      chunksResumed: 0,
      splits: 0,
      sent: 0,
      resourceCount: 0,
      skippedCount: 0,
      skippedTypes: {},
      unacknowledged: 0,
      contextIds: [],
    }));
    this.chunkAccount = new Account();
    this.chunkAccount.onWarning = (message) => ctx.account.warn(message);
    this.assembler = new BundleAssembler(
      {
        type: 'transaction',
        // The server upserts in order; sending every resource keeps its semantics (last wins).
        dedupe: false,
        maxBytes: options.maxBytes ?? DEFAULT_INGEST_BYTES,
        maxEntries: options.maxEntries ?? DEFAULT_INGEST_ENTRIES,
      },
      { account: this.chunkAccount, rejects: ctx.rejects },
      (piece, endsBundle) => this.piece(piece, endsBundle),
    );
    this.open = this.newChunk();
  }

  override _write(batch: Batch, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.failure) return callback(this.failure);
    try {
      // One resource at a time, through one reused batch, so each lands in a known chunk.
      const one = this.one;
      one.source = batch.source;
      for (let i = 0; i < batch.resources.length; i++) {
        const resource = batch.resources[i]!;
        one.lines[0] = batch.lines[i]!;
        one.resources[0] = resource;
        const before = this.chunkAccount.written;
        this.assembler.add(one);
        // An entry placed now is in the open chunk: the assembler closes a full one before placing.
        if (this.chunkAccount.written !== before) this.countEntry(resource);
      }
    } catch (err) {
      return callback(err as Error);
    }
    this.waitForRoom().then(() => callback(this.failure), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.finishAll().then(() => callback(), callback);
  }

  private async finishAll(): Promise<void> {
    if (!this.failure) this.assembler.finish();
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
    const stats = this.stats;
    this.checkpoint.checkLength(stats.chunks);
    stats.unacknowledged = stats.sent - stats.resourceCount - stats.skippedCount;
    if (stats.unacknowledged !== 0) {
      this.ctx.account.warn(`the server acknowledged ${stats.resourceCount + stats.skippedCount} of the ${stats.sent} resources sent`);
    }
    if (this.checkpoint.resumed > 0 || this.options.checkpoint) stats.total = this.checkpoint.sums;
  }

  private countEntry(resource: Resource): void {
    this.open.entries++;
    const types = this.open.types;
    types.set(resource.resourceType, (types.get(resource.resourceType) ?? 0) + 1);
  }

  private newChunk(): Chunk {
    return { n: this.next++, body: EMPTY, entries: 0, types: new Map() };
  }

  /** Text from the assembler: pieces of the open Bundle, its end marked. */
  private piece(piece: string | Uint8Array, endsBundle: boolean): void {
    this.buffer.append(piece);
    if (!endsBundle) return;
    const chunk = this.open;
    // The tail ends with the newline that separates NDJSON Bundles: not part of a request body.
    chunk.body = this.buffer.take().subarray(0, -1);
    this.open = this.newChunk();
    this.dispatch(chunk);
  }

  private dispatch(chunk: Chunk): void {
    this.stats.chunks++;
    if (this.failure) return;
    // Only a checkpoint needs the digest (it proves a rerun reads the same input).
    const digest = this.options.checkpoint ? chunkDigest(chunk.body) : '';
    if (this.checkpoint.acknowledged(chunk.n, digest)) {
      this.stats.chunksResumed++;
      this.ctx.account.countDropped(RESUMED_REASON, chunk.entries);
      return;
    }
    if (this.options.dryRun) {
      this.ctx.account.countDropped(DRY_RUN_REASON, chunk.entries);
      return;
    }
    const task = this.limit(() => this.post(chunk, digest)).then(
      () => {
        this.inFlight.delete(task);
      },
      (err: Error) => {
        this.inFlight.delete(task);
        // Posts still queued see the failure and return without sending.
        this.failure ??= err;
      },
    );
    this.inFlight.add(task);
  }

  /** Resolves when fewer than `concurrency` posts are running or queued. */
  private async waitForRoom(): Promise<void> {
    while (this.inFlight.size >= this.concurrency && !this.failure) await Promise.race(this.inFlight);
  }

  private async post(chunk: Chunk, digest: string): Promise<void> {
    if (this.failure) return;
    const answer = await postChunk(chunk.body, chunk.entries, chunk.n, this.options, () => this.stats.splits++);
    this.stats.chunksPosted++;
    this.stats.sent += answer.sent;
    this.stats.resourceCount += answer.resourceCount;
    this.stats.skippedCount += answer.skippedCount;
    for (const [type, n] of Object.entries(answer.skippedTypes)) this.stats.skippedTypes[type] = (this.stats.skippedTypes[type] ?? 0) + n;
    this.stats.contextIds.push(...answer.contextIds);
    const { account } = this.ctx;
    for (const [type, n] of chunk.types) {
      account.written += n;
      account.writtenByType.set(type, (account.writtenByType.get(type) ?? 0) + n);
    }
    this.checkpoint.acknowledge(chunk.n, digest, {
      resourceCount: answer.resourceCount,
      skippedCount: answer.skippedCount,
      skippedTypes: answer.skippedTypes,
      sent: answer.sent,
    });
    this.options.onChunk?.(chunk.n, answer);
  }
}

/**
 * The chunk-level core: posts one Bundle and returns the server's answer.
 * A 413 splits the Bundle's entries in two and posts each half (recursively);
 * a single entry the server still finds too large fails the run.
 */
export async function postChunk(
  body: Buffer | string,
  entries: number,
  n: number,
  options: Pick<PostIngestOptions, 'base' | 'mode' | 'client'>,
  onSplit: () => void = () => {},
): Promise<ChunkAnswer> {
  const { client, mode } = options;
  const url = mode === 'ingest' ? `${options.base}/Bundle/$ingest-context` : options.base;
  const what = `chunk ${n}`;
  try {
    const { value } = await client.json<Record<string, unknown>>({
      url,
      method: 'POST',
      body,
      what,
      headers: { 'content-type': 'application/fhir+json' },
    });
    return mode === 'ingest' ? ingestAnswer(value, entries, what) : transactionAnswer(value, entries, what);
  } catch (err) {
    if (!(err instanceof HttpError) || err.status !== 413) throw err;
  }
  const bundle = JSON.parse(body.toString()) as { entry: unknown[] } & Record<string, unknown>;
  if (bundle.entry.length <= 1) {
    throw new HxError(`${what}: the server refuses a single resource as too large (HTTP 413); the resource alone exceeds its body limit`);
  }
  onSplit();
  const half = Math.ceil(bundle.entry.length / 2);
  const first = JSON.stringify({ ...bundle, entry: bundle.entry.slice(0, half) });
  const second = JSON.stringify({ ...bundle, entry: bundle.entry.slice(half) });
  const a = await postChunk(first, half, n, options, onSplit);
  const b = await postChunk(second, bundle.entry.length - half, n, options, onSplit);
  const skippedTypes = { ...a.skippedTypes };
  for (const [type, count] of Object.entries(b.skippedTypes)) skippedTypes[type] = (skippedTypes[type] ?? 0) + count;
  return {
    sent: a.sent + b.sent,
    resourceCount: a.resourceCount + b.resourceCount,
    skippedCount: a.skippedCount + b.skippedCount,
    skippedTypes,
    contextIds: [...a.contextIds, ...b.contextIds],
  };
}

const EMPTY = Buffer.alloc(0);

function ingestAnswer(value: Record<string, unknown> | undefined, sent: number, what: string): ChunkAnswer {
  const resourceCount = value?.resource_count;
  const skippedCount = value?.skipped_count;
  if (typeof resourceCount !== 'number' || typeof skippedCount !== 'number') {
    throw new HxError(`${what}: the server's answer has no resource_count/skipped_count (is --base-url a HealthClaw server? try --mode transaction)`);
  }
  const skippedTypes: Record<string, number> = {};
  const said = value?.skipped_types;
  if (said && typeof said === 'object') for (const [type, n] of Object.entries(said)) if (typeof n === 'number') skippedTypes[type] = n;
  const contextId = value?.context_id;
  return { sent, resourceCount, skippedCount, skippedTypes, contextIds: typeof contextId === 'string' ? [contextId] : [] };
}

function transactionAnswer(value: Record<string, unknown> | undefined, sent: number, what: string): ChunkAnswer {
  const entries = value?.entry;
  if (value?.resourceType !== 'Bundle' || !Array.isArray(entries)) throw new HxError(`${what}: the server's answer is not a transaction-response Bundle`);
  let ok = 0;
  for (const entry of entries) if (/^2\d\d/.test(String((entry as { response?: { status?: unknown } })?.response?.status ?? ''))) ok++;
  const failed = entries.length - ok;
  return { sent, resourceCount: ok, skippedCount: failed, skippedTypes: failed > 0 ? { '(not 2xx)': failed } : {}, contextIds: [] };
}
