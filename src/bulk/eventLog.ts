/**
 * `--log FILE`: an NDJSON event log in the format of the SMART reference
 * client (bulk-data-client, log version 2), so tools that read its logs
 * read hx's: `kickoff`, `status_progress`, `status_complete`,
 * `status_error`, `manifest_complete`, `download_request`,
 * `download_complete`, `download_error`, `export_complete`. URLs pass
 * through the redactor (signed download URLs); no tokens, no record content.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import type { Redactor } from '../http/redact.js';

export class EventLog {
  private readonly stream: WriteStream;
  readonly exportId = randomBytes(10).toString('hex');

  constructor(
    path: string,
    private readonly redactor: Redactor,
  ) {
    this.stream = createWriteStream(path, { flags: 'a' });
  }

  event(eventId: string, eventDetail: Record<string, unknown>): void {
    const line = { exportId: this.exportId, timestamp: new Date().toISOString(), eventId, eventDetail };
    this.stream.write(this.redactor.text(JSON.stringify(line)) + '\n');
  }

  url(url: string): string {
    return this.redactor.url(url);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(resolve));
  }
}
