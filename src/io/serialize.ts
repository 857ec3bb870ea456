import { Transform } from 'node:stream';
import type { Account } from '../account.js';
import { BATCHES_IN_FLIGHT, type Batch, type Resource } from '../types.js';

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

/**
 * The NDJSON lines of `resources` as UTF-8, each counted as written on
 * `account`: the text a resource was read from when `texts` has it (see
 * `Batch.texts`), else the resource serialised.
 */
export function ndjsonBytes(resources: readonly Resource[], account: Account, texts?: readonly (string | undefined)[]): Buffer {
  const text = new Utf8Builder();
  for (let i = 0; i < resources.length; i++) {
    const resource = resources[i]!;
    text.addLine(texts?.[i] ?? JSON.stringify(resource));
    account.countWritten(resource.resourceType);
  }
  return text.take();
}

/**
 * Joins strings into one UTF-8 Buffer, fast when nearly all of them are Latin-1.
 *
 * One string with a character above U+00FF (an em dash in a pre-tag, a name
 * in Greek) makes V8 store the whole concatenation as UTF-16, and encoding
 * that is about five times slower than encoding one-byte text: a few tagged
 * Observations per batch made `hx pretag` spend a fifth of its time in
 * `Buffer.from`. So one-byte strings are joined and encoded together, and
 * any other string on its own. (The test is a regular expression because V8
 * answers it for a one-byte string without reading it.) Each string added
 * must be whole: a surrogate pair split across two calls would be encoded
 * as two replacement characters.
 */
export class Utf8Builder {
  private oneByte = '';
  private readonly parts: Buffer[] = [];

  /**
   * `text` and a newline. (Tested before the newline is added: a regular
   * expression would flatten the concatenation, copying the text once more.)
   */
  addLine(text: string): void {
    if (!ABOVE_LATIN1.test(text)) {
      this.oneByte += text + '\n';
      return;
    }
    this.flushOneByte();
    this.parts.push(Buffer.from(text + '\n', 'utf8'));
  }

  add(text: string): void {
    if (!ABOVE_LATIN1.test(text)) {
      this.oneByte += text;
      return;
    }
    this.flushOneByte();
    this.parts.push(Buffer.from(text, 'utf8'));
  }

  /** Nothing added since the last `take`. */
  get empty(): boolean {
    return this.oneByte === '' && this.parts.length === 0;
  }

  take(): Buffer {
    this.flushOneByte();
    const bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts.length = 0;
    return bytes;
  }

  private flushOneByte(): void {
    if (this.oneByte === '') return;
    this.parts.push(Buffer.from(this.oneByte, 'utf8'));
    this.oneByte = '';
  }
}

const ABOVE_LATIN1 = /[^\u0000-\u00ff]/;
