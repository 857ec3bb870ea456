/**
 * A worker thread of `src/io/workers.ts`: parses, transforms and serialises
 * batches of raw NDJSON lines, and says what the main thread must count.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Account } from '../account.js';
import { Rejects } from '../rejects.js';
import { mapBatch } from '../stage.js';
import type { Location } from '../types.js';
import { splitLines, type RawLines } from '../../transforms/ndjsonSplit.js';
import { ndjsonBytes } from './serialize.js';
import { buildJob } from './workerJobs.js';
import type { BatchResult, RejectRow, WorkerSetup } from './workers.js';

const setup = workerData as WorkerSetup;
const { core, report, takeCounters } = buildJob(setup.job);

/** Remembers rejects for the main thread, which applies the run's policy to them in order. */
class RecordedRejects extends Rejects {
  rows: RejectRow[] = [];
  override reject(loc: Location, reason: string, text: () => string | undefined): void {
    this.rows.push({ line: loc.line, reason, text: setup.keepRejectText ? text() : undefined });
  }
}

function run(raw: RawLines): BatchResult {
  const account = new Account();
  const warnings: string[] = [];
  account.onWarning = (message) => warnings.push(message);
  const rejects = new RecordedRejects(account);
  const ctx = { account, rejects };
  let batch = splitLines(raw, { ...ctx, maxLineBytes: setup.maxLineBytes, unpackBundles: setup.unpackBundles });
  if (core) batch = mapBatch(batch, core, ctx, setup.dropReason);
  return {
    bytes: ownBuffer(ndjsonBytes(batch.resources, account)),
    read: account.read,
    skippedBlank: account.skippedBlank,
    entriesWithoutResource: account.entriesWithoutResource,
    warnings,
    rejects: rejects.rows,
    dropped: [...account.droppedByReason],
    written: [...account.writtenByType],
    counters: takeCounters?.(),
  };
}

parentPort!.on('message', (message: { id: number; raw?: RawLines }) => {
  if (!message.raw) {
    // The last message: the job's own counters, then nothing more.
    parentPort!.postMessage({ id: message.id, report: report?.() });
    return;
  }
  try {
    const result = run(message.raw);
    // Bytes, moved rather than copied: cloning a large string cost more than making it.
    parentPort!.postMessage({ id: message.id, result }, [result.bytes.buffer as ArrayBuffer]);
  } catch (err) {
    parentPort!.postMessage({ id: message.id, error: (err as Error)?.stack ?? String(err) });
  }
});

/** `bytes` on an ArrayBuffer of its own, to be transferred: a small Buffer may sit in Node's shared pool. */
function ownBuffer(bytes: Buffer): Uint8Array {
  return bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength ? bytes : new Uint8Array(bytes);
}
