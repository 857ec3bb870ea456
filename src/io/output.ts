import { createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { createGzip } from 'node:zlib';

export interface OutputOptions {
  /** File to write; stdout when absent or `-`. */
  path?: string;
  gzip?: boolean;
}

/**
 * Where a command's bytes go. A file is written under a temporary name in
 * the same folder and renamed only by `commit()`, so a failed run never
 * leaves a file that looks complete.
 */
export interface Output {
  stream: Writable;
  /** Waits for the bytes to be flushed, then gives the file its name. */
  commit(): Promise<void>;
  /** Removes the temporary file. */
  abort(): void;
}

export function openOutput(options: OutputOptions): Output {
  const toStdout = !options.path || options.path === '-';
  if (toStdout) {
    const sink = process.stdout;
    const stream = options.gzip ? createGzip() : sink;
    const finished = options.gzip ? piped(stream, sink, false) : Promise.resolve();
    return {
      stream,
      async commit() {
        if (options.gzip) {
          stream.end();
          await finished;
        }
      },
      abort() {},
    };
  }
  const path = options.path!;
  mkdirSync(dirname(path), { recursive: true });
  const temp = join(dirname(path), `.${basename(path)}.hx-partial-${process.pid}`);
  const file = createWriteStream(temp);
  const stream = options.gzip ? createGzip() : file;
  const finished = piped(stream, file, true);
  return {
    stream,
    async commit() {
      if (!stream.writableEnded) stream.end();
      await finished;
      renameSync(temp, path);
    },
    abort() {
      stream.destroy();
      file.destroy();
      rmSync(temp, { force: true });
    },
  };
}

/** Resolves when `head` has been written through to `sink` (and `sink` finished when `end`). */
function piped(head: Writable, sink: Writable, end: boolean): Promise<void> {
  const done = new Promise<void>((resolve, reject) => {
    sink.once('error', reject);
    if (head !== sink) {
      head.once('error', reject);
      (head as unknown as NodeJS.ReadableStream).pipe(sink, { end });
    }
    if (end) sink.once('finish', resolve);
    else (head as unknown as NodeJS.ReadableStream).once('end', resolve);
  });
  // A failed run destroys the streams with its error and calls abort(), not commit():
  // nobody awaits `done` then, and its rejection must not crash the process.
  done.catch(() => {});
  return done;
}
