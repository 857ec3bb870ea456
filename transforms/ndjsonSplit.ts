/**
 * ndjsonSplit: bytes → FHIR resources.
 *
 * The per-record core is `parseRecord` (one line of text → a resource or a
 * rejection reason) with `unpackBundle` beside it; the stream stage is
 * `ndjsonSplit()`, a Transform from the (already decompressed) bytes of one
 * input to `Batch`es of resources.
 *
 * NDJSON is framed on raw Buffers: each chunk is cut at its last newline and
 * decoded once, then split with `indexOf`. A FHIR Bundle document (pretty
 * or on one line, of any size) or a top-level JSON array is recognised by its
 * first bytes and streamed entry by entry by the DocumentScanner; whatever
 * follows that document is read as NDJSON again. A Bundle met as an NDJSON
 * line is unpacked too (unless `unpackBundles: false`), so
 * `hx bundle | hx cat` gives the resources back.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { RecordRejected } from '../src/errors.js';
import { DocumentScanner } from '../src/io/documentScanner.js';
import { RecordBatcher } from '../src/io/recordBatcher.js';
import type { StageContext } from '../src/stage.js';
import { BATCHES_IN_FLIGHT, formatLocation, type Batch, type Location, type Resource } from '../src/types.js';
import { RESOURCE_TYPE_NAME } from '../src/util/fhirSyntax.js';

export const DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024;

export interface SplitOptions extends StageContext {
  /** Name used in messages and rejects (`-` for stdin). */
  source: string;
  /** Longest line (or Bundle entry) accepted, in bytes. */
  maxLineBytes?: number;
  /** Emit the resources of Bundles rather than the Bundles (default true). */
  unpackBundles?: boolean;
  /** Told the members of each Bundle other than its entries (`type`, `total`, `link`). */
  onBundle?: (bundle: Resource, loc: Location) => void;
  /**
   * For cheap pre-scans: a line or streamed Bundle entry whose raw text fails
   * this test is skipped unparsed and uncounted (pretag's first pass).
   */
  prefilter?: (text: string) => boolean;
  /**
   * For cheap pre-scans of NDJSON: a line holding none of these strings
   * (ASCII) is skipped undecoded, found by a byte search, so a scan for a
   * rare code runs at memory speed. Lines still count for numbering; blank
   * and skipped lines are not counted as read. Bundle documents are not
   * affected: give `prefilter` too.
   */
  needles?: readonly string[];
  /**
   * Hand out complete NDJSON lines unparsed, as `RawLines`, for worker
   * threads to parse (`src/io/workers.ts`, which parses them with
   * `splitLines`). Bundle documents are still parsed here, into Batches.
   */
  rawLines?: boolean;
  /**
   * Keep each NDJSON line a resource was parsed from (`Batch.texts`), for a
   * serializer to write as it came; in a Bundle document, the bytes of each
   * entry's resource when the scanner knows them (on one line, see
   * `JsonWalker`). The resources of a Bundle on an NDJSON line have none.
   */
  keepTexts?: boolean;
}

/** Complete NDJSON lines of one input, unparsed: `text` ends with a newline, its first line is `firstLine`. */
export interface RawLines {
  source: string;
  firstLine: number;
  text: string;
}

/**
 * The records of `raw`, exactly as `ndjsonSplit` would read those lines
 * (blank lines, CRLF, line cap, Bundles on a line), counting on `options`.
 */
export function splitLines(raw: RawLines, options: Omit<SplitOptions, 'source' | 'rawLines'>): Batch {
  return new NdjsonSplit({ ...options, source: raw.source }).linesOf(raw.text, raw.firstLine);
}

/** Whether a line's UTF-8 exceeds `maxBytes` (measured only when its length says it might: a character takes at most 3 bytes). */
export function isOverlong(line: string, maxBytes: number): boolean {
  return line.length > maxBytes / 3 && Buffer.byteLength(line) > maxBytes;
}

/** `splitLines` for many calls on one input: complete lines of `source`, the first numbered `firstLine`. */
export function lineReader(options: Omit<SplitOptions, 'rawLines'>): (text: string, firstLine: number) => Batch {
  const split = new NdjsonSplit(options);
  return (text, firstLine) => split.linesOf(text, firstLine);
}

/** The core: one JSON text → a resource, or the reason it is not one. */
export function parseRecord(text: string): Resource | RecordRejected {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return new RecordRejected(jsonErrorReason(err as Error, text));
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return new RecordRejected(`not a JSON object (${Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value})`);
  }
  const type = (value as { resourceType?: unknown }).resourceType;
  if (type === undefined) return new RecordRejected('missing resourceType');
  if (typeof type !== 'string' || !RESOURCE_TYPE_NAME.test(type)) return new RecordRejected('resourceType is not a FHIR type name');
  return value as Resource;
}

/**
 * V8's JSON.parse messages quote the input (it may be PHI): keep only the
 * position, as a 1-based column.
 */
function jsonErrorReason(err: Error, text: string): string {
  const at = /at position (\d+)/.exec(err.message);
  if (at) return `invalid JSON (column ${Number(at[1]) + 1})`;
  if (/end of JSON input/.test(err.message)) return `invalid JSON (ends at column ${text.length + 1})`;
  return 'invalid JSON';
}

export interface EntrySink {
  resource(resource: Resource): void;
  reject(reason: string, text: () => string): void;
  /** A `search.mode: outcome` entry: a server's message, not data. */
  outcome(message: string): void;
  /** An entry with no resource (a DELETE request, say). */
  empty(): void;
}

/** The resources of one Bundle entry, as told to `sink`. */
export function unpackEntry(entry: unknown, index: number, sink: EntrySink): void {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    sink.reject(`entry ${index}: not a JSON object`, () => JSON.stringify(entry));
    return;
  }
  const { resource, search } = entry as { resource?: unknown; search?: { mode?: unknown } };
  if (search?.mode === 'outcome') {
    sink.outcome(`entry ${index}: search outcome: ${outcomeText(resource)}`);
    return;
  }
  if (resource === undefined) {
    sink.empty();
    return;
  }
  const parsed = checkRecord(resource);
  if (parsed instanceof RecordRejected) sink.reject(`entry ${index}: ${parsed.reason}`, () => JSON.stringify(entry));
  else sink.resource(parsed);
}

function checkRecord(value: unknown): Resource | RecordRejected {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return new RecordRejected('resource is not a JSON object');
  const type = (value as { resourceType?: unknown }).resourceType;
  if (type === undefined) return new RecordRejected('missing resourceType');
  if (typeof type !== 'string' || !RESOURCE_TYPE_NAME.test(type)) return new RecordRejected('resourceType is not a FHIR type name');
  return value as Resource;
}

/** The human text of an OperationOutcome: its issues' diagnostics or details. */
export function outcomeText(resource: unknown): string {
  const issues = (resource as { issue?: unknown })?.issue;
  if (!Array.isArray(issues) || issues.length === 0) return '(no issue text)';
  return issues
    .map((issue: { severity?: string; diagnostics?: string; details?: { text?: string } }) =>
      [issue?.severity, issue?.diagnostics ?? issue?.details?.text].filter(Boolean).join(': '),
    )
    .join('; ');
}

type Mode = 'sniff' | 'lines' | 'document';
const SNIFF_BYTES = 1024;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export function ndjsonSplit(options: SplitOptions): Transform {
  return new NdjsonSplit(options);
}

class NdjsonSplit extends Transform {
  private readonly maxBytes: number;
  private readonly unpack: boolean;
  private mode: Mode = 'sniff';
  private sniffParts: Buffer[] = [];
  private sniffBytes = 0;
  /** Bytes of the line being assembled, carried from earlier chunks. */
  private carry: Buffer[] = [];
  private carryBytes = 0;
  /** True while discarding the rest of a line that exceeds the cap. */
  private overlong = false;
  /** Number of the last line completed. */
  private lineNo = 0;
  /** The first line fragment after a document is the rest of its last line. */
  private afterDocument = false;
  private scanner: DocumentScanner | undefined;
  /** Index of the next streamed entry of the current document. */
  private entryIndex = 0;
  private readonly records: RecordBatcher;
  private readonly needles: NeedleSearch | undefined;

  constructor(private readonly options: SplitOptions) {
    super({ readableObjectMode: true, readableHighWaterMark: BATCHES_IN_FLIGHT });
    this.maxBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.unpack = options.unpackBundles ?? true;
    this.records = new RecordBatcher(options, options.source, options.keepTexts);
    if (options.needles && !options.rawLines) this.needles = new NeedleSearch(options.needles);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.consume(chunk, false);
      this.records.flush((batch) => this.push(batch));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.consume(Buffer.alloc(0), true);
      this.records.flush((batch) => this.push(batch));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private consume(chunk: Buffer, ended: boolean): void {
    if (this.mode === 'sniff') {
      this.sniffParts.push(chunk);
      this.sniffBytes += chunk.length;
      if (this.sniffBytes < SNIFF_BYTES && !ended) return;
      let head = Buffer.concat(this.sniffParts);
      this.sniffParts = [];
      if (head.subarray(0, 3).equals(BOM)) head = head.subarray(3);
      this.mode = looksLikeDocument(head) ? 'document' : 'lines';
      chunk = head;
    }
    let from = 0;
    if (this.mode === 'document') {
      this.scanner ??= this.newScanner();
      const end = this.scanner.push(chunk, 0);
      if (end < 0) {
        if (ended) this.endDocument(true);
        return;
      }
      this.endDocument(false);
      from = end;
    }
    this.consumeLines(chunk, from, ended);
  }

  private newScanner(): DocumentScanner {
    return new DocumentScanner(
      {
        onElement: (text, line, resource) => this.element(text, line, resource),
        onBadElement: (reason, line) => this.records.reject(line, reason, () => undefined),
      },
      this.maxBytes,
      this.lineNo + 1,
      this.options.keepTexts,
    );
  }

  /** A document ended (or the input ended inside it): emit what its members hold. */
  private endDocument(truncated: boolean): void {
    const scanner = this.scanner!;
    const line = scanner.line;
    this.scanner = undefined;
    this.entryIndex = 0;
    this.mode = 'lines';
    this.lineNo = line - 1;
    this.afterDocument = true;
    if (truncated) {
      if (scanner.started) this.records.reject(line, 'JSON document ends before its closing bracket (truncated input?)', () => undefined);
      return;
    }
    let meta: string | undefined;
    try {
      meta = scanner.meta();
    } catch (err) {
      this.records.reject(line, (err as Error).message, () => undefined);
      return;
    }
    if (meta === undefined) return; // a top-level array: all was in its elements
    const parsed = parseRecord(meta);
    if (parsed instanceof RecordRejected) {
      this.records.reject(line, `document: ${parsed.reason}`, () => meta);
      return;
    }
    if (parsed.resourceType === 'Bundle') {
      const { entry, ...rest } = parsed;
      // Entries were streamed unless the document held them before saying it was a Bundle.
      if (Array.isArray(entry) && entry.length > 0) this.unpackBundle(parsed, line);
      else this.options.onBundle?.(rest as Resource, { source: this.options.source, line });
      return;
    }
    this.records.add(parsed, line);
  }

  private consumeLines(chunk: Buffer, from: number, ended: boolean): void {
    const last = chunk.lastIndexOf(0x0a);
    if (last < from) {
      this.appendCarry(chunk.subarray(from));
    } else if (this.needles) {
      let start = from;
      if (this.carryBytes > 0 || this.overlong || this.afterDocument) {
        // The line under way (or the rest of a document's last line) the usual way.
        start = chunk.indexOf(0x0a, from) + 1;
        this.appendCarry(chunk.subarray(from, start));
        this.lines(this.takeCarry());
      }
      this.linesWithNeedles(chunk, start, last + 1);
      this.appendCarry(chunk.subarray(last + 1));
    } else {
      let carried = '';
      if (this.carryBytes > 0 || this.overlong) {
        // Only the line under way is joined to the carry (joining the whole chunk copied every byte once more).
        const start = chunk.indexOf(0x0a, from) + 1;
        this.appendCarry(chunk.subarray(from, start));
        carried = this.takeCarry();
        from = start;
      }
      const rest = chunk.toString('utf8', from, last + 1);
      if (this.options.rawLines) {
        this.linesOrRaw(carried + rest);
      } else {
        this.lines(carried);
        this.lines(rest);
      }
      this.appendCarry(chunk.subarray(last + 1));
    }
    if (!ended) return;
    if (this.overlong) {
      this.overlong = false;
      this.lineNo++;
      this.records.reject(this.lineNo, `line longer than ${this.maxBytes} bytes`, () => undefined);
    } else if (this.carryBytes > 0) {
      this.linesOrRaw(this.takeCarry() + '\n');
    }
  }

  /** The complete lines in `chunk[start, end)`: only those holding a needle are decoded and read. */
  private linesWithNeedles(chunk: Buffer, start: number, end: number): void {
    const needles = this.needles!;
    needles.reset();
    let pos = start;
    while (pos < end) {
      const hit = needles.next(chunk, pos, end);
      if (hit < 0) break;
      const lineStart = chunk.lastIndexOf(0x0a, hit) + 1;
      this.lineNo += countNewlines(chunk, pos, lineStart);
      const lineEnd = chunk.indexOf(0x0a, hit) + 1;
      this.lines(chunk.toString('utf8', lineStart, lineEnd));
      pos = lineEnd;
    }
    this.lineNo += countNewlines(chunk, pos, end);
  }

  /** Complete lines: parsed here, or handed out whole in raw mode (but the line after a document, judged here). */
  private linesOrRaw(text: string): void {
    if (!this.options.rawLines || this.afterDocument) {
      this.lines(text);
      return;
    }
    this.records.flush((batch) => this.push(batch)); // records parsed before these lines go first
    const firstLine = this.lineNo + 1;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', nl + 1)) this.lineNo++;
    this.push({ source: this.options.source, firstLine, text } satisfies RawLines);
  }

  /** `text` (complete lines, the first numbered `firstLine`) read as lines: for `splitLines`. */
  linesOf(text: string, firstLine: number): Batch {
    this.mode = 'lines';
    this.lineNo = firstLine - 1;
    this.lines(text);
    return this.records.take();
  }

  private appendCarry(part: Buffer): void {
    if (part.length === 0) return;
    if (this.overlong) {
      // Discard until the end of the line; keep the newline and what follows.
      const nl = part.indexOf(0x0a);
      if (nl < 0) return;
      this.overlong = false;
      this.lineNo++;
      this.records.reject(this.lineNo, `line longer than ${this.maxBytes} bytes`, () => undefined);
      this.afterDocument = false;
      part = part.subarray(nl + 1);
      if (part.length === 0) return;
    }
    this.carry.push(part);
    this.carryBytes += part.length;
    if (this.carryBytes > this.maxBytes && part.lastIndexOf(0x0a) < 0) {
      this.carry = [];
      this.carryBytes = 0;
      this.overlong = true;
    }
  }

  private takeCarry(): string {
    const text = this.carry.length === 1 ? this.carry[0]!.toString('utf8') : Buffer.concat(this.carry).toString('utf8');
    this.carry = [];
    this.carryBytes = 0;
    return text;
  }

  /** Handles complete lines: `text` ends with a newline. */
  private lines(text: string): void {
    let pos = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', pos)) {
      let end = nl;
      if (end > pos && text.charCodeAt(end - 1) === 0x0d) end--;
      this.lineNo++;
      this.line(text, pos, end);
      pos = nl + 1;
    }
  }

  private line(text: string, start: number, end: number): void {
    const first = text.charCodeAt(start);
    if (first !== 0x7b /* { */) {
      const trimmed = text.slice(start, end).trim();
      if (trimmed === '') {
        if (this.afterDocument) this.afterDocument = false;
        else this.options.account.skippedBlank++;
        return;
      }
      if (this.afterDocument) {
        this.afterDocument = false;
        this.records.reject(this.lineNo, 'unexpected text after the JSON document', () => trimmed);
        return;
      }
    }
    this.afterDocument = false;
    const line = text.slice(start, end);
    if (isOverlong(line, this.maxBytes)) {
      this.records.reject(this.lineNo, `line longer than ${this.maxBytes} bytes`, () => undefined);
      return;
    }
    if (this.options.prefilter && !this.options.prefilter(line)) return;
    const parsed = parseRecord(line);
    if (parsed instanceof RecordRejected) this.records.reject(this.lineNo, parsed.reason, () => line);
    else if (parsed.resourceType === 'Bundle' && this.unpack) this.unpackBundle(parsed, this.lineNo);
    // The line as it came, when nothing but the object is on it.
    else this.records.add(parsed, this.lineNo, line.charCodeAt(line.length - 1) === 0x7d && first === 0x7b ? line : undefined);
  }

  /** A streamed element: a Bundle entry (with its resource's bytes when kept), or a resource of a top-level array. */
  private element(text: string, line: number, resource: Buffer | undefined): void {
    if (this.options.prefilter && !this.options.prefilter(text)) {
      if (!this.scanner?.isArray) this.entryIndex++;
      return;
    }
    if (this.scanner?.isArray) {
      const parsed = parseRecord(text);
      if (parsed instanceof RecordRejected) this.records.reject(line, parsed.reason, () => text);
      else if (parsed.resourceType === 'Bundle' && this.unpack) this.unpackBundle(parsed, line);
      else this.records.add(parsed, line);
      return;
    }
    let entry: unknown;
    try {
      entry = JSON.parse(text);
    } catch (err) {
      this.records.reject(line, `entry: ${jsonErrorReason(err as Error, text)}`, () => text);
      return;
    }
    this.entry(entry, this.entryIndex++, line, resource?.toString('utf8'));
  }

  private unpackBundle(bundle: Resource, line: number): void {
    const { entry, ...rest } = bundle;
    this.options.onBundle?.(rest as Resource, { source: this.options.source, line });
    if (entry === undefined) return;
    if (!Array.isArray(entry)) {
      this.records.reject(line, 'Bundle.entry is not an array', () => JSON.stringify(bundle));
      return;
    }
    for (let i = 0; i < entry.length; i++) this.entry(entry[i], i, line);
  }

  private entry(entry: unknown, index: number, line: number, text?: string): void {
    unpackEntry(entry, index, {
      resource: (resource) => this.records.add(resource, line, text),
      reject: (reason, text) => this.records.reject(line, reason, text),
      outcome: (message) => this.options.account.warn(`${formatLocation({ source: this.options.source, line })}: ${message}`),
      empty: () => this.options.account.entriesWithoutResource++,
    });
  }
}

/** The next occurrence of any of a few byte strings, each searched once per chunk. */
class NeedleSearch {
  private readonly needles: Buffer[];
  /** Per needle: the position of its next occurrence at or after `from`, -1 for none before the end. */
  private readonly found: number[];
  private readonly from: number[];

  constructor(needles: readonly string[]) {
    this.needles = needles.map((needle) => Buffer.from(needle, 'latin1'));
    this.found = needles.map(() => -1);
    this.from = needles.map(() => -1);
  }

  /** A new chunk: forget the old positions. */
  reset(): void {
    this.from.fill(-1);
  }

  /** The first occurrence of any needle starting in `chunk[pos, end)`, or -1. */
  next(chunk: Buffer, pos: number, end: number): number {
    let first = -1;
    for (let i = 0; i < this.needles.length; i++) {
      if (this.from[i] === -1 || (this.found[i] !== -1 && this.found[i]! < pos)) {
        const at = chunk.indexOf(this.needles[i]!, pos);
        this.found[i] = at >= 0 && at < end ? at : -1;
        this.from[i] = pos;
      }
      const at = this.found[i]!;
      if (at !== -1 && (first === -1 || at < first)) first = at;
    }
    return first;
  }
}

function countNewlines(chunk: Buffer, from: number, to: number): number {
  let n = 0;
  for (let nl = chunk.indexOf(0x0a, from); nl >= 0 && nl < to; nl = chunk.indexOf(0x0a, nl + 1)) n++;
  return n;
}

/**
 * A Bundle document or a top-level array, rather than NDJSON: the input
 * opens with `[`, with `{` alone on its line (pretty-printed JSON), or with
 * `{"resourceType":"Bundle"`. A one-line Bundle is a document too, so a
 * multi-GB Bundle on one line never has to fit in a line buffer.
 */
export function looksLikeDocument(head: Buffer): boolean {
  const text = head.toString('latin1', 0, Math.min(head.length, SNIFF_BYTES));
  return /^\s*(?:\[|\{[ \t]*\r?\n|\{\s*"resourceType"\s*:\s*"Bundle")/.test(text);
}
