import { Transform } from 'node:stream';
import type { Account } from '../account.js';
import { BATCHES_IN_FLIGHT, type Batch } from '../types.js';

/**
 * Batches → NDJSON text, one resource per line, counting what is written.
 * One string per batch keeps the write calls (and their syscalls) few.
 */
export function ndjsonSerialize(account: Account): Transform {
  return new Transform({
    writableObjectMode: true,
    writableHighWaterMark: BATCHES_IN_FLIGHT,
    transform(batch: Batch, _encoding, callback) {
      let text = '';
      for (const resource of batch.resources) {
        text += JSON.stringify(resource) + '\n';
        account.countWritten(resource.resourceType);
      }
      callback(null, text);
    },
  });
}
