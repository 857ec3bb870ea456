import { createWriteStream, fchmodSync, fstatSync, openSync, type WriteStream } from 'node:fs';
import type { Account } from './account.js';
import { HxError } from './errors.js';
import { formatLocation, type Location } from './types.js';

/**
 * What happens to a record that cannot go on. Without a reject file the run
 * stops at the first one (non-zero exit); with one, each rejected record is
 * written there as `{"source","line","reason","text"}` and the run goes on.
 * Either way the message names the place and the reason, never the content.
 */
export class Rejects {
  private file: WriteStream | undefined;

  constructor(
    private readonly account: Account,
    readonly path?: string,
  ) {}

  /** `text` is produced only when a reject file needs it (it may be large). */
  reject(loc: Location, reason: string, text: () => string | undefined): void {
    this.account.countRejected(reason);
    if (!this.path) throw new HxError(`${formatLocation(loc)}: ${reason}`);
    this.file ??= this.open(this.path);
    const row = { source: loc.source, line: loc.line, reason, text: text() };
    this.file.write(JSON.stringify(row) + '\n');
  }

  /**
   * The file holds the rejected lines as they came, PHI included: readable by
   * its owner only. The mode applies to a file the open creates; one that was
   * there already (and is a regular file, not a pipe or a terminal) is
   * narrowed before anything is written to it, hence the synchronous open
   * (once per run: a stream's own open lets its first writes go out first).
   */
  private open(path: string): WriteStream {
    const fd = openSync(path, 'w', 0o600); // a failure reads as the path and its reason (asUserError)
    try {
      const stat = fstatSync(fd);
      if (stat.isFile() && (stat.mode & 0o077) !== 0) fchmodSync(fd, stat.mode & 0o700);
    } catch (err) {
      this.account.warn(`--rejects ${path}: could not make it readable by its owner only (${(err as NodeJS.ErrnoException).code ?? 'error'}); it holds rejected lines as they came`);
    }
    return createWriteStream(path, { fd });
  }

  async close(): Promise<void> {
    const file = this.file;
    if (!file) return;
    await new Promise<void>((resolve, reject) => {
      file.once('error', reject);
      file.end(resolve);
    });
  }
}
