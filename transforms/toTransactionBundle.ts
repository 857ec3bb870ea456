/**
 * toTransactionBundle: resources → FHIR R4 Bundles, written as text in
 * constant memory.
 *
 * The per-record core is `bundleEntry` (a resource → the JSON text of its
 * Bundle entry), built from `requestUrl` and `entryUuid`. The stream stage
 * `toTransactionBundle()` is a Transform from Batches to text: the Bundle's
 * head, then each entry as it arrives, then its tail, so no Bundle ever
 * exists as one object or one string. With a budget (`maxEntries`,
 * `maxBytes`) it cuts the stream into several Bundles, one per line
 * (NDJSON); `bundleFiles()` writes them to numbered files instead.
 *
 * Each resource is serialised once, with JSON.stringify, and spliced into
 * the entry text: entries are never built as objects to be stringified again.
 *
 * Duplicates on (type, id): the first wins, as in HealthClaw's exporter,
 * across the whole run (every chunk included, so loading all chunks gives
 * what one Bundle would). The keys seen are kept in a KeySet, 64-bit hashes
 * at 8.9 to 10 bytes per resource with an id (see keySet.ts for the bound
 * and the false-positive odds). There are no false negatives, so no Bundle
 * ever names one resource twice. With dedupe off, chunks keep that promise
 * exactly: a second version of a resource in the open chunk starts the next
 * one (a transaction naming a resource twice fails as a whole).
 */
import { createHash } from 'node:crypto';
import { createWriteStream, readdirSync, renameSync, rmSync, mkdirSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Transform, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { HxError, RecordRejected } from '../src/errors.js';
import type { StageContext } from '../src/stage.js';
import type { Batch, Resource, SplicedText } from '../src/types.js';
import { ByteBuilder } from '../src/io/byteBuilder.js';
import { appendText } from '../src/io/serialize.js';
import { KeySet } from '../src/util/keySet.js';
import { FHIR_ID } from '../src/util/fhirSyntax.js';

export type BundleType = 'transaction' | 'batch' | 'collection';
export const BUNDLE_TYPES: readonly BundleType[] = ['transaction', 'batch', 'collection'];

export interface EntryOptions {
  /** Bundle.type; `collection` entries carry no `request`. Default `transaction`. */
  type?: BundleType;
  /** Base URL: entries of resources with an id get `fullUrl` = BASE/Type/id. */
  fullUrl?: string;
  /** Indent like Python's `json.dump(indent=2)`, for people who read the file. */
  pretty?: boolean;
}

export interface BundleOptions extends EntryOptions {
  /** Drop later resources with an already seen (type, id). Default true. */
  dedupe?: boolean;
  /** Most entries per Bundle; with `maxBytes`, cuts the stream into chunks. */
  maxEntries?: number;
  /** Most bytes per Bundle (UTF-8, head and tail included, final newline not). */
  maxBytes?: number;
  /** Seed of the dedupe hash set (reproducible tests); random by default. */
  dedupeSeed?: number;
}

/** The counters this stage adds to the account, under `stages.bundle`. */
export interface BundleStats extends Record<string, unknown> {
  type: BundleType;
  entries: number;
  duplicatesDropped: number;
  chunks: number;
  /** Resources with no id, written with a `urn:uuid` fullUrl (and POST in a transaction or batch). */
  withoutId: number;
  /** Memory held by the dedupe set at the end, in bytes. */
  dedupeSetBytes: number;
}

export const DUPLICATE_REASON = 'duplicate (type, id)';

/**
 * `Type/id` for `request.url` (and the key within a chunk), or undefined for a
 * resource without an id (missing, null or empty, as Python's `r.get("id")`
 * sees it). The resourceType was checked by the reader.
 */
export function requestUrl(resource: Resource): string | undefined {
  const id: unknown = resource.id;
  if (id === undefined || id === null || id === '') return undefined;
  if (typeof id !== 'string') throw new RecordRejected('id is not a string');
  if (FHIR_ID.test(id)) return resource.resourceType + '/' + id;
  // Other ids are percent-encoded.
  try {
    // Keeps the URL a URL and the text free of JSON escapes; injective, so still a faithful key.
    return resource.resourceType + '/' + encodeURIComponent(id);
  } catch {
    throw new RecordRejected('id holds an unpaired surrogate');
  }
}

/** Namespace of the name-based UUIDs hx gives resources without an id. */
const UUID_NAMESPACE = Buffer.from('8c1f5e2a9b7d4c3e8a6f0d2b4c6e8a1f', 'hex');

/**
 * The `urn:uuid` fullUrl of a resource without an id: a UUIDv5 (SHA-1,
 * RFC 9562) of its compact JSON and its 1-based ordinal in the stream, so the
 * same input gives the same output on every run, and two equal resources
 * still get distinct fullUrls.
 */
export function entryUuid(compactJson: string, position: number): string {
  const h = createHash('sha1').update(UUID_NAMESPACE).update(`${position}\n`).update(compactJson).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.toString('hex', 0, 16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/**
 * The text of one Bundle and its entries in one layout (compact or pretty).
 * Every piece is precomputed once; `entry()` only concatenates.
 */
export class BundleFormat {
  readonly head: string;
  readonly separator: string;
  readonly tail: string;
  /** A Bundle with no entries: FHIR forbids an empty `entry` array, so it has none. */
  readonly empty: string;
  private readonly pretty: boolean;
  private readonly withRequest: boolean;
  /** `"fullUrl":"BASE/` with BASE JSON-escaped, or undefined. */
  private readonly basePrefix: string | undefined;
  private readonly open: string;
  private readonly resourceKey: string;
  private readonly putRequest: string;
  private readonly postRequest: string;
  private readonly requestEnd: string;
  private readonly close: string;
  private readonly fullUrlKey: string;
  private readonly fullUrlEnd: string;

  constructor(options: EntryOptions = {}) {
    const type = options.type ?? 'transaction';
    const pretty = (this.pretty = options.pretty ?? false);
    this.withRequest = type !== 'collection';
    const base = options.fullUrl === undefined ? undefined : JSON.stringify(options.fullUrl.replace(/\/+$/, '') + '/').slice(1, -1);
    if (pretty) {
      this.head = `{\n  "resourceType": "Bundle",\n  "type": "${type}",\n  "entry": [\n`;
      this.separator = ',\n';
      this.tail = '\n  ]\n}';
      this.empty = `{\n  "resourceType": "Bundle",\n  "type": "${type}"\n}`;
      this.open = '    {\n';
      this.fullUrlKey = '      "fullUrl": "';
      this.fullUrlEnd = '",\n';
      this.resourceKey = '      "resource": ';
      this.putRequest = ',\n      "request": {\n        "method": "PUT",\n        "url": "';
      this.postRequest = ',\n      "request": {\n        "method": "POST",\n        "url": "';
      this.requestEnd = '"\n      }';
      this.close = '\n    }';
    } else {
      this.head = `{"resourceType":"Bundle","type":"${type}","entry":[`;
      this.separator = ',';
      this.tail = ']}';
      this.empty = `{"resourceType":"Bundle","type":"${type}"}`;
      this.open = '{';
      this.fullUrlKey = '"fullUrl":"';
      this.fullUrlEnd = '",';
      this.resourceKey = '"resource":';
      this.putRequest = ',"request":{"method":"PUT","url":"';
      this.postRequest = ',"request":{"method":"POST","url":"';
      this.requestEnd = '"}';
      this.close = '}';
    }
    this.basePrefix = base === undefined ? undefined : this.fullUrlKey + base;
  }

  /**
   * The entry of `resource`, whose `requestUrl` is `url`; `position` (its
   * 1-based ordinal in the stream) names a resource without an id.
   */
  entry(resource: Resource, url: string | undefined, position: number): string {
    return this.entryText(resource, url, (compact) => entryUuid(compact, position));
  }

  /**
   * The entry with `uuid(compact JSON)` as the name of a resource without an
   * id. That name, when there is one, starts `uuidOffset` bytes into the entry.
   * `text`: the resource's compact JSON as it was read (`Batch.texts`), used
   * instead of serialising it again.
   */
  entryText(resource: Resource, url: string | undefined, uuid: (compact: string) => string, text?: string): string {
    const compact = text ?? JSON.stringify(resource);
    const json = this.pretty ? JSON.stringify(resource, null, 2).replaceAll('\n', '\n      ') : compact;
    return this.entryStart(url, url === undefined ? uuid(compact) : '') + json + this.entryEnd(resource, url);
  }

  /**
   * As `entryText` for a resource with an id, appended to `out` with `text`
   * (its compact JSON as read, here spliced) in place of a string; returns
   * the bytes it took.
   */
  appendEntry(out: ByteBuilder, resource: Resource, url: string, text: SplicedText): number {
    if (this.pretty) return out.append(this.entryText(resource, url, () => '', String(text)));
    return out.append(this.entryStart(url, '')) + appendText(out, text) + out.append(this.entryEnd(resource, url));
  }

  /** What precedes the resource in its entry; `uuid` names a resource without an id (`url` undefined). */
  private entryStart(url: string | undefined, uuid: string): string {
    if (url === undefined) return this.open + this.fullUrlKey + 'urn:uuid:' + uuid + this.fullUrlEnd + this.resourceKey;
    if (this.basePrefix === undefined) return this.open + this.resourceKey;
    return this.open + this.basePrefix + url + this.fullUrlEnd + this.resourceKey;
  }

  /** What follows the resource in its entry. */
  private entryEnd(resource: Resource, url: string | undefined): string {
    if (!this.withRequest) return this.close;
    return (url === undefined ? this.postRequest + resource.resourceType : this.putRequest + url) + this.requestEnd + this.close;
  }

  /** Bytes from the start of an entry without an id to its UUID (all ASCII before it). */
  get uuidOffset(): number {
    return (this.open + this.fullUrlKey + 'urn:uuid:').length;
  }
}

/**
 * The per-record core: the JSON text of `resource`'s Bundle entry.
 * `{"resource":…,"request":{"method":"PUT","url":"Type/id"}}`, with
 * `fullUrl` first when `options.fullUrl` is set; a resource without an id
 * gets `POST Type` and a `urn:uuid` fullUrl. Throws RecordRejected for an id
 * that is not a string.
 */
export function bundleEntry(resource: Resource, options: EntryOptions = {}, position = 1): string {
  return new BundleFormat(options).entry(resource, requestUrl(resource), position);
}

/**
 * The entries of a batch as UTF-8, ready for `BundleAssembler.addEncoded`:
 * made by an `EntryEncoder`, on this thread or in a worker thread (all of it
 * crosses the thread boundary as a structured clone, `bytes` transferred).
 */
export interface EncodedEntries {
  /** Each entry's text preceded by the separator, back to back. */
  bytes: Uint8Array;
  /** Where entry i ends in `bytes`; it starts where entry i − 1 ends (0 for the first). */
  ends: number[];
  types: string[];
  /**
   * The id of each entry, or null for a resource without one: its fullUrl
   * then holds a placeholder UUID that the assembler fills in, as that name
   * depends on the resource's position in the whole stream.
   */
  ids: (string | null)[];
  /** For each entry without an id, in order: its compact JSON and its index among the records given. */
  noId: { compact: string; index: number }[];
  /** Records given to the encoder, rejected ones included: each takes a position in the stream. */
  given: number;
}

const UUID_PLACEHOLDER = '00000000-0000-0000-0000-000000000000';

/**
 * The per-record half of the stage, with no cross-record state: each
 * resource's entry text, its size checked against `maxBytes` (an entry that
 * fits no Bundle is rejected here), encoded once into one buffer per batch.
 */
export class EntryEncoder {
  private readonly format: BundleFormat;
  private readonly out = new ByteBuilder();
  private readonly separator: string;
  private readonly frameBytes: number;
  private readonly maxBytes: number;
  private compact = '';
  private readonly placeholder = (compact: string) => {
    this.compact = compact;
    return UUID_PLACEHOLDER;
  };

  constructor(options: EntryOptions & Pick<BundleOptions, 'maxBytes'>) {
    this.format = new BundleFormat(options);
    this.separator = this.format.separator;
    this.frameBytes = Buffer.byteLength(this.format.head) + Buffer.byteLength(this.format.tail);
    this.maxBytes = options.maxBytes ?? Infinity;
  }

  encode(batch: Batch, ctx: StageContext): EncodedEntries {
    const { resources, lines, source, texts } = batch;
    const out = this.out;
    const encoded: EncodedEntries = { bytes: EMPTY, ends: [], types: [], ids: [], noId: [], given: resources.length };
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i]!;
      let url: string | undefined;
      try {
        url = requestUrl(resource);
      } catch (err) {
        if (!(err instanceof RecordRejected)) throw err;
        ctx.rejects.reject({ source, line: lines[i]! }, `${resource.resourceType}: ${err.reason}`, () => JSON.stringify(resource));
        continue;
      }
      const start = out.length;
      out.append(this.separator);
      // A resource without an id is named by a hash of its serialised form, never of its input text.
      const text = url === undefined ? undefined : texts?.[i];
      const bytes =
        typeof text === 'object'
          ? this.format.appendEntry(out, resource, url!, text)
          : out.append(this.format.entryText(resource, url, this.placeholder, text));
      if (this.frameBytes + bytes > this.maxBytes) {
        out.truncate(start);
        const size = `${url ?? resource.resourceType}: ${this.frameBytes + bytes} bytes in a Bundle of its own, budget ${this.maxBytes}`;
        ctx.rejects.reject({ source, line: lines[i]! }, `entry larger than --max-bytes (${size})`, () => JSON.stringify(resource));
        continue;
      }
      encoded.ends.push(out.length);
      encoded.types.push(resource.resourceType);
      encoded.ids.push(url === undefined ? null : resource.id!);
      if (url === undefined) encoded.noId.push({ compact: this.compact, index: i });
    }
    encoded.bytes = out.copy();
    return encoded;
  }
}

const EMPTY = new Uint8Array(0);

/** Receives the output; `endsBundle` marks the last piece of a Bundle (chunk). */
export type BundleEmit = (piece: string | Uint8Array, endsBundle: boolean) => void;

/**
 * The cross-record state of the stage: dedupe set, open Bundle, budgets,
 * positions. Every Bundle it emits is followed by a newline, so chunks form
 * NDJSON. Entries come encoded (`addEncoded`, from worker threads) or as
 * Batches (`add`, encoded here the same way).
 */
export class BundleAssembler {
  readonly stats: BundleStats;
  private readonly format: BundleFormat;
  private readonly encoder: EntryEncoder;
  private readonly keys: KeySet | undefined;
  private readonly chunked: boolean;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly headBytes: number;
  private readonly separatorBytes: number;
  private readonly tailBytes: number;
  private readonly uuidOffset: number;
  private position = 0;
  private open = false;
  private chunkEntries = 0;
  /**
   * Without dedupe, the exact keys of the open chunk: a second version of a
   * resource starts a new chunk, so that no Bundle names one resource twice
   * (a transaction that does fails as a whole).
   */
  private chunkKeys: Set<string> | undefined;
  /** Bytes of the open Bundle so far: head, entries, separators; not its tail. */
  private chunkBytes = 0;

  constructor(
    options: BundleOptions,
    private readonly ctx: StageContext,
    private readonly emit: BundleEmit,
  ) {
    this.format = new BundleFormat(options);
    this.encoder = new EntryEncoder(options);
    this.keys = options.dedupe === false ? undefined : new KeySet({ seed: options.dedupeSeed });
    this.chunked = options.maxEntries !== undefined || options.maxBytes !== undefined;
    if (this.chunked && !this.keys) this.chunkKeys = new Set();
    this.maxEntries = options.maxEntries ?? Infinity;
    this.maxBytes = options.maxBytes ?? Infinity;
    this.headBytes = Buffer.byteLength(this.format.head);
    this.separatorBytes = Buffer.byteLength(this.format.separator);
    this.tailBytes = Buffer.byteLength(this.format.tail);
    this.uuidOffset = this.format.uuidOffset;
    this.stats = ctx.account.stage('bundle', () => ({
      type: options.type ?? 'transaction',
      entries: 0,
      duplicatesDropped: 0,
      chunks: 0,
      withoutId: 0,
      dedupeSetBytes: 0,
    }));
  }

  add(batch: Batch): void {
    this.addEncoded(this.encoder.encode(batch, this.ctx));
  }

  /**
   * Places encoded entries: drops duplicates (after the size check, so an
   * entry rejected for its size never claims its key from a later one),
   * names the id-less, cuts Bundles, and emits runs of consecutive entries
   * as slices of `encoded.bytes`.
   */
  addEncoded(encoded: EncodedEntries): void {
    const { ends, types, ids, noId } = encoded;
    const bytes = Buffer.from(encoded.bytes.buffer, encoded.bytes.byteOffset, encoded.bytes.byteLength);
    const { account } = this.ctx;
    const separatorBytes = this.separatorBytes;
    let run = -1; // start of the bytes placed but not yet emitted
    let start = 0;
    let named = 0;
    const emitRun = (end: number) => {
      if (run >= 0 && end > run) this.emit(bytes.subarray(run, end), false);
      run = -1;
    };
    for (let i = 0; i < ends.length; start = ends[i++]!) {
      const type = types[i]!;
      const id = ids[i]!;
      if (id !== null && this.keys !== undefined && !this.keys.addPair(type, id)) {
        emitRun(start);
        account.countDropped(DUPLICATE_REASON);
        this.stats.duplicatesDropped++;
        continue;
      }
      if (id === null) {
        const { compact, index } = noId[named++]!;
        bytes.write(entryUuid(compact, this.position + index + 1), start + separatorBytes + this.uuidOffset, 'latin1');
        this.stats.withoutId++;
      }
      const entryBytes = ends[i]! - start - separatorBytes;
      const chunkKey = this.chunkKeys !== undefined && id !== null ? type + '/' + id : undefined;
      if (this.open && this.isFull(entryBytes, chunkKey)) {
        emitRun(start);
        this.closeBundle();
      }
      if (chunkKey !== undefined) this.chunkKeys!.add(chunkKey);
      if (this.open) {
        if (run < 0) run = start;
        this.chunkBytes += separatorBytes + entryBytes;
      } else {
        this.open = true;
        this.stats.chunks++;
        this.chunkEntries = 0;
        this.emit(this.format.head, false);
        run = start + separatorBytes;
        this.chunkBytes = this.headBytes + entryBytes;
      }
      this.chunkEntries++;
      this.stats.entries++;
      account.countWritten(type);
    }
    emitRun(start);
    this.position += encoded.given;
  }

  /** Closes the open Bundle; in single-Bundle mode, writes an empty one if nothing came. */
  finish(): void {
    if (this.open) this.closeBundle();
    else if (!this.chunked) {
      this.stats.chunks++;
      this.emit(this.format.empty + '\n', true);
    }
    this.stats.dedupeSetBytes = this.keys?.bytes ?? 0;
    if (this.stats.withoutId > 0) {
      const how = this.stats.type === 'collection' ? 'a urn:uuid fullUrl' : 'POST and a urn:uuid fullUrl';
      const n = this.stats.withoutId;
      this.ctx.account.warn(`${n} ${n === 1 ? 'resource' : 'resources'} without id: written with ${how}`);
    }
  }

  /** Whether an entry of `bytes` (keyed `chunkKey` without dedupe) must start the next Bundle. */
  private isFull(bytes: number, chunkKey: string | undefined): boolean {
    return (
      this.chunkEntries >= this.maxEntries ||
      this.chunkBytes + this.separatorBytes + bytes + this.tailBytes > this.maxBytes ||
      (chunkKey !== undefined && this.chunkKeys!.has(chunkKey))
    );
  }

  private closeBundle(): void {
    this.open = false;
    this.chunkKeys?.clear();
    this.emit(this.format.tail + '\n', true);
  }
}

/**
 * The stream stage: Batches → the text of one Bundle (default), or of one
 * Bundle per line when a budget is set. One Buffer per batch keeps writes few.
 */
export function toTransactionBundle(options: BundleOptions, ctx: StageContext): Transform {
  const out = new ByteBuilder();
  const assembler = new BundleAssembler(options, ctx, (piece) => out.append(piece));
  const take = (): Buffer | undefined => (out.length === 0 ? undefined : out.take());
  return new Transform({
    writableObjectMode: true,
    transform(batch: Batch, _encoding, callback) {
      try {
        assembler.add(batch);
        callback(null, take());
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback) {
      try {
        assembler.finish();
        callback(null, take());
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/** `bundle-000001.json`, … : sorts in order up to a million chunks. */
export function chunkFileName(index: number): string {
  return `bundle-${String(index).padStart(6, '0')}.json`;
}

const CHUNK_FILE = /^bundle-\d{6,}\.json$/;

/**
 * A sink writing each Bundle to its own numbered file in `dir`. Each file is
 * written under a hidden temporary name and renamed when its Bundle is
 * complete; if the run fails, every file it wrote is removed, so a failure
 * never leaves a set of chunks that looks complete. A folder that already
 * holds chunk files is refused: a shorter run would leave stale ones behind.
 */
export function bundleFiles(dir: string, options: BundleOptions, ctx: StageContext): Writable {
  return new BundleFiles(dir, options, ctx);
}

class BundleFiles extends Writable {
  private readonly assembler: BundleAssembler;
  /** Bytes of the Bundle being written not yet handed to its file. */
  private readonly pending = new ByteBuilder();
  /** Output of the batch being processed: pieces of bytes, `null` where a Bundle ends. */
  private pieces: (Buffer | null)[] = [];
  private file: WriteStream | undefined;
  private temp = '';
  private readonly written: string[] = [];

  constructor(
    private readonly dir: string,
    options: BundleOptions,
    ctx: StageContext,
  ) {
    super({ objectMode: true });
    mkdirSync(dir, { recursive: true });
    if (readdirSync(dir).some((name) => CHUNK_FILE.test(name))) {
      throw new HxError(`${dir} already holds bundle-*.json files (from an earlier run?): remove them or choose another folder`);
    }
    this.assembler = new BundleAssembler(options, ctx, (piece, endsBundle) => {
      this.pending.append(piece);
      if (endsBundle) this.takePending(true);
      else if (this.pending.length >= 1 << 20) this.takePending(false);
    });
  }

  override _write(batch: Batch, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.run(() => this.assembler.add(batch), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.run(() => this.assembler.finish(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (error) {
      this.file?.destroy();
      if (this.temp) rmSync(this.temp, { force: true });
      for (const path of this.written) rmSync(path, { force: true });
    }
    callback(error);
  }

  /** Runs the assembler on one batch (or the end), then writes what it produced. */
  private run(step: () => void, callback: (error?: Error | null) => void): void {
    try {
      step();
      this.takePending(false);
    } catch (err) {
      callback(err as Error);
      return;
    }
    this.writePieces().then(() => callback(), callback);
  }

  private takePending(endsBundle: boolean): void {
    if (this.pending.length > 0) this.pieces.push(this.pending.take());
    if (endsBundle) this.pieces.push(null);
  }

  private async writePieces(): Promise<void> {
    const pieces = this.pieces;
    this.pieces = [];
    for (const piece of pieces) {
      if (piece === null) {
        await this.closeFile();
        continue;
      }
      const file = (this.file ??= this.openFile());
      if (file.errored) throw file.errored;
      if (!file.write(piece)) await once(file, 'drain');
    }
  }

  private openFile(): WriteStream {
    this.temp = join(this.dir, `.${chunkFileName(this.written.length + 1)}.hx-partial-${process.pid}`);
    return createWriteStream(this.temp);
  }

  private async closeFile(): Promise<void> {
    const file = this.file!;
    file.end();
    await finished(file);
    const path = join(this.dir, chunkFileName(this.written.length + 1));
    renameSync(this.temp, path);
    this.written.push(path);
    this.file = undefined;
    this.temp = '';
  }
}
