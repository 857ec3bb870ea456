/**
 * The checkpoint of a resumable ingest: which chunks the server has
 * acknowledged, so a rerun of the same command sends only the others.
 *
 * Chunks are numbered in input order and cut by fixed budgets, so the same
 * input gives the same chunks on every run. To be sure a rerun really reads
 * the same input, each chunk's body has a digest; the file keeps the
 * acknowledged prefix (chunks 1..N) as one rolling digest and, for the few
 * chunks acknowledged out of order above it (at most the concurrency), their
 * own digests. Its size is constant, so rewriting it after every
 * acknowledgement stays cheap. It also keeps the server's sums so far, so
 * the report of the last run covers the whole import.
 *
 * Writes are atomic (temporary file, then rename): a crash leaves the old
 * checkpoint or the new one, never half of one.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { HxError } from '../errors.js';

export interface ServerSums {
  chunks: number;
  resourceCount: number;
  skippedCount: number;
  skippedTypes: Record<string, number>;
  /** Entries posted in acknowledged chunks. */
  sent: number;
}

interface CheckpointFile {
  format: 'hx-ingest-checkpoint/1';
  /** What the chunks were cut for: a rerun with other settings would cut differently. */
  settings: string;
  prefix: number;
  prefixDigest: string;
  above: Record<string, string>;
  sums: ServerSums;
}

export function emptySums(): ServerSums {
  return { chunks: 0, resourceCount: 0, skippedCount: 0, skippedTypes: {}, sent: 0 };
}

export function chunkDigest(body: string | Buffer): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 32);
}

export class Checkpoint {
  private prefix = 0;
  private prefixDigest = '';
  private readonly above = new Map<number, string>();
  /** Digests of the prefix as this run meets its chunks, to check them. */
  private replayDigest = '';
  readonly sums: ServerSums;

  private constructor(
    private readonly path: string | undefined,
    private readonly settings: string,
    saved?: CheckpointFile,
  ) {
    this.sums = saved?.sums ?? emptySums();
    if (saved) {
      this.prefix = saved.prefix;
      this.prefixDigest = saved.prefixDigest;
      for (const [n, digest] of Object.entries(saved.above)) this.above.set(Number(n), digest);
    }
  }

  /** The checkpoint at `path` (a fresh one when the file does not exist), or one kept in memory only. */
  static open(path: string | undefined, settings: string): Checkpoint {
    if (path === undefined) return new Checkpoint(undefined, settings);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Checkpoint(path, settings);
      throw new HxError(`${path}: cannot read the checkpoint (${(err as NodeJS.ErrnoException).code})`);
    }
    let saved: CheckpointFile;
    try {
      saved = JSON.parse(text);
    } catch {
      throw new HxError(`${path}: not an hx ingest checkpoint (invalid JSON)`);
    }
    if (saved?.format !== 'hx-ingest-checkpoint/1') throw new HxError(`${path}: not an hx ingest checkpoint`);
    if (saved.settings !== settings) {
      throw new HxError(`${path}: the checkpoint is of an import with other settings (${saved.settings}); remove it to start over`);
    }
    return new Checkpoint(path, settings, saved);
  }

  /** Chunks acknowledged by earlier runs. */
  get resumed(): number {
    return this.prefix + this.above.size;
  }

  /**
   * Whether chunk `n` (whose body has `digest`) was acknowledged before;
   * throws when the input differs from the one the checkpoint was made for.
   * Must be called for every chunk, in order.
   */
  acknowledged(n: number, digest: string): boolean {
    if (n <= this.prefix) {
      this.replayDigest = chunkDigest(this.replayDigest + digest);
      if (n === this.prefix && this.replayDigest !== this.prefixDigest) throw this.changed(n);
      return true;
    }
    const known = this.above.get(n);
    if (known === undefined) return false;
    if (known !== digest) throw this.changed(n);
    return true;
  }

  /** At the end of a run over `chunks` chunks: an input shorter than the checkpoint's is another input. */
  checkLength(chunks: number): void {
    if (chunks < this.prefix || [...this.above.keys()].some((n) => n > chunks)) {
      throw new HxError(`${this.path}: the input has ${chunks} chunks, fewer than the checkpoint acknowledged: the input changed; remove the checkpoint to start over`);
    }
  }

  /** Records chunk `n` as acknowledged, with the server's answer, and saves. */
  acknowledge(n: number, digest: string, add: Omit<ServerSums, 'chunks'>): void {
    const sums = this.sums;
    sums.chunks++;
    sums.resourceCount += add.resourceCount;
    sums.skippedCount += add.skippedCount;
    sums.sent += add.sent;
    for (const [type, count] of Object.entries(add.skippedTypes)) sums.skippedTypes[type] = (sums.skippedTypes[type] ?? 0) + count;
    this.above.set(n, digest);
    while (this.above.has(this.prefix + 1)) {
      this.prefixDigest = chunkDigest(this.prefixDigest + this.above.get(this.prefix + 1)!);
      this.above.delete(++this.prefix);
    }
    this.save();
  }

  private save(): void {
    if (this.path === undefined) return;
    const file: CheckpointFile = {
      format: 'hx-ingest-checkpoint/1',
      settings: this.settings,
      prefix: this.prefix,
      prefixDigest: this.prefixDigest,
      above: Object.fromEntries(this.above),
      sums: this.sums,
    };
    const temp = `${this.path}.hx-partial-${process.pid}`;
    writeFileSync(temp, JSON.stringify(file) + '\n');
    renameSync(temp, this.path);
  }

  private changed(n: number): HxError {
    return new HxError(`${this.path}: chunk ${n} differs from the one the checkpoint acknowledged: the input changed; remove the checkpoint to start over`);
  }
}
