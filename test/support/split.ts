import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { Account } from '../../src/account.js';
import { Rejects } from '../../src/rejects.js';
import type { Resource } from '../../src/types.js';
import { ndjsonSplit, type SplitOptions } from '../../transforms/ndjsonSplit.js';

export interface SplitResult {
  resources: Resource[];
  lines: number[];
  account: Account;
  rejectsFile?: string;
}

/** Feeds `bytes` to ndjsonSplit in chunks of the given sizes (cycled) and collects the output. */
export async function splitBytes(
  bytes: Buffer | string,
  chunkSizes: number[] = [bytes.length || 1],
  options: Partial<SplitOptions> & { rejectsPath?: string } = {},
): Promise<SplitResult> {
  const data = Buffer.from(bytes);
  const chunks: Buffer[] = [];
  for (let pos = 0, k = 0; pos < data.length; k++) {
    const size = Math.max(1, chunkSizes[k % chunkSizes.length]!);
    chunks.push(data.subarray(pos, pos + size));
    pos += size;
  }
  const account = options.account ?? new Account();
  const rejects = new Rejects(account, options.rejectsPath);
  const resources: Resource[] = [];
  const lines: number[] = [];
  await pipeline(
    Readable.from(chunks, { objectMode: false }),
    ndjsonSplit({ source: 'in.ndjson', account, rejects, ...options }),
    new Writable({
      objectMode: true,
      write(batch, _e, cb) {
        resources.push(...batch.resources);
        lines.push(...batch.lines);
        cb();
      },
    }),
  );
  await rejects.close();
  return { resources, lines, account };
}
