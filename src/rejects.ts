import { createWriteStream, type WriteStream } from 'node:fs';
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
    // It holds the rejected lines as they came, PHI included: readable by its owner only.
    this.file ??= createWriteStream(this.path, { mode: 0o600 });
    const row = { source: loc.source, line: loc.line, reason, text: text() };
    this.file.write(JSON.stringify(row) + '\n');
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
