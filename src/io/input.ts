import { createReadStream, statSync } from 'node:fs';
import { Readable, Transform, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ndjsonSplit, type RawLines, type SplitOptions } from '../../transforms/ndjsonSplit.js';
import { HxError } from '../errors.js';
import type { StageContext } from '../stage.js';
import { BATCHES_IN_FLIGHT, type Batch } from '../types.js';

/**
 * Bytes per read. Smaller chunks make smaller batches whose records die
 * young in V8's nursery; larger ones cost fewer calls. 64 KiB measured best
 * (README, "Design").
 */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;

export interface ReadOptions extends StageContext, Pick<SplitOptions, 'maxLineBytes' | 'unpackBundles' | 'onBundle' | 'prefilter' | 'needles' | 'rawLines' | 'keepTexts'> {
  /** Told the bytes read so far (compressed bytes for gzip files). */
  onBytes?: (bytes: number) => void;
  /** Bytes per read from files. */
  chunkBytes?: number;
}

/** Sum of the input files' sizes, or undefined when stdin is among them. */
export function inputSize(paths: string[]): number | undefined {
  let total = 0;
  for (const path of paths) {
    if (path === '-') return undefined;
    total += statSync(path).size;
  }
  return total;
}

/**
 * Every input (files in order, `-` or nothing for stdin), decompressed when
 * its first bytes are gzip's magic, converted to UTF-8 when they are a UTF-16
 * byte order mark, framed into Batches of resources.
 * Pulls one input at a time and only as fast as the consumer reads.
 */
export function readInputs(paths: string[], options: ReadOptions): Readable {
  const inputs = paths.length > 0 ? paths : ['-'];
  return Readable.from(readAll(inputs, options), { objectMode: true, highWaterMark: BATCHES_IN_FLIGHT });
}

async function* readAll(paths: string[], options: ReadOptions): AsyncGenerator<Batch | RawLines> {
  let before = 0;
  for (const path of paths) {
    const raw = openRaw(path, options.chunkBytes ?? DEFAULT_CHUNK_BYTES);
    let counted = 0;
    const report = () => {
      counted = (raw as { bytesRead?: number }).bytesRead ?? counted;
      options.onBytes?.(before + counted);
    };
    const bytes = await decompressed(raw, path);
    const split = ndjsonSplit({ ...options, source: path });
    const stages = bytes === raw ? [raw, split] : [raw, bytes, split];
    const tail = pipeline(stages as [Readable, ...NodeJS.ReadWriteStream[]], () => {}) as unknown as Readable;
    try {
      for await (const batch of tail) {
        if ('bytesRead' in raw) report();
        yield batch as Batch | RawLines;
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code.startsWith('Z_')) throw new HxError(`${path}: gzip data is corrupt or truncated (${code})`);
      if (code === 'EISDIR') throw new HxError(`${path}: is a directory`);
      throw err;
    }
    if ('bytesRead' in raw) report();
    before += counted;
  }
}

function openRaw(path: string, chunkBytes: number): Readable {
  if (path === '-') return process.stdin;
  const stream = createReadStream(path, { highWaterMark: chunkBytes });
  return stream;
}

/**
 * The stream itself, or a gunzip of it when it starts with 1f 8b. The gunzip
 * hands out chunks the size of a file read, so a .gz input makes the same
 * batches as its plain file: with zlib's default 16 KiB chunks, peak RSS on
 * 1 GB was 120-133 MB against 103 MB.
 *
 * Or its text as UTF-8 when it starts with a UTF-16 byte order mark:
 * Windows PowerShell 5 writes UTF-16 with `>`, so `hx fetch … > x.ndjson`
 * there gives a file every JSON reader would otherwise reject line by line.
 */
async function decompressed(raw: Readable, path: string): Promise<Readable> {
  return decoderFor(await peek(raw, 2, path)) ?? raw;
}

/** What turns an input whose first bytes are `head` into UTF-8 JSON bytes: a gunzip, a UTF-16 decoder, or nothing. */
export function decoderFor(head: Uint8Array): Transform | undefined {
  if (head[0] === 0x1f && head[1] === 0x8b) return createGunzip({ chunkSize: DEFAULT_CHUNK_BYTES });
  if (head[0] === 0xff && head[1] === 0xfe) return utf16ToUtf8('utf-16le');
  if (head[0] === 0xfe && head[1] === 0xff) return utf16ToUtf8('utf-16be');
  return undefined;
}

/** UTF-16 text (its byte order mark dropped) as UTF-8 bytes; a code unit or pair split across reads is joined. */
function utf16ToUtf8(encoding: 'utf-16le' | 'utf-16be'): Transform {
  const decoder = new TextDecoder(encoding);
  const encoded = (text: string) => (text.length > 0 ? Buffer.from(text, 'utf8') : undefined);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, encoded(decoder.decode(chunk, { stream: true })));
    },
    flush(callback) {
      callback(null, encoded(decoder.decode()));
    },
  });
}

/** Reads at least `n` bytes (or to the end) and puts them back. */
function peek(stream: Readable, n: number, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const done = (err?: Error) => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
      const head = Buffer.concat(parts);
      if (head.length > 0) stream.unshift(head);
      if (err) reject(err);
      else resolve(head);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while (have < n && (chunk = stream.read()) !== null) {
        parts.push(chunk);
        have += chunk.length;
      }
      if (have >= n) done();
    };
    const onEnd = () => done();
    const onError = (err: NodeJS.ErrnoException) =>
      done(new HxError(err.code === 'ENOENT' ? `${path}: no such file` : err.code === 'EISDIR' ? `${path}: is a directory` : `${path}: ${err.message}`));
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}
