import { Transform } from 'node:stream';
import type { Account } from '../account.js';
import { BATCHES_IN_FLIGHT, type Batch, type RecordText, type Resource } from '../types.js';
import { ByteBuilder } from './byteBuilder.js';

/**
 * Batches → NDJSON text, one resource per line, counting what is written.
 * One Buffer per batch keeps the write calls (and their syscalls) few.
 */
export function ndjsonSerialize(account: Account): Transform {
  return new Transform({
    writableObjectMode: true,
    writableHighWaterMark: BATCHES_IN_FLIGHT,
    transform(batch: Batch, _encoding, callback) {
      callback(null, ndjsonBytes(batch.resources, account, batch.texts));
    },
  });
}

/** Reused by every call (they are synchronous): one buffer of the largest batch's size, copied out. */
const lines = new ByteBuilder(1 << 20);

/**
 * The NDJSON lines of `resources` as UTF-8, each counted as written on
 * `account`: the text a resource was read from when `texts` has it (see
 * `Batch.texts`), else the resource serialised.
 *
 * Each text is encoded on its own into one buffer. (Joining the strings and
 * encoding the join measured slower, even for one-byte text; and one string
 * with a character above U+00FF, such as a name in Greek, made V8 store the
 * whole join as UTF-16.)
 */
export function ndjsonBytes(resources: readonly Resource[], account: Account, texts?: readonly (RecordText | undefined)[]): Buffer {
  appendNdjson(lines, resources, account, texts);
  return lines.copy();
}

/** `ndjsonBytes`, appended to `out`. */
export function appendNdjson(out: ByteBuilder, resources: readonly Resource[], account: Account, texts?: readonly (RecordText | undefined)[]): void {
  for (let i = 0; i < resources.length; i++) {
    const resource = resources[i]!;
    appendText(out, texts?.[i] ?? JSON.stringify(resource));
    out.append(NEWLINE);
    account.countWritten(resource.resourceType);
  }
}

/** Appends `text` to `out`; returns the bytes it took. */
export function appendText(out: ByteBuilder, text: RecordText): number {
  if (typeof text === 'string') return out.append(text);
  return out.append(text.head) + out.append(text.tail.bytes);
}

const NEWLINE = Buffer.from('\n');
