/**
 * The inputs of `hx fasten`, read twice (the collision rule needs two
 * passes, see collisions.ts). Files are read where they are; stdin and
 * downloads are first copied to a temporary file (disk, not memory), so that
 * every input can be read again.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, pipeline as pipe } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { HxError } from '../errors.js';
import type { HttpClient } from '../http/client.js';
import { DEFAULT_CHUNK_BYTES, decoderFor } from '../io/input.js';
import { BATCHES_IN_FLIGHT, type Batch } from '../types.js';
import { fastenSplit, type FastenSplitOptions } from './split.js';

/** One input: the file to read and the name messages use for it. */
export interface FastenInput {
  path: string;
  name: string;
}

export type ReadOptions = Omit<FastenSplitOptions, 'source'>;

/** Batches of every input in order, each decompressed (gzip's magic) or decoded (UTF-16) as its first bytes say. */
export function readFastenInputs(inputs: FastenInput[], options: ReadOptions): Readable {
  return Readable.from(readAll(inputs, options), { objectMode: true, highWaterMark: BATCHES_IN_FLIGHT });
}

async function* readAll(inputs: FastenInput[], options: ReadOptions): AsyncGenerator<Batch> {
  for (const input of inputs) {
    const decoder = decoderFor(await firstBytes(input));
    const raw = createReadStream(input.path, { highWaterMark: DEFAULT_CHUNK_BYTES });
    const split = fastenSplit({ ...options, source: input.name });
    const stages = decoder ? [raw, decoder, split] : [raw, split];
    const tail = pipe(stages as unknown as [Readable, ...NodeJS.ReadWriteStream[]], () => {}) as unknown as Readable;
    try {
      for await (const batch of tail) yield batch as Batch;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code.startsWith('Z_')) throw new HxError(`${input.name}: gzip data is corrupt or truncated (${code})`);
      throw err;
    }
  }
}

/** The first two bytes of the input (fewer when it is shorter). */
async function firstBytes(input: FastenInput): Promise<Buffer> {
  let handle;
  try {
    handle = await open(input.path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new HxError(`${input.name}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : (err as Error).message}`);
  }
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await handle.read(head, 0, 2, 0);
    if (bytesRead === 0) {
      const stat = await handle.stat();
      if (stat.isDirectory()) throw new HxError(`${input.name}: is a directory`);
    }
    return head.subarray(0, bytesRead);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EISDIR') throw new HxError(`${input.name}: is a directory`);
    throw err;
  } finally {
    await handle.close();
  }
}

/** A temporary folder for copies of one-shot inputs, removed by `close()`. */
export class SpoolDir {
  private constructor(readonly path: string) {}
  private files = 0;

  static async create(dir = tmpdir()): Promise<SpoolDir> {
    return new SpoolDir(await mkdtemp(join(dir, 'hx-fasten-')));
  }

  /** Copies `stream` to a new file here and returns its path. */
  async copy(stream: Readable): Promise<string> {
    const path = join(this.path, `input-${++this.files}`);
    await pipeline(stream, createWriteStream(path));
    return path;
  }

  close(): Promise<void> {
    return rm(this.path, { recursive: true, force: true });
  }
}

/**
 * Basic credentials for a Fasten download: only for https URLs on
 * fastenhealth.com or a host under it, so a URL elsewhere (a webhook
 * payload can name any) never receives the keys.
 */
export function fastenCredentials(url: URL, env: NodeJS.ProcessEnv): string | undefined {
  const host = url.hostname.toLowerCase();
  if (url.protocol !== 'https:' || !(host === 'fastenhealth.com' || host.endsWith('.fastenhealth.com'))) return undefined;
  const publicKey = env.FASTEN_PUBLIC_KEY;
  const privateKey = env.FASTEN_PRIVATE_KEY;
  if (!publicKey || !privateKey) return undefined;
  return 'Basic ' + Buffer.from(`${publicKey}:${privateKey}`, 'utf8').toString('base64');
}

/**
 * Downloads `url` into the spool (streamed to disk), retrying the whole
 * download on 429/5xx/network failures. Returns the file's path.
 */
export async function download(client: HttpClient, url: URL, spool: SpoolDir, what: string): Promise<string> {
  return client.retrying(what, async () => {
    const res = await client.attempt({ url, what, headers: { accept: 'application/x-ndjson, application/fhir+ndjson, application/json, */*' } });
    return spool.copy(res.body);
  });
}
