/**
 * The exact account of a run. Every record that enters is either written,
 * rejected (bad input, or refused by a stage) or dropped on purpose by a
 * stage that says why (a duplicate, say), so that
 *
 *     read = written + rejected + dropped
 *
 * holds at the end of every run. Stages add their own counters under
 * `stages[name]`.
 */
export class Account {
  read = 0;
  written = 0;
  rejected = 0;
  dropped = 0;
  skippedBlank = 0;
  /** Bundle entries that carried no resource (a DELETE request, say). */
  entriesWithoutResource = 0;
  warnings = 0;
  /** Worker threads that parsed and transformed records (0: all of it on the main thread). */
  workerThreads = 0;
  readonly writtenByType = new Map<string, number>();
  readonly rejectedByReason = new Map<string, number>();
  readonly droppedByReason = new Map<string, number>();
  readonly stages: Record<string, Record<string, unknown>> = {};
  private readonly startedAt = Date.now();

  /** Called for each warning; the CLI prints them on stderr. */
  onWarning: (message: string) => void = () => {};

  countWritten(resourceType: string): void {
    this.written++;
    this.writtenByType.set(resourceType, (this.writtenByType.get(resourceType) ?? 0) + 1);
  }

  countRejected(reason: string): void {
    this.rejected++;
    const kind = reasonKind(reason);
    this.rejectedByReason.set(kind, (this.rejectedByReason.get(kind) ?? 0) + 1);
  }

  countDropped(reason: string, n = 1): void {
    this.dropped += n;
    this.droppedByReason.set(reason, (this.droppedByReason.get(reason) ?? 0) + n);
  }

  warn(message: string): void {
    this.warnings++;
    this.onWarning(message);
  }

  /** The stage's own counters, created on first use. */
  stage<T extends Record<string, unknown>>(name: string, init: () => T): T {
    return (this.stages[name] ??= init()) as T;
  }

  get balanced(): boolean {
    return this.read === this.written + this.rejected + this.dropped;
  }

  toJSON(): Record<string, unknown> {
    return {
      read: this.read,
      written: this.written,
      rejected: this.rejected,
      dropped: this.dropped,
      balanced: this.balanced,
      skippedBlank: this.skippedBlank,
      entriesWithoutResource: this.entriesWithoutResource,
      warnings: this.warnings,
      workerThreads: this.workerThreads,
      writtenByType: sortedObject(this.writtenByType),
      rejectedByReason: sortedObject(this.rejectedByReason),
      droppedByReason: sortedObject(this.droppedByReason),
      stages: this.stages,
      elapsedSeconds: (Date.now() - this.startedAt) / 1000,
    };
  }

  /** One line for stderr: `read 10 = written 8 + rejected 1 + dropped 1; blank 2`. */
  summary(): string {
    let line = `read ${this.read} = written ${this.written} + rejected ${this.rejected}`;
    if (this.dropped) line += ` + dropped ${this.dropped}`;
    if (this.skippedBlank) line += `; ${this.skippedBlank} blank lines skipped`;
    if (this.entriesWithoutResource) line += `; ${this.entriesWithoutResource} entries without resource`;
    if (this.warnings) line += `; ${this.warnings} warnings`;
    return line;
  }
}

/** Group reasons by their first words, so `invalid JSON (position 7)` and `(position 9)` count together. */
function reasonKind(reason: string): string {
  const paren = reason.indexOf(' (');
  return paren > 0 ? reason.slice(0, paren) : reason;
}

function sortedObject(map: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
