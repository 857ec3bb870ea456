/**
 * Both cores for per-record work (`hx cat`, `deid`, `pretag`, `bundle` and
 * `hx run`): the reader hands out raw NDJSON lines (`RawLines`, about 64 KiB
 * each) instead of parsed records. `--workers N` is N threads at that work:
 * this one and N-1 worker threads. Each batch is parsed, run through the
 * jobs of the run's stages in order and serialised (NDJSON, or Bundle
 * entries for this thread's assembler) by `batchRunner`, in a worker or
 * here; each worker holds two batches at most, and this thread, when the
 * batch it must write next is still in a worker, runs the oldest batch that
 * no worker has taken. It applies each batch's account and rejects in input
 * order, so output bytes, the account and the reject file's rows are those
 * of one thread. (With N worker threads and a thread that only read, posted
 * and wrote, `hx deid --profile safe-harbor --workers 2` on 1 GB ran at the
 * same speed in 185 MB instead of 131: each worker is an isolate of about
 * 50 MB, and three threads on two cores spent more CPU.)
 *
 * Bounds: at most `4 × workers` batches are in flight (waiting, posted, or done and
 * waiting for an earlier one); the reader is paused beyond that. (With
 * `2 × workers`, each worker sat idle a quarter of the time while the main
 * thread waited on a read; four per worker ran `hx cat --workers 2` and
 * safe-harbor 4-9% faster on 100 MB at the same peak RSS.)
 * Bundle documents are parsed by the main thread's reader (one document is
 * one stream of entries) and their Batches go through each stage's `local`
 * work, in order; so does the first batch of lines, parsed here, so that a
 * small input never starts the workers. Cross-record state stays in the
 * main thread: the dedupe set and open Bundle of `bundle`, the spool and
 * patient table of `pretag` on a pipe (the workers send the smoking-status
 * Observations back as text); or the workers get what they judge by when
 * they start (pretag with files: the patient table of its first pass).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { WorkerJob } from './workerJobs.js';
import { splitLines, type RawLines } from '../../transforms/ndjsonSplit.js';
import type { HeldRecord } from '../../transforms/pretag.js';
import type { BundleAssembler, EncodedEntries } from '../../transforms/toTransactionBundle.js';
import { HxError } from '../errors.js';
import type { StageContext } from '../stage.js';
import type { Batch } from '../types.js';
import { batchRunner, type BatchRunner } from './batchRunner.js';
import { ByteBuilder } from './byteBuilder.js';
import { ndjsonBytes } from './serialize.js';

export type { WorkerJob } from './workerJobs.js';

export interface WorkerSetup {
  /** The stages' jobs, run in order on each batch. */
  jobs: WorkerJob[];
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
  /** The NDJSON of the batch's records, UTF-8 (when the last job is not `bundle`). */
  bytes?: Uint8Array;
  /** The batch's Bundle entries (when it is). */
  entries?: EncodedEntries;
  /** Records a stage held back (pretag's spool), by stage index. */
  held: [number, HeldRecord[]][];
  read: number;
  skippedBlank: number;
  entriesWithoutResource: number;
  warnings: string[];
  rejects: RejectRow[];
  dropped: [string, number][];
  written: [string, number][];
  /** Each job's stage counters for this batch (pretag's). */
  counters: unknown[];
}

/** What one stage of a run does when its records are parsed in worker threads. */
export interface ParallelStage {
  /** The job, or its making when it needs a look at the input first (pretag's first pass): workers start then. */
  job: WorkerJob | (() => Promise<WorkerJob>);
  /** The same work on this thread: for Batches the reader parsed (Bundle documents) and those a stage releases. */
  local: (batch: Batch) => Batch | Promise<Batch>;
  /** Given each batch's counters from this stage's job, in order. */
  addCounters?: (counters: unknown) => void;
  /** Given each worker's report of this stage's job (e.g. its DeidReport) when the run ends. */
  mergeReport?: (report: unknown) => void;
  /** Records the job held back, in input order (pretag's smoking-status Observations). */
  hold?: (source: string, held: HeldRecord[]) => Promise<void>;
  /** After the last batch: what was held, as Batches for the stages after this one. */
  release?: () => AsyncIterable<Batch>;
  /** Called once every batch is written and every report merged, before the output's end. */
  ended?: () => void | Promise<void>;
  /** Called when the run fails: let go of what `release` would have (the spool's file). */
  abort?: () => void;
}

/** Where the records go: NDJSON (the default) or Bundles assembled on this thread. */
export interface ParallelOutput {
  /** The job that encodes the records for `fromWorker` (bundle's); none for NDJSON. */
  job?: WorkerJob;
  fromWorker(result: BatchResult): Uint8Array;
  local(batch: Batch): Uint8Array;
  /** The last bytes, when every batch is in. */
  finish(): Uint8Array;
}

export interface ParallelOptions extends Omit<WorkerSetup, 'keepRejectText' | 'jobs'> {
  workers: number;
  stages: ParallelStage[];
  /** NDJSON when absent. */
  output?: ParallelOutput;
}

/** `--workers N`: a whole number of at least 1. */
export function checkWorkers(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new HxError('--workers must be a whole number of at least 1', 2);
  return n;
}

/** Records written as NDJSON: by the workers, or here for a Batch of this thread. */
export function ndjsonOutput(ctx: StageContext): ParallelOutput {
  return {
    fromWorker: (result) => result.bytes!,
    local: (batch) => ndjsonBytes(batch.resources, ctx.account, batch.texts),
    finish: () => EMPTY,
  };
}

/** Records written as Bundles: entries encoded by the workers (job `bundle`), placed by `assembler`. */
export function bundleOutput(job: WorkerJob, makeAssembler: (emit: (piece: string | Uint8Array) => void) => BundleAssembler): ParallelOutput {
  const out = new ByteBuilder();
  const assembler = makeAssembler((piece) => out.append(piece));
  const take = () => (out.length === 0 ? EMPTY : out.take());
  return {
    job,
    fromWorker: (result) => {
      assembler.addEncoded(result.entries!);
      return take();
    },
    local: (batch) => {
      assembler.add(batch);
      return take();
    },
    finish: () => {
      assembler.finish();
      return take();
    },
  };
}

const EMPTY = new Uint8Array(0);

/**
 * The output bytes the workers send over outlive their writing here when
 * the workers keep both cores busy: traced with `hx deid --workers 2`, they
 * waited, written long since, for a full collection, which V8 starts only
 * when external memory has grown by 64 MB (young-generation collections,
 * even forced ones, did not free them). When the launcher exposes `gc`
 * (`bin/hx.js` runs Node with `--expose-gc`), this thread looks every 8 MB
 * written at the bytes it holds from other threads (its external memory
 * less the array buffers it allocated itself, such as a dedupe set's table)
 * and runs a full collection beyond 24 MB: a few milliseconds each. On 1 GB
 * with two workers, peak RSS: safe-harbor 231 -> 196 MB, pretag 225 -> 201,
 * deid 215 -> 197; cat, bundle and run within a few MB; the same speed but
 * for safe-harbor (4% more CPU).
 */
const CHECK_EVERY_BYTES = 8 << 20;
const RECEIVED_LIMIT = 24 << 20;
const collect = (globalThis as { gc?: () => void }).gc;

/** Bytes of array buffers that came from other threads and are not yet collected. */
function receivedBytes(): number {
  const { external, arrayBuffers } = process.memoryUsage();
  return external - arrayBuffers;
}

const ENTRY = new URL('./workerEntry.js', import.meta.url);
/**
 * Each worker is a V8 heap of its own; its young generation is what grows
 * with throughput. With 8 MB, `hx deid --workers 2` peaked at 180 MB RSS on
 * the 100 MB corpus (16 MB: 211, 32 MB: 241) at no measurable cost in speed;
 * each worker still costs about 50 MB (its own isolate, code and heap).
 */
const WORKER_YOUNG_MB = 8;

type Reply = { id: number; result?: BatchResult; error?: string; reports?: unknown[] };

/**
 * Batches of lines a worker holds at once (the one it runs and the next,
 * so that it never waits for this thread between them); the rest wait here
 * until a worker is free or this thread takes them.
 */
const POSTED_PER_WORKER = 2;

/** RawLines or Batches in (from `readInputs(…, {rawLines: true})`), NDJSON or Bundle text out, in order. */
export function parallelSerialize(options: ParallelOptions, ctx: StageContext): Transform {
  return new ParallelSerialize(options, ctx);
}

/** A batch of lines: waiting, posted to a worker, or done (by a worker or by this thread). */
interface LinesInFlight {
  source: string;
  raw: RawLines | undefined;
  posted?: Promise<Reply>;
  done?: Reply;
}

/** One batch in flight: lines, or a Batch parsed by the reader and left for this thread. */
type InFlight = LinesInFlight | { batch: Batch };

class ParallelSerialize extends Transform {
  private workers: Worker[] = [];
  /** Batches posted to each worker and not yet answered. */
  private posted: number[] = [];
  /** This thread's share of the work: the same runner the workers use. */
  private runner: BatchRunner | undefined;
  private jobs: Promise<WorkerJob[]> | undefined;
  /** Settles when the workers run: started by the first raw lines, so a job may look at the input first. */
  private started: Promise<void> | undefined;
  private readonly waiting = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();
  /** Batches in input order; the head is applied and written first. */
  private readonly queue: InFlight[] = [];
  /** The batches of lines not yet posted, in input order. */
  private readonly unposted: LinesInFlight[] = [];
  private nextId = 0;
  private readonly limit: number;
  private readonly output: ParallelOutput;
  /** Whether NDJSON lines have come yet (the first are parsed on this thread). */
  private sawLines = false;
  /** Set while output waits for the reader (see `pushBytes`). */
  private wantMore: (() => void) | undefined;
  /** Bytes pushed since the held bytes were last looked at (see `RECEIVED_LIMIT`). */
  private sinceCheck = 0;

  constructor(
    private readonly options: ParallelOptions,
    private readonly ctx: StageContext,
  ) {
    super({ writableObjectMode: true, writableHighWaterMark: 1 });
    this.limit = 4 * options.workers;
    this.output = options.output ?? ndjsonOutput(ctx);
  }

  /** The stages' jobs, made once, before the first batch is handled (the main thread's cores are made with them). */
  private makeJobs(): Promise<WorkerJob[]> {
    return (this.jobs ??= (async () => {
      const jobs: WorkerJob[] = [];
      for (const stage of this.options.stages) jobs.push(typeof stage.job === 'function' ? await stage.job() : stage.job);
      if (this.output.job) jobs.push(this.output.job);
      return jobs;
    })());
  }

  /** `workers - 1` worker threads: this thread is the other one. */
  private async start(): Promise<void> {
    const { workers: count, stages: _stages, output: _output, ...setup } = this.options;
    const workerData: WorkerSetup = { ...setup, jobs: await this.makeJobs(), keepRejectText: this.ctx.rejects.path !== undefined };
    this.runner = batchRunner(workerData);
    this.ctx.account.workerThreads = count - 1;
    this.posted = new Array<number>(count - 1).fill(0);
    this.workers = Array.from({ length: count - 1 }, () => {
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
    try {
      // The first NDJSON lines are parsed here and the workers start with the next: an input of one batch
      // (up to 64 KiB) or a Bundle document alone never pays for them (about 70 ms and 25 MB).
      if ('text' in item && !this.sawLines) {
        this.sawLines = true;
        const { maxLineBytes, unpackBundles } = this.options;
        item = splitLines(item, { ...this.ctx, maxLineBytes, unpackBundles, keepTexts: true });
      }
    } catch (err) {
      callback(err as Error); // the reject policy said stop
      return;
    }
    const ready = 'text' in item ? (this.started ??= this.start()) : this.makeJobs();
    ready.then(() => this.enqueue(item)).then(() => callback(), callback);
  }

  private async enqueue(item: RawLines | Batch): Promise<void> {
    if ('text' in item) {
      const lines: LinesInFlight = { source: item.source, raw: item };
      this.queue.push(lines);
      this.unposted.push(lines);
      this.postToFreeWorkers();
    } else {
      this.queue.push({ batch: item });
    }
    if (this.queue.length >= this.limit) await this.writeHead();
  }

  /** Gives waiting batches, oldest first, to the workers that have room for them. */
  private postToFreeWorkers(): void {
    for (let w = 0; w < this.workers.length && this.unposted.length > 0; w++) {
      while (this.posted[w]! < POSTED_PER_WORKER && this.unposted.length > 0) {
        const { lines, raw } = this.takeOldest();
        this.posted[w]!++;
        lines.posted = this.ask(this.workers[w]!, { raw });
        lines.posted.then(
          (reply) => {
            lines.done = reply;
            this.posted[w]!--;
            this.postToFreeWorkers();
          },
          () => {}, // awaited in turn by writeHead; a worker crash must not be an unhandled rejection before that
        );
      }
    }
  }

  /** Runs the oldest waiting batch on this thread. */
  private runHere(): void {
    const { lines, raw } = this.takeOldest();
    lines.done = { id: -1, result: this.runner!.run(raw) };
  }

  /** The oldest waiting batch and its lines, which it lets go of (they are the taker's now). */
  private takeOldest(): { lines: LinesInFlight; raw: RawLines } {
    const lines = this.unposted.shift()!;
    const raw = lines.raw!;
    lines.raw = undefined;
    return { lines, raw };
  }

  override _flush(callback: TransformCallback): void {
    (async () => {
      await this.makeJobs();
      await this.started;
      while (this.queue.length > 0) await this.writeHead();
      const { stages } = this.options;
      // What a stage held back goes on through the stages after it, as the records of a pipe would.
      for (const [i, stage] of stages.entries()) {
        if (!stage.release) continue;
        for await (const batch of stage.release()) await this.pushBytes(await this.runLocal(batch, i + 1), true);
      }
      const replies = await Promise.all(this.workers.map((worker) => this.ask(worker, {})));
      const reports = replies.map((reply) => reply.reports);
      if (this.runner) reports.push(this.runner.reports());
      for (const jobReports of reports) jobReports?.forEach((report, i) => report !== undefined && stages[i]?.mergeReport?.(report));
      for (const stage of stages) await stage.ended?.();
      void this.pushBytes(this.output.finish());
    })()
      .finally(() => this.stop())
      .then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.wantMore?.();
    if (err) for (const stage of this.options.stages) stage.abort?.();
    this.stop();
    callback(err);
  }

  private stop(): void {
    for (const worker of this.workers) void worker.terminate();
  }

  /**
   * Applies and writes the oldest batch. While a worker still has it, this
   * thread runs the oldest batch nobody has taken yet (it is needed next),
   * then lets the workers' answers in; it waits only when there is none.
   */
  private async writeHead(): Promise<void> {
    const head = this.queue[0]!;
    if ('batch' in head) {
      this.queue.shift();
      void this.pushBytes(await this.runLocal(head.batch, 0));
      return;
    }
    while (head.done === undefined) {
      if (this.unposted.length === 0) {
        await head.posted;
        break;
      }
      this.runHere();
      if (head.done === undefined) await new Promise(setImmediate);
    }
    this.queue.shift();
    const reply = head.done ?? (await head.posted!);
    if (reply.error !== undefined) throw new Error(`worker: ${reply.error}`);
    const result = reply.result!;
    this.apply(head.source, result);
    for (const [stage, held] of result.held) await this.options.stages[stage]!.hold!(head.source, held);
    void this.pushBytes(this.output.fromWorker(result));
  }

  /** The stages from `first` on, then the output, on this thread. */
  private async runLocal(batch: Batch, first: number): Promise<Uint8Array> {
    const { stages } = this.options;
    for (let i = first; i < stages.length; i++) batch = await stages[i]!.local(batch);
    return this.output.local(batch);
  }

  /**
   * Pushes `bytes`. With `wait`, when the reader's buffer is full, waits until
   * it asks for more: the spool released in `_flush` may hold many batches,
   * and no write callback holds the input back there. (Elsewhere the pending
   * write callback does, and waiting per batch cost a third of the speed.)
   */
  private async pushBytes(bytes: Uint8Array, wait = false): Promise<void> {
    this.sinceCheck += bytes.byteLength;
    if (collect && this.sinceCheck >= CHECK_EVERY_BYTES) {
      this.sinceCheck = 0;
      if (receivedBytes() > RECEIVED_LIMIT) collect();
    }
    if (bytes.byteLength === 0 || this.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) || !wait) return;
    await new Promise<void>((resolve) => (this.wantMore = resolve));
  }

  override _read(size: number): void {
    const resume = this.wantMore;
    this.wantMore = undefined;
    resume?.();
    super._read(size);
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
  private apply(source: string, r: BatchResult): void {
    const { account, rejects } = this.ctx;
    account.read += r.read;
    account.skippedBlank += r.skippedBlank;
    account.entriesWithoutResource += r.entriesWithoutResource;
    for (const message of r.warnings) account.warn(message);
    for (const row of r.rejects) rejects.reject({ source, line: row.line }, row.reason, () => row.text);
    for (const [reason, n] of r.dropped) account.countDropped(reason, n);
    r.counters.forEach((counters, i) => counters && this.options.stages[i]?.addCounters?.(counters));
    for (const [type, n] of r.written) {
      account.written += n;
      account.writtenByType.set(type, (account.writtenByType.get(type) ?? 0) + n);
    }
  }
}
