import { Writable } from 'node:stream';
import type { Account } from '../account.js';
import type { Batch } from '../types.js';

/** A sink that counts each resource as written and keeps nothing (`hx count`, dry runs). */
export function countingSink(account: Account): Writable {
  return new Writable({
    objectMode: true,
    write(batch: Batch, _encoding, callback) {
      for (const resource of batch.resources) account.countWritten(resource.resourceType);
      callback();
    },
  });
}
