/**
 * What a thread does with one batch of raw NDJSON lines in a `--workers`
 * run (`src/io/workers.ts`): parse them, run the jobs of the run's stages in
 * order, serialise the result (NDJSON, or Bundle entries) and say what the
 * main thread must count and spool. Worker threads run it, and so does the
 * main thread for the batches it takes itself.
 */
import { Account } from '../account.js';
import { Rejects } from '../rejects.js';
import { mapBatch } from '../stage.js';
import type { Location } from '../types.js';
import { splitLines, type RawLines } from '../../transforms/ndjsonSplit.js';
import { holdSmoking, type HeldRecord } from '../../transforms/pretag.js';
import type { EncodedEntries } from '../../transforms/toTransactionBundle.js';
import { ByteBuilder } from './byteBuilder.js';
import { ndjsonBytes } from './serialize.js';
import { buildJob } from './workerJobs.js';
import type { BatchResult, RejectRow, WorkerSetup } from './workers.js';

export interface BatchRunner {
  run(raw: RawLines): BatchResult;
  /** The jobs' own reports (deid's DeidReport), when the run ends. */
  reports(): unknown[];
}

/** Remembers rejects for the main thread, which applies the run's policy to them in order. */
class RecordedRejects extends Rejects {
  rows: RejectRow[] = [];
  constructor(
    account: Account,
    private readonly keepText: boolean,
  ) {
    super(account);
  }
  override reject(loc: Location, reason: string, text: () => string | undefined): void {
    this.rows.push({ line: loc.line, reason, text: this.keepText ? text() : undefined });
  }
}

export function batchRunner(setup: WorkerSetup): BatchRunner {
  const lineOptions = { maxLineBytes: setup.maxLineBytes, unpackBundles: setup.unpackBundles };
  const jobs = setup.jobs.map((job) => buildJob(job, lineOptions));
  /** The one job's own way with raw lines, when it has one (`JobCore.lines`). */
  const linesJob = jobs.length === 1 ? jobs[0]!.lines : undefined;
  const out = new ByteBuilder(1 << 20);

  /** What the main thread must count for a batch: call it once the batch's bytes are made (they count what is written). */
  function counts(account: Account, rejects: RecordedRejects, warnings: string[]): Omit<BatchResult, 'bytes' | 'entries' | 'held'> {
    return {
      read: account.read,
      skippedBlank: account.skippedBlank,
      entriesWithoutResource: account.entriesWithoutResource,
      warnings,
      rejects: rejects.rows,
      dropped: [...account.droppedByReason],
      written: [...account.writtenByType],
      counters: jobs.map((job) => job.takeCounters?.()),
    };
  }

  function run(raw: RawLines): BatchResult {
    const account = new Account();
    const warnings: string[] = [];
    account.onWarning = (message) => warnings.push(message);
    const rejects = new RecordedRejects(account, setup.keepRejectText);
    const ctx = { account, rejects };
    if (linesJob) {
      linesJob(raw, ctx, out);
      const bytes = ownBuffer(out.copy());
      return { ...counts(account, rejects, warnings), bytes, held: [] };
    }
    let batch = splitLines(raw, { ...ctx, ...lineOptions, keepTexts: true });
    const held: [number, HeldRecord[]][] = [];
    let entries: EncodedEntries | undefined;
    // A plain loop: with a closure (jobs.forEach) holding `batch`, scavenges in the worker cost seven times more.
    for (let stage = 0; stage < jobs.length; stage++) {
      const job = jobs[stage]!;
      if (job.holds) {
        const split = holdSmoking(batch);
        batch = split.rest;
        if (split.held.length > 0) held.push([stage, split.held]);
      }
      if (job.core) batch = mapBatch(batch, job.core, ctx, setup.dropReason);
      if (job.map) batch = job.map(batch, ctx);
      if (job.encoder) entries = job.encoder.encode(batch, ctx);
    }
    if (entries) entries.bytes = ownBuffer(entries.bytes);
    const bytes = entries ? undefined : ownBuffer(ndjsonBytes(batch.resources, account, batch.texts));
    return { ...counts(account, rejects, warnings), bytes, entries, held };
  }

  return { run, reports: () => jobs.map((job) => job.report?.()) };
}

/** `bytes` on an ArrayBuffer of its own, to be transferred: a small Buffer may sit in Node's shared pool. */
function ownBuffer(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength ? bytes : new Uint8Array(bytes);
}
