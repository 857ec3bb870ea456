import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

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
    const folder = await mkdtemp(join(dir, 'hx-spool-'));
    const file = await open(join(folder, 'spool.ndjson'), 'w+');
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

  /** The lines written, from the first, without their newline. */
  lines(): AsyncIterable<string> {
    const input = this.file.createReadStream({ start: 0, autoClose: false, highWaterMark: 1 << 20 });
    return createInterface({ input, crlfDelay: Infinity });
  }

  async close(): Promise<void> {
    await this.file.close().catch(() => {});
    if (this.leftover) await rm(this.leftover, { recursive: true, force: true });
    this.leftover = undefined;
  }
}
