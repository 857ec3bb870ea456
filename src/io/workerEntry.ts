/**
 * A worker thread of `src/io/workers.ts`: parses, transforms and serialises
 * batches of raw NDJSON lines, and says what the main thread must count.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Account } from '../account.js';
import { Rejects } from '../rejects.js';
import { mapBatch, type RecordCore } from '../stage.js';
import type { Location } from '../types.js';
import { splitLines, type RawLines } from '../../transforms/ndjsonSplit.js';
import { createDeidentifier } from '../../transforms/deidentify.js';
import type { BatchResult, RejectRow, WorkerJob, WorkerSetup } from './workers.js';

const setup = workerData as WorkerSetup;
const encoder = new TextEncoder();
const { core, report } = buildCore(setup.job);

/** The per-record work of each job, built here from options that crossed the thread boundary. */
function buildCore(job: WorkerJob): { core?: RecordCore; report?: () => unknown } {
  switch (job.kind) {
    case 'cat':
      return {};
    case 'deid': {
      const deidentifier = createDeidentifier(job.options);
      return { core: (resource) => deidentifier.deidentify(resource), report: () => deidentifier.report };
    }
  }
}

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
  let text = '';
  for (const resource of batch.resources) {
    text += JSON.stringify(resource) + '\n';
    account.countWritten(resource.resourceType);
  }
  return {
    bytes: encoder.encode(text),
    read: account.read,
    skippedBlank: account.skippedBlank,
    entriesWithoutResource: account.entriesWithoutResource,
    warnings,
    rejects: rejects.rows,
    dropped: [...account.droppedByReason],
    written: [...account.writtenByType],
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
