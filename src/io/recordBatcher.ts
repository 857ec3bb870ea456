import type { StageContext } from '../stage.js';
import type { Batch, Resource } from '../types.js';

/**
 * What a reader has read of one input and not yet handed on. Every record
 * read goes through here, kept or rejected, so `account.read` counts each
 * exactly once (the left side of read = written + rejected + dropped).
 */
export class RecordBatcher {
  private batch: Batch;

  constructor(
    private readonly ctx: StageContext,
    private readonly source: string,
    /** Keep the text each resource was parsed from (`Batch.texts`). */
    private readonly keepTexts = false,
  ) {
    this.batch = this.empty();
  }

  /** A resource read, with the NDJSON line it was parsed from when there is one. */
  add(resource: Resource, line: number, text?: string): void {
    this.ctx.account.read++;
    this.batch.resources.push(resource);
    this.batch.lines.push(line);
    this.batch.texts?.push(text);
  }

  /** A record read but refused: to the run's reject policy (which may throw). */
  reject(line: number, reason: string, text: () => string | undefined): void {
    this.ctx.account.read++;
    this.ctx.rejects.reject({ source: this.source, line }, reason, text);
  }

  /** The records so far (possibly none), and a fresh batch for the next. */
  take(): Batch {
    const batch = this.batch;
    this.batch = this.empty();
    return batch;
  }

  /** Hands the records so far to `push`, if there are any. */
  flush(push: (batch: Batch) => void): void {
    if (this.batch.resources.length > 0) push(this.take());
  }

  private empty(): Batch {
    return this.keepTexts ? { source: this.source, lines: [], resources: [], texts: [] } : { source: this.source, lines: [], resources: [] };
  }
}
