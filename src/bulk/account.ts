/**
 * The account of a Bulk Data run: files, bytes, resources per type, what
 * the manifest claimed versus what was found, errors, retries and time,
 * and the server's `transactionTime` (the `--since` of the next export).
 */
import type { LineCounts } from './lineCounter.js';
import type { PlannedFile } from './manifest.js';

export interface CountMismatch {
  file: string;
  manifestCount: number;
  found: number;
}

export class BulkAccount {
  transactionTime: string | undefined;
  statusUrl: string | undefined;
  polls = 0;
  filesPlanned = 0;
  filesDownloaded = 0;
  /** Files found complete from an earlier run and not fetched again. */
  filesResumed = 0;
  /** Bytes of the files as written (decompressed, final newlines added). */
  bytes = 0;
  /** Resources in output files, per type (patient header lines excluded). */
  readonly resourcesByType = new Map<string, number>();
  /** `Parameters` header lines of output organised by patient. */
  headerLines = 0;
  /** Files that lacked a final newline and got one. */
  newlinesAdded = 0;
  deletedEntries = 0;
  errorFiles = 0;
  /** OperationOutcomes in the error files. */
  errorOutcomes = 0;
  readonly countMismatches: CountMismatch[] = [];
  /** Bytes received so far, retried attempts included (for progress, not the account). */
  bytesSeen = 0;
  retries = 0;
  requests = 0;
  tokensIssued = 0;
  private readonly started = Date.now();

  /** Counts a completed file (fetched now or complete from before). */
  addFile(file: PlannedFile, counts: Pick<LineCounts, 'bytes' | 'lines' | 'headerLines' | 'types' | 'addedNewline'>, resumed: boolean): CountMismatch | undefined {
    if (resumed) this.filesResumed++;
    else this.filesDownloaded++;
    this.bytes += counts.bytes;
    if (counts.addedNewline) this.newlinesAdded++;
    const resources = counts.lines - counts.headerLines;
    if (file.kind === 'output') {
      this.headerLines += counts.headerLines;
      if (counts.types) for (const [type, n] of counts.types) this.addResources(type, n);
      else this.addResources(file.entry.type ?? '(untyped)', resources);
    } else if (file.kind === 'deleted') this.deletedEntries += resources;
    else {
      this.errorFiles++;
      this.errorOutcomes += resources;
    }
    const claimed = file.entry.count;
    if (claimed !== undefined && claimed !== resources && file.kind !== 'error') {
      const mismatch = { file: file.name, manifestCount: claimed, found: resources };
      this.countMismatches.push(mismatch);
      return mismatch;
    }
    return undefined;
  }

  get resources(): number {
    let n = 0;
    for (const count of this.resourcesByType.values()) n += count;
    return n;
  }

  get elapsedSeconds(): number {
    return (Date.now() - this.started) / 1000;
  }

  toJSON(): Record<string, unknown> {
    return {
      transactionTime: this.transactionTime,
      polls: this.polls,
      files: { planned: this.filesPlanned, downloaded: this.filesDownloaded, resumed: this.filesResumed },
      bytes: this.bytes,
      resources: this.resources,
      resourcesByType: Object.fromEntries([...this.resourcesByType].sort(([a], [b]) => (a < b ? -1 : 1))),
      headerLines: this.headerLines,
      newlinesAdded: this.newlinesAdded,
      deletedEntries: this.deletedEntries,
      errors: { files: this.errorFiles, outcomes: this.errorOutcomes },
      countMismatches: this.countMismatches,
      requests: this.requests,
      retries: this.retries,
      tokensIssued: this.tokensIssued,
      elapsedSeconds: this.elapsedSeconds,
    };
  }

  /** A progress line while files download. */
  progress(): string {
    const seconds = Math.max(this.elapsedSeconds, 0.001);
    const mb = this.bytesSeen / 1e6;
    return `downloading: ${this.filesDownloaded + this.filesResumed}/${this.filesPlanned} files done, ${mb.toFixed(1)} MB received (${(mb / seconds).toFixed(1)} MB/s)`;
  }

  summary(): string {
    const seconds = Math.max(this.elapsedSeconds, 0.001);
    const mb = this.bytes / 1e6;
    let line = `${this.filesDownloaded + this.filesResumed} files`;
    if (this.filesResumed) line += ` (${this.filesResumed} complete from before)`;
    line += `, ${this.resources} resources, ${mb.toFixed(1)} MB in ${seconds.toFixed(1)} s (${(mb / seconds).toFixed(1)} MB/s)`;
    if (this.errorOutcomes) line += `, ${this.errorOutcomes} errors in ${this.errorFiles} files`;
    if (this.deletedEntries) line += `, ${this.deletedEntries} deleted`;
    if (this.retries) line += `, ${this.retries} retries`;
    if (this.transactionTime) line += `; transactionTime ${this.transactionTime} (the next --since)`;
    return line;
  }

  private addResources(type: string, n: number): void {
    this.resourcesByType.set(type, (this.resourcesByType.get(type) ?? 0) + n);
  }
}
