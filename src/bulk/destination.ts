/**
 * Where downloaded files go.
 *
 * - `DirDestination`: `DIR/<name>` per file, written as `DIR/.<name>.partial`
 *   and renamed when complete, then recorded in the resume state. A rerun
 *   skips files the state says are complete (size and line count checked).
 * - `StdoutDestination`: one NDJSON stream, files in manifest order whatever
 *   order they finish in. The file at the head of the order streams straight
 *   to stdout; files that finish ahead of it wait in a spool folder on disk
 *   (never in memory) and follow when their turn comes. Disk use is bounded
 *   by the files completed ahead of the head file.
 */
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HxError } from '../errors.js';
import type { LineCounts } from './lineCounter.js';
import type { PlannedFile } from './manifest.js';
import { StateFile, type CompletedFile } from './state.js';

export interface FileTarget {
  /** A stream for one attempt at the whole file; an earlier attempt's bytes are discarded. */
  open(): Writable;
  /** The last opened stream finished with the complete file. */
  commit(counts: LineCounts): Promise<void>;
  /** No more attempts: remove what was written. */
  abort(): Promise<void>;
}

export interface Destination {
  /** The counts of a file already complete from an earlier run, if any. */
  complete(file: PlannedFile): Promise<CompletedFile | undefined>;
  target(file: PlannedFile): FileTarget;
  /** All files done: flush what waits. */
  close(): Promise<void>;
  /** The run failed: remove temporary files. */
  abort(): Promise<void>;
}

/**
 * A file being written takes up to this much before it says "wait": with the
 * default 16 KiB, the disk's pace paused the socket on almost every chunk, and
 * each pause and resume cost the download more CPU than the bytes did (0.5 GB,
 * 4 files: 1.1 s of CPU against 0.85 s with 1 MiB).
 */
const FILE_WRITE_BUFFER = 1 << 20;

export class DirDestination implements Destination {
  constructor(
    readonly dir: string,
    readonly state: StateFile,
  ) {
    mkdirSync(dir, { recursive: true });
  }

  async complete(file: PlannedFile): Promise<CompletedFile | undefined> {
    return (await this.state.isComplete(file.name, file.entry.url)) ? this.state.state.files[file.name] : undefined;
  }

  target(file: PlannedFile): FileTarget {
    const temp = join(this.dir, `.${file.name}.partial`);
    return {
      open: () => createWriteStream(temp, { highWaterMark: FILE_WRITE_BUFFER }),
      commit: async (counts) => {
        await rename(temp, join(this.dir, file.name));
        await this.state.update((s) => {
          s.files[file.name] = {
            url: file.entry.url,
            bytes: counts.bytes,
            lines: counts.lines,
            ...(counts.headerLines ? { headerLines: counts.headerLines } : {}),
            ...(counts.types ? { types: Object.fromEntries(counts.types) } : {}),
          };
        });
      },
      abort: () => rm(temp, { force: true }),
    };
  }

  async close(): Promise<void> {}
  async abort(): Promise<void> {}
}

/** Files that do not go to stdout (error files, deleted files unless asked) are only counted. */
export class StdoutDestination implements Destination {
  private next = 0;
  private readonly position = new Map<number, number>();
  private readonly spooled = new Map<number, string>();
  private spoolDir: Promise<string> | undefined;
  private pumping: Promise<void> = Promise.resolve();

  constructor(
    emitted: PlannedFile[],
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {
    emitted.forEach((file, pos) => this.position.set(file.index, pos));
  }

  async complete(): Promise<undefined> {
    return undefined;
  }

  target(file: PlannedFile): FileTarget {
    const pos = this.position.get(file.index);
    if (pos === undefined) return discardTarget();
    let mode: 'direct' | 'spool' | undefined;
    let spoolPath: string | undefined;
    let direct: DirectCopy | undefined;
    return {
      open: () => {
        // The mode is chosen once: bytes that reached stdout cannot be taken back.
        mode ??= pos === this.next ? 'direct' : 'spool';
        if (mode === 'direct') {
          direct ??= new DirectCopy(file.name);
          return forwarder(this.out, direct.attempt());
        }
        return lazySpool(this.spoolFolder(), `${pos}.ndjson`, (path) => (spoolPath = path));
      },
      commit: async () => {
        if (mode === 'direct') this.next++;
        else this.spooled.set(pos, spoolPath!);
        await this.pump();
      },
      abort: async () => {
        if (spoolPath) await rm(spoolPath, { force: true });
      },
    };
  }

  async close(): Promise<void> {
    await this.pump();
    if (this.spoolDir) await rm(await this.spoolDir, { recursive: true, force: true });
  }

  async abort(): Promise<void> {
    if (this.spoolDir) await rm(await this.spoolDir, { recursive: true, force: true });
  }

  private spoolFolder(): Promise<string> {
    return (this.spoolDir ??= mkdtemp(join(tmpdir(), 'hx-bulk-spool-')));
  }

  /** Copies spooled files to stdout while the next in order is ready; one copy at a time. */
  private pump(): Promise<void> {
    this.pumping = this.pumping.then(async () => {
      for (let path = this.spooled.get(this.next); path !== undefined; path = this.spooled.get(this.next)) {
        await pipeline(createReadStream(path, { highWaterMark: 1 << 16 }), forwarder(this.out, (c) => c));
        await rm(path, { force: true });
        this.spooled.delete(this.next);
        this.next++;
      }
    });
    return this.pumping;
  }
}

/**
 * The bytes of a file that streams straight to stdout, across attempts. A
 * retry fetches the file from its start; the bytes stdout already has are
 * skipped, and the last of them are compared with what the retry brings, so
 * a file that changed between attempts fails the run instead of splicing
 * two versions together.
 */
class DirectCopy {
  private emitted = 0;
  private tail = Buffer.alloc(0);
  private static readonly TAIL_BYTES = 256;

  constructor(private readonly name: string) {}

  /** The chunk mapper of one attempt: undefined for chunks stdout already has. */
  attempt(): (chunk: Buffer) => Buffer | undefined {
    const skipTo = this.emitted;
    const tailStart = skipTo - this.tail.length;
    const expected = this.tail;
    let position = 0;
    return (chunk) => {
      const start = position;
      position += chunk.length;
      if (start < skipTo) {
        // Compare the overlap of this chunk with the remembered tail.
        const from = Math.max(start, tailStart);
        const to = Math.min(position, skipTo);
        if (from < to && !chunk.subarray(from - start, to - start).equals(expected.subarray(from - tailStart, to - tailStart))) {
          throw new HxError(`${this.name} changed between download attempts, and part of it is already on stdout; use --dir, whose files restart cleanly`);
        }
        if (position <= skipTo) return undefined;
        chunk = chunk.subarray(skipTo - start);
      }
      this.emitted += chunk.length;
      this.remember(chunk);
      return chunk;
    };
  }

  private remember(chunk: Buffer): void {
    const keep = DirectCopy.TAIL_BYTES;
    this.tail = chunk.length >= keep ? Buffer.from(chunk.subarray(chunk.length - keep)) : Buffer.concat([this.tail, chunk]).subarray(-keep);
  }
}

/** A Writable into `out` that never ends it, with backpressure. */
function forwarder(out: NodeJS.WritableStream, map: (chunk: Buffer) => Buffer | undefined): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      let piece: Buffer | undefined;
      try {
        piece = map(chunk);
      } catch (err) {
        return done(err as Error);
      }
      if (!piece || piece.length === 0) return done();
      if (out.write(piece)) return done();
      // Wait for room, unless the reader goes away first (`| head`): then fail instead of waiting forever.
      const settle = (err?: Error) => {
        out.off('drain', onDrain);
        out.off('error', settle);
        out.off('close', onClose);
        done(err);
      };
      const onDrain = () => settle();
      const onClose = () => settle(new HxError('stdout was closed'));
      out.once('drain', onDrain);
      out.once('error', settle);
      out.once('close', onClose);
    },
  });
}

/** A spool file stream (truncated on open); the folder is created on first use. */
function lazySpool(folder: Promise<string>, name: string, onPath: (path: string) => void): Writable {
  let file: Writable | undefined;
  const stream: Writable = new Writable({
    write(chunk: Buffer, _encoding, done) {
      ready.then((f) => (f.write(chunk) ? done() : f.once('drain', () => done())), done);
    },
    final(done) {
      ready.then((f) => f.end(() => done()), done);
    },
    destroy(err, done) {
      file?.destroy();
      done(err);
    },
  });
  const ready = folder.then((dir) => {
    const path = join(dir, name);
    onPath(path);
    file = createWriteStream(path, { highWaterMark: FILE_WRITE_BUFFER });
    file.on('error', (err) => stream.destroy(err));
    return file;
  });
  return stream;
}

function discardTarget(): FileTarget {
  return {
    open: () => new Writable({ write: (_c, _e, done) => done() }),
    commit: async () => {},
    abort: async () => {},
  };
}
