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
 * at 10.7 to 21.3 bytes per resource with an id (see keySet.ts for the bound
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
import type { Batch, Resource } from '../src/types.js';
import { Utf8Builder } from '../src/io/serialize.js';
import { KeySet } from '../src/util/keySet.js';

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

/** FHIR's id syntax; other ids are percent-encoded in `request.url`. */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

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
  private readonly baseIsNonAscii: boolean;

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
    this.baseIsNonAscii = base !== undefined && Buffer.byteLength(base) !== base.length;
  }

  /**
   * The entry of `resource`, whose `requestUrl` is `url`; `position` (its
   * 1-based ordinal in the stream) names a resource without an id.
   */
  entry(resource: Resource, url: string | undefined, position: number): string {
    const compact = JSON.stringify(resource);
    const json = this.pretty ? JSON.stringify(resource, null, 2).replaceAll('\n', '\n      ') : compact;
    this.json = json;
    this.nonAscii = false;
    let text = this.open;
    if (url === undefined) text += this.fullUrlKey + 'urn:uuid:' + entryUuid(compact, position) + this.fullUrlEnd;
    else if (this.basePrefix !== undefined) {
      text += this.basePrefix + url + this.fullUrlEnd;
      this.nonAscii = this.baseIsNonAscii;
    }
    text += this.resourceKey + json;
    if (this.withRequest) {
      text += url === undefined ? this.postRequest + resource.resourceType : this.putRequest + url;
      text += this.requestEnd;
    }
    return text + this.close;
  }

  /**
   * UTF-8 bytes of `text`, the entry just made. Only the resource's JSON (a
   * flat string) is measured: every other piece is ASCII but the base URL,
   * so the concatenated entry is never scanned (or flattened) twice.
   */
  entryBytes(text: string): number {
    if (this.nonAscii) return Buffer.byteLength(text);
    return Buffer.byteLength(this.json) + text.length - this.json.length;
  }

  private json = '';
  private nonAscii = false;
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

/** Receives the output text; `endsBundle` marks the last piece of a Bundle (chunk). */
export type BundleEmit = (text: string, endsBundle: boolean) => void;

/**
 * The cross-record state of the stage: dedupe set, open Bundle, budgets.
 * Every Bundle it emits is followed by a newline, so chunks form NDJSON.
 */
export class BundleAssembler {
  readonly stats: BundleStats;
  private readonly format: BundleFormat;
  private readonly keys: KeySet | undefined;
  private readonly chunked: boolean;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private readonly headBytes: number;
  private readonly separatorBytes: number;
  private readonly tailBytes: number;
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
    this.keys = options.dedupe === false ? undefined : new KeySet({ seed: options.dedupeSeed });
    this.chunked = options.maxEntries !== undefined || options.maxBytes !== undefined;
    if (this.chunked && !this.keys) this.chunkKeys = new Set();
    this.maxEntries = options.maxEntries ?? Infinity;
    this.maxBytes = options.maxBytes ?? Infinity;
    this.headBytes = Buffer.byteLength(this.format.head);
    this.separatorBytes = Buffer.byteLength(this.format.separator);
    this.tailBytes = Buffer.byteLength(this.format.tail);
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
    const { resources, lines, source } = batch;
    const { account, rejects } = this.ctx;
    const measure = this.maxBytes !== Infinity;
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i]!;
      const position = ++this.position;
      let url: string | undefined;
      try {
        url = requestUrl(resource);
      } catch (err) {
        if (!(err instanceof RecordRejected)) throw err;
        rejects.reject({ source, line: lines[i]! }, `${resource.resourceType}: ${err.reason}`, () => JSON.stringify(resource));
        continue;
      }
      // Text before dedupe: a duplicate costs a wasted stringify, but an entry
      // rejected for its size never claims its key from a later one.
      const text = this.format.entry(resource, url, position);
      const bytes = measure ? this.format.entryBytes(text) : 0;
      if (this.headBytes + bytes + this.tailBytes > this.maxBytes) {
        const name = url ?? resource.resourceType;
        const size = `${name}: ${this.headBytes + bytes + this.tailBytes} bytes in a Bundle of its own, budget ${this.maxBytes}`;
        rejects.reject({ source, line: lines[i]! }, `entry larger than --max-bytes (${size})`, () => JSON.stringify(resource));
        continue;
      }
      if (url !== undefined && this.keys !== undefined && !this.keys.addPair(resource.resourceType, resource.id!)) {
        account.countDropped(DUPLICATE_REASON);
        this.stats.duplicatesDropped++;
        continue;
      }
      if (url === undefined) this.stats.withoutId++;
      this.place(text, bytes, url);
      account.countWritten(resource.resourceType);
    }
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

  private place(text: string, bytes: number, url: string | undefined): void {
    if (this.open) {
      const full =
        this.chunkEntries >= this.maxEntries ||
        this.chunkBytes + this.separatorBytes + bytes + this.tailBytes > this.maxBytes ||
        (url !== undefined && this.chunkKeys?.has(url) === true);
      if (full) this.closeBundle();
    }
    if (url !== undefined) this.chunkKeys?.add(url);
    if (this.open) {
      this.emit(this.format.separator + text, false);
      this.chunkBytes += this.separatorBytes + bytes;
    } else {
      this.open = true;
      this.stats.chunks++;
      this.chunkEntries = 0;
      this.emit(this.format.head + text, false);
      this.chunkBytes = this.headBytes + bytes;
    }
    this.chunkEntries++;
    this.stats.entries++;
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
  const text = new Utf8Builder();
  const assembler = new BundleAssembler(options, ctx, (piece) => text.add(piece));
  const take = (): Buffer | undefined => (text.empty ? undefined : text.take());
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
  /** Text of the Bundle being written not yet handed to its file. */
  private pending = '';
  /** Output of the batch being processed: text pieces, `null` where a Bundle ends. */
  private pieces: (string | null)[] = [];
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
    this.assembler = new BundleAssembler(options, ctx, (text, endsBundle) => {
      this.pending += text;
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
    if (this.pending !== '') this.pieces.push(this.pending);
    this.pending = '';
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
