import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { HxError } from '../errors.js';

/**
 * Lines set aside on disk and read back in the order written: a temporary
 * file, unlinked as soon as it is open where the system allows it (so a
 * killed run leaves nothing behind), removed on `close()` otherwise.
 * Writes are awaited one at a time, so memory holds at most one write.
 */
export class Spool {
  /** Bytes written so far. */
  bytes = 0;

  private constructor(
    private readonly file: FileHandle,
    /** The folder still to remove at close, when it could not be unlinked at once. */
    private leftover: string | undefined,
  ) {}

  /** A new empty spool in a fresh folder under `dir` (default: the system's temporary folder). */
  static async open(dir = tmpdir()): Promise<Spool> {
    let folder: string;
    let file: FileHandle;
    try {
      folder = await mkdtemp(join(dir, 'hx-spool-'));
      file = await open(join(folder, 'spool.ndjson'), 'w+');
    } catch (err) {
      throw new HxError(`cannot create a temporary file in ${dir} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    let leftover: string | undefined;
    try {
      await rm(folder, { recursive: true });
    } catch {
      leftover = folder; // Windows cannot remove an open file: do it at close.
    }
    return new Spool(file, leftover);
  }

  /** Appends `text` (whole lines, each ending with `\n`). */
  async write(text: string): Promise<void> {
    const { bytesWritten } = await this.file.write(text, null, 'utf8');
    this.bytes += bytesWritten;
  }

  /**
   * The lines written, from the first, without their newline, a read's worth
   * (up to `chunkBytes`) at a time. Pull-based: nothing is read ahead of the
   * consumer, so memory holds one chunk.
   */
  async *lines(chunkBytes = 64 * 1024): AsyncGenerator<string[]> {
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const decoder = new StringDecoder('utf8');
    let position = 0;
    let carry = '';
    for (;;) {
      const { bytesRead } = await this.file.read(buffer, 0, buffer.length, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      const text = carry + decoder.write(buffer.subarray(0, bytesRead));
      const lines = text.split('\n');
      carry = lines.pop()!;
      if (lines.length > 0) yield lines;
    }
    carry += decoder.end();
    if (carry) yield [carry];
  }

  async close(): Promise<void> {
    await this.file.close().catch(() => {});
    if (this.leftover) await rm(this.leftover, { recursive: true, force: true });
    this.leftover = undefined;
  }
}
