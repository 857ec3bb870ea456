/**
 * Both cores for per-record work (`hx cat`, `hx deid`, `hx pretag`): the reader
 * hands out raw NDJSON lines (`RawLines`, about 64 KiB each) instead of
 * parsed records; worker threads parse, transform and serialise them and
 * send back the text plus what to count. The main thread only reads,
 * frames, posts and writes, and it applies each batch's account and rejects
 * in input order, so output bytes, the account and the reject file's rows are
 * those of the single-thread path.
 *
 * Bounds: at most `2 × workers` batches are in flight (posted, or done and
 * waiting for an earlier one); the reader is paused beyond that.
 * Bundle documents are parsed by the main thread's reader (one document is
 * one stream of entries) and their Batches are transformed there, in order.
 * Cross-record state stays in the main thread: the workers get what they
 * judge by when they start (pretag: the patient table of its first pass).
 */
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { WorkerJob } from './workerJobs.js';
import type { RawLines } from '../../transforms/ndjsonSplit.js';
import { HxError } from '../errors.js';
import type { StageContext } from '../stage.js';
import type { Batch } from '../types.js';
import { ndjsonBytes } from './serialize.js';

export type { WorkerJob } from './workerJobs.js';

export interface WorkerSetup {
  job: WorkerJob;
  maxLineBytes: number;
  unpackBundles: boolean;
  dropReason: string;
  /** Send rejected records' text back (only when there is a reject file to write it to). */
  keepRejectText: boolean;
}

export interface RejectRow {
  line: number;
  reason: string;
  text?: string;
}

/** What one batch of lines became in a worker. */
export interface BatchResult {
  /** The NDJSON of the batch's records, UTF-8. */
  bytes: Uint8Array;
  read: number;
  skippedBlank: number;
  entriesWithoutResource: number;
  warnings: string[];
  rejects: RejectRow[];
  dropped: [string, number][];
  written: [string, number][];
  /** The job's stage counters for this batch (pretag's). */
  counters?: Record<string, number>;
}

export interface ParallelOptions extends Omit<WorkerSetup, 'keepRejectText' | 'job'> {
  workers: number;
  /** The job, or its making when it needs a look at the input first (pretag's first pass): workers start then. */
  job: WorkerJob | (() => Promise<WorkerJob>);
  /** Called once every batch is written and every report merged, before the stream ends. */
  ended?: () => void;
  /** Given each batch's stage counters, in order. */
  addCounters?: (counters: Record<string, number>) => void;
  /** The same work for a Batch the reader parsed itself (a Bundle document), on this thread. */
  local: (batch: Batch) => Batch;
  /** Given each worker's job report (e.g. its DeidReport) when the run ends. */
  mergeReport?: (report: unknown) => void;
}

/** Default of `--workers`: the cores there are. */
export function defaultWorkers(): number {
  return availableParallelism();
}

/** `--workers N`: a whole number of at least 1. */
export function checkWorkers(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new HxError('--workers must be a whole number of at least 1', 2);
  return n;
}

const ENTRY = new URL('./workerEntry.js', import.meta.url);
/**
 * Each worker is a V8 heap of its own; its young generation is what grows
 * with throughput. With 8 MB, `hx deid --workers 2` peaked at 180 MB RSS on
 * the 100 MB corpus (16 MB: 211, 32 MB: 241) at no measurable cost in speed;
 * each worker still costs about 50 MB (its own isolate, code and heap).
 */
const WORKER_YOUNG_MB = 8;

type Reply = { id: number; result?: BatchResult; error?: string; report?: unknown };

/** RawLines or Batches in (from `readInputs(…, {rawLines: true})`), NDJSON text out, in order. */
export function parallelSerialize(options: ParallelOptions, ctx: StageContext): Transform {
  return new ParallelSerialize(options, ctx);
}

/** One batch in flight: posted to a worker, or parsed by the reader and left for this thread. */
type InFlight = { source: string; reply: Promise<Reply> } | { batch: Batch };

class ParallelSerialize extends Transform {
  private workers: Worker[] = [];
  /** Settles when the workers run: started by the first raw lines, so the job may look at the input first. */
  private started: Promise<void> | undefined;
  private readonly waiting = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();
  /** Batches in input order; the head is applied and written first. */
  private readonly queue: InFlight[] = [];
  private nextId = 0;
  private turn = 0;
  private readonly limit: number;

  constructor(
    private readonly options: ParallelOptions,
    private readonly ctx: StageContext,
  ) {
    super({ writableObjectMode: true, writableHighWaterMark: 1 });
    this.limit = 2 * options.workers;
  }

  private async start(): Promise<void> {
    const { workers: count, local: _local, mergeReport: _merge, addCounters: _add, ended: _ended, job, ...setup } = this.options;
    const workerData: WorkerSetup = {
      ...setup,
      job: typeof job === 'function' ? await job() : job,
      keepRejectText: this.ctx.rejects.path !== undefined,
    };
    this.workers = Array.from({ length: count }, () => {
      const worker = new Worker(ENTRY, { workerData, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB } });
      worker.on('message', (reply: Reply) => {
        const waiter = this.waiting.get(reply.id);
        this.waiting.delete(reply.id);
        waiter?.resolve(reply);
      });
      worker.on('error', (err) => this.failAll(err));
      return worker;
    });
  }

  override _transform(item: RawLines | Batch, _encoding: BufferEncoding, callback: TransformCallback): void {
    // Workers start with the first NDJSON lines: a Bundle document alone never pays for them.
    if ('text' in item) this.started ??= this.start();
    (this.started ?? Promise.resolve()).then(() => this.enqueue(item)).then(() => callback(), callback);
  }

  private async enqueue(item: RawLines | Batch): Promise<void> {
    if ('text' in item) {
      const worker = this.workers[this.turn++ % this.workers.length]!;
      const reply = this.ask(worker, { raw: item });
      reply.catch(() => {}); // awaited in turn by writeHead; a worker crash must not be an unhandled rejection before that
      this.queue.push({ source: item.source, reply });
    } else {
      this.queue.push({ batch: item });
    }
    if (this.queue.length >= this.limit) await this.writeHead();
  }

  override _flush(callback: TransformCallback): void {
    (async () => {
      await this.started;
      while (this.queue.length > 0) await this.writeHead();
      const reports = await Promise.all(this.workers.map((worker) => this.ask(worker, {})));
      for (const reply of reports) if (reply.report !== undefined) this.options.mergeReport?.(reply.report);
      this.options.ended?.();
    })()
      .finally(() => this.stop())
      .then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.stop();
    callback(err);
  }

  private stop(): void {
    for (const worker of this.workers) void worker.terminate();
  }

  /** Applies and writes the oldest batch, waiting for its worker if need be. */
  private async writeHead(): Promise<void> {
    const head = this.queue.shift()!;
    let out: string | Buffer;
    if ('batch' in head) {
      out = this.serializeLocal(head.batch);
    } else {
      const reply = await head.reply;
      if (reply.error !== undefined) throw new Error(`worker: ${reply.error}`);
      out = this.apply(head.source, reply.result!);
    }
    if (out.length > 0) this.push(out);
  }

  private ask(worker: Worker, message: { raw?: RawLines }): Promise<Reply> {
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ id, ...message });
    });
  }

  private failAll(err: Error): void {
    for (const waiter of this.waiting.values()) waiter.reject(err);
    this.waiting.clear();
  }

  /** A batch's counts onto the run's account, its rejects through the run's policy (which may throw). */
  private apply(source: string, r: BatchResult): Buffer {
    const { account, rejects } = this.ctx;
    account.read += r.read;
    account.skippedBlank += r.skippedBlank;
    account.entriesWithoutResource += r.entriesWithoutResource;
    for (const message of r.warnings) account.warn(message);
    for (const row of r.rejects) rejects.reject({ source, line: row.line }, row.reason, () => row.text);
    for (const [reason, n] of r.dropped) account.countDropped(reason, n);
    if (r.counters) this.options.addCounters?.(r.counters);
    for (const [type, n] of r.written) {
      account.written += n;
      account.writtenByType.set(type, (account.writtenByType.get(type) ?? 0) + n);
    }
    return Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
  }

  private serializeLocal(batch: Batch): Buffer {
    return ndjsonBytes(this.options.local(batch).resources, this.ctx.account);
  }
}
