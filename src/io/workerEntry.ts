/** A worker thread of `src/io/workers.ts`: runs the batches of lines it is sent (`batchRunner`). */
import { parentPort, workerData } from 'node:worker_threads';
import type { RawLines } from '../../transforms/ndjsonSplit.js';
import { batchRunner } from './batchRunner.js';
import type { WorkerSetup } from './workers.js';

const runner = batchRunner(workerData as WorkerSetup);

parentPort!.on('message', (message: { id: number; raw?: RawLines }) => {
  if (!message.raw) {
    // The last message: the jobs' own reports, then nothing more.
    parentPort!.postMessage({ id: message.id, reports: runner.reports() });
    return;
  }
  try {
    const result = runner.run(message.raw);
    // Bytes, moved rather than copied: cloning a large string cost more than making it.
    const bytes = (result.bytes ?? result.entries!.bytes).buffer as ArrayBuffer;
    parentPort!.postMessage({ id: message.id, result }, [bytes]);
  } catch (err) {
    parentPort!.postMessage({ id: message.id, error: (err as Error)?.stack ?? String(err) });
  }
});
