/**
 * The resume state of a `--dir` download, `DIR/.hx-bulk-state.json`:
 * the status URL (so an export interrupted while polling can be picked up),
 * and for each completed file its source URL, size and line count. Written
 * atomically (temp file + rename) after every change, so a kill at any
 * moment leaves either the old or the new state, never half of one.
 */
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { LineCounter } from './lineCounter.js';

export const STATE_FILE = '.hx-bulk-state.json';

export interface CompletedFile {
  url: string;
  bytes: number;
  lines: number;
  /** For the account of a resumed run: patient header lines, and resources per type of a mixed file. */
  headerLines?: number;
  types?: Record<string, number>;
}

export interface ResumeState {
  version: 1;
  /** Identifies the kick-off (URL and parameters) that the state belongs to. */
  request?: string;
  statusUrl?: string;
  transactionTime?: string;
  /** Every file of the manifest is on disk: a new `export` with the same request starts afresh. */
  complete?: boolean;
  files: Record<string, CompletedFile>;
}

export class StateFile {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly dir: string,
    readonly state: ResumeState,
  ) {}

  static async open(dir: string): Promise<StateFile> {
    await mkdir(dir, { recursive: true });
    let state: ResumeState = { version: 1, files: {} };
    try {
      const value = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8')) as ResumeState;
      if (value?.version === 1 && value.files && typeof value.files === 'object') state = value;
    } catch {
      // no state yet (or an unreadable one: start over)
    }
    return new StateFile(dir, state);
  }

  /** Changes the state and writes it; writes are serialised so the last change always lands last. */
  update(change: (state: ResumeState) => void): Promise<void> {
    change(this.state);
    const text = JSON.stringify(this.state, null, 1) + '\n';
    this.writing = this.writing.then(() => writeAtomic(join(this.dir, STATE_FILE), text));
    return this.writing;
  }

  /** Whether `name` was completed from `url` and is still on disk as it was left (size and line count). */
  async isComplete(name: string, url: string): Promise<boolean> {
    const done = this.state.files[name];
    if (!done || done.url !== url) return false;
    const path = join(this.dir, name);
    const size = await stat(path).then((s) => s.size, () => -1);
    return size === done.bytes && (await countLines(path)) === done.lines;
  }
}

export async function writeAtomic(path: string, text: string): Promise<void> {
  const temp = `${path}.hx-partial-${process.pid}`;
  await writeFile(temp, text);
  await rename(temp, path);
}

/** Non-blank lines of a file, streamed (the check a resume makes before trusting a file). */
async function countLines(path: string): Promise<number> {
  const counter = new LineCounter(false);
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), counter, new Writable({ write: (_c, _e, done) => done() }));
  return counter.counts.lines;
}
