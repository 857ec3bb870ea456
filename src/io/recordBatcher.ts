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
  ) {
    this.batch = this.empty();
  }

  add(resource: Resource, line: number): void {
    this.ctx.account.read++;
    this.batch.resources.push(resource);
    this.batch.lines.push(line);
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
    return { source: this.source, lines: [], resources: [] };
  }
}
