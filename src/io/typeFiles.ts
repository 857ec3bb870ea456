import { createWriteStream, mkdirSync, readdirSync, renameSync, rmSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createGzip, type Gzip } from 'node:zlib';
import type { Account } from '../account.js';
import type { Batch } from '../types.js';
import { ByteBuilder } from './byteBuilder.js';
import { appendText } from './serialize.js';

export interface TypeFilesOptions {
  dir: string;
  gzip: boolean;
  /** Most files open at once; the least recently used is closed beyond it. */
  maxOpen: number;
  account: Account;
}

interface OpenFile {
  head: Writable;
  file: WriteStream;
}

/**
 * A sink writing `Type.ndjson` (or `.ndjson.gz`) per resource type. Files are
 * written in a hidden folder inside `dir` and moved into place when the run
 * completes. A file closed to stay under `maxOpen` is reopened for append;
 * with gzip that starts a new gzip member, which gunzip reads as one stream.
 */
export class TypeFiles extends Writable {
  private readonly temp: string;
  private readonly open = new Map<string, OpenFile>();
  /** Per type of the last batch, its lines: the buffers are kept for the next batch and the lines copied out. */
  private readonly linesByType = new Map<string, ByteBuilder>();
  private readonly started = new Set<string>();

  constructor(private readonly options: TypeFilesOptions) {
    super({ objectMode: true });
    this.temp = join(options.dir, `.hx-partial-${process.pid}`);
    mkdirSync(options.dir, { recursive: true }); // first, so that a failure names the folder asked for
    mkdirSync(this.temp, { recursive: true });
  }

  override _write(batch: Batch, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeBatch(batch).then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.finishAll().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    for (const { head, file } of this.open.values()) {
      head.destroy();
      file.destroy();
    }
    this.open.clear();
    rmSync(this.temp, { recursive: true, force: true });
    callback(error);
  }

  private fileName(type: string): string {
    return `${type}.ndjson${this.options.gzip ? '.gz' : ''}`;
  }

  private async writeBatch(batch: Batch): Promise<void> {
    const { resources, texts } = batch;
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i]!;
      const type = resource.resourceType;
      let lines = this.linesByType.get(type);
      if (!lines) this.linesByType.set(type, (lines = new ByteBuilder()));
      appendText(lines, texts?.[i] ?? JSON.stringify(resource));
      lines.append('\n');
      this.options.account.countWritten(type);
    }
    for (const [type, lines] of this.linesByType) {
      if (lines.length === 0) {
        this.linesByType.delete(type); // none in this batch: any number of types may pass over a run
        continue;
      }
      const bytes = lines.copy();
      const { head } = await this.handle(type);
      if (!head.write(bytes)) await once(head, 'drain');
    }
  }

  private async handle(type: string): Promise<OpenFile> {
    const existing = this.open.get(type);
    if (existing) {
      // Move to the back: Map order is our LRU order.
      this.open.delete(type);
      this.open.set(type, existing);
      return existing;
    }
    if (this.open.size >= this.options.maxOpen) {
      const [oldest, handle] = this.open.entries().next().value as [string, OpenFile];
      this.open.delete(oldest);
      await close(handle);
    }
    const file = createWriteStream(join(this.temp, this.fileName(type)), { flags: this.started.has(type) ? 'a' : 'w' });
    this.started.add(type);
    let head: Writable = file;
    if (this.options.gzip) {
      const gzip: Gzip = createGzip();
      gzip.pipe(file);
      head = gzip;
    }
    const handle = { head, file };
    this.open.set(type, handle);
    return handle;
  }

  private async finishAll(): Promise<void> {
    for (const handle of this.open.values()) await close(handle);
    this.open.clear();
    for (const name of readdirSync(this.temp)) renameSync(join(this.temp, name), join(this.options.dir, name));
    rmSync(this.temp, { recursive: true, force: true });
  }
}

async function close({ head, file }: OpenFile): Promise<void> {
  const closed = once(file, 'close');
  head.end();
  await closed;
}
