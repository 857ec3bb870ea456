/**
 * The byte walk shared by the streaming JSON scanners (`DocumentScanner` for
 * Bundles and arrays, `FastenExportScanner` for Fasten exports): one pass over
 * one JSON value too large to parse whole, tracking only strings, nesting depth
 * and lines, that cuts out each element of one array (the *streamed* array, a
 * subclass picks which) as text for `JSON.parse`.
 *
 * Speed: strings, which hold most of the bytes of FHIR JSON, are skipped with
 * `Buffer.indexOf`; outside strings it is one switch per byte. Inside an
 * element being cut out (nearly all the bytes) only depth and lines move and
 * no hook runs; the hooks run only on the structure around the elements.
 *
 * Memory: one element, capped at `maxBytes` (a larger one is reported, not
 * kept), and the string a subclass asked for (a key), as slices of the chunks.
 *
 * With a `spanKey`, the walker also finds where the value of that member of
 * each element lies in the element's bytes (the `resource` of a Bundle entry),
 * so that a caller can pass those bytes on unchanged instead of serialising the
 * parsed value again. It costs one comparison per brace and per string at the
 * element's own level, and it only ever errs towards "no span".
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;

export abstract class JsonWalker {
  /** Line the walker is on (1-based, counted in the bytes it has seen). */
  line: number;
  /** Whether the top-level value has been closed. */
  done = false;
  /** Nesting depth: 1 inside the top-level value. */
  protected depth = 0;
  /**
   * Depth of the array whose elements are cut out, or -1 when not inside it.
   * A subclass sets it in `opened`; the walker clears it when that array closes.
   */
  protected streamDepth = -1;
  private inString = false;
  /** Backslashes ending the previous chunk, inside a string. */
  private pendingBackslashes = 0;
  private inElement = false;
  private readonly element: CappedText;
  /** Where the element starts in the current chunk. */
  private elementStart = -1;
  private elementLine = 0;
  /** A non-object member of the streamed array was reported; reset at the next comma. */
  private notObjectReported = false;
  /** A string asked for by `stringStarts` is being read, maybe across chunks. */
  private capturingString = false;
  private stringParts: Buffer[] = [];
  /** The `spanKey` member: see `MemberSpan`. */
  private readonly span: MemberSpan | undefined;

  constructor(
    protected readonly maxBytes: number,
    startLine: number,
    /** Whether an array member of the streamed array is cut out too (else reported as not an object). */
    private readonly streamsArrays: boolean,
    /** Find the object value of this member in each element (see the class comment). */
    spanKey?: string,
  ) {
    this.line = startLine;
    this.element = new CappedText(maxBytes);
    this.span = spanKey === undefined ? undefined : new MemberSpan(spanKey);
  }

  /**
   * Walks `buf` from `from`. Returns the index just past the end of the
   * top-level value when it ends in this chunk, else -1.
   */
  push(buf: Buffer, from = 0): number {
    const n = buf.length;
    if (this.inElement) this.elementStart = from;
    const span = this.span;
    span?.chunkStarted(from);
    let stringStart = this.capturingString ? from : -1;
    let i = from;
    while (i < n) {
      if (this.inString) {
        const q = buf.indexOf(QUOTE, i);
        if (q === -1) {
          this.pendingBackslashes = trailingBackslashes(buf, i, n, i === from ? this.pendingBackslashes : 0);
          break;
        }
        // The quote ends the string unless an odd run of backslashes escapes it.
        let k = q - 1;
        while (k >= i && buf[k] === BACKSLASH) k--;
        let run = q - 1 - k;
        if (k < i && i === from) run += this.pendingBackslashes;
        this.pendingBackslashes = 0;
        i = q + 1;
        if (run % 2 === 1) continue;
        this.inString = false;
        if (span?.stringOpen) span.stringClosed(buf, q);
        if (stringStart >= 0) {
          this.stringParts.push(buf.subarray(stringStart, q));
          const raw = Buffer.concat(this.stringParts);
          this.stringParts = [];
          this.capturingString = false;
          stringStart = -1;
          this.stringCaptured(raw);
        }
        continue;
      }
      const c = buf[i]!;
      switch (c) {
        case QUOTE:
          this.inString = true;
          if (!this.inElement) {
            if (this.depth === this.streamDepth) this.reportNotObject();
            else if (this.stringStarts()) {
              this.capturingString = true;
              stringStart = i + 1;
            }
          } else if (span && this.depth === this.streamDepth + 1) span.stringOpened(i + 1);
          break;
        case 0x7b: // {
        case 0x5b: // [
          this.depth++;
          if (!this.inElement) this.open(buf, i, c === 0x7b);
          else if (span && this.depth === this.streamDepth + 2) span.valueOpened(c === 0x7b, this.offset(i), this.line);
          break;
        case 0x7d: // }
        case 0x5d: // ]
          this.depth--;
          if (this.inElement) {
            if (this.depth === this.streamDepth) this.endElement(buf, i);
            else if (span?.valueOpen && this.depth === this.streamDepth + 1) span.valueClosed(this.offset(i) + 1, this.line);
          } else if (this.close(buf, i)) return i + 1;
          break;
        case 0x2c: // ,
          if (!this.inElement) {
            if (this.depth === this.streamDepth) this.notObjectReported = false;
            else this.comma();
          }
          break;
        case NEWLINE:
          this.line++;
          break;
        case 0x20:
        case 0x09:
        case 0x0d:
        case 0x3a: // :
          break;
        default:
          if (!this.inElement && this.depth === this.streamDepth) this.reportNotObject();
      }
      i++;
    }
    // The chunk ends inside the value: keep what is being captured.
    if (stringStart >= 0) this.stringParts.push(buf.subarray(stringStart, n));
    if (span?.stringOpen) span.chunkEnded(buf, n);
    if (this.inElement && this.elementStart >= 0) this.element.append(buf.subarray(this.elementStart, n));
    return -1;
  }

  // Hooks, called only outside the elements being cut out.

  /** A container opened at `buf[i]` (`depth` counts it); not an element of the streamed array. */
  protected opened(_buf: Buffer, _i: number, _isObject: boolean): void {}
  /** A container closed at `buf[i]` (`depth` no longer counts it). */
  protected closed(_buf: Buffer, _i: number): void {}
  /** The streamed array closed at `buf[i]` (called before `closed`). */
  protected streamEnded(_i: number): void {}
  /** A comma outside the streamed array. */
  protected comma(): void {}
  /** A string starts outside the streamed array: return true to get its raw bytes in `stringCaptured`. */
  protected stringStarts(): boolean {
    return false;
  }
  /** The raw bytes (escapes kept) of a string asked for by `stringStarts`. */
  protected stringCaptured(_raw: Buffer): void {}
  /**
   * One element of the streamed array as JSON text, with the line it starts
   * on and, with a `spanKey`, the bytes of that member's object value when
   * they are known exactly (see `MemberSpan`).
   */
  protected abstract elementFound(text: string, line: number, member?: Buffer): void;
  /** An element larger than `maxBytes`, with the line it starts on. */
  protected abstract elementTooLarge(line: number): void;
  /** A member of the streamed array that is not an object (reported once until the next comma). */
  protected abstract notObject(line: number): void;

  private open(buf: Buffer, i: number, isObject: boolean): void {
    if (this.streamDepth >= 0 && this.depth === this.streamDepth + 1) {
      if (isObject || this.streamsArrays) {
        this.inElement = true;
        this.element.reset();
        this.elementStart = i;
        this.elementLine = this.line;
        this.span?.reset();
      } else this.reportNotObject();
      return;
    }
    this.opened(buf, i, isObject);
  }

  /** Returns true when this closes the top-level value. */
  private close(buf: Buffer, i: number): boolean {
    if (this.streamDepth >= 0 && this.depth === this.streamDepth - 1) {
      this.streamDepth = -1;
      this.notObjectReported = false;
      this.streamEnded(i);
    }
    this.closed(buf, i);
    if (this.depth === 0) {
      this.done = true;
      return true;
    }
    return false;
  }

  private endElement(buf: Buffer, i: number): void {
    const element = this.element;
    element.append(buf.subarray(this.elementStart, i + 1));
    this.inElement = false;
    this.elementStart = -1;
    if (element.tooLarge) {
      element.reset();
      this.elementTooLarge(this.elementLine);
    } else {
      const bytes = element.bytes();
      element.reset(); // let go of the chunks
      const member = this.span?.slice(bytes);
      this.elementFound(bytes.toString('utf8'), this.elementLine, member);
    }
  }

  /** Where `buf[i]` lies in the element being cut out. */
  private offset(i: number): number {
    return this.element.length + (i - this.elementStart);
  }

  private reportNotObject(): void {
    if (this.notObjectReported) return;
    this.notObjectReported = true;
    this.notObject(this.line);
  }
}

/** Text gathered as slices of chunks; past `maxBytes` it is dropped and marked too large. */
export class CappedText {
  tooLarge = false;
  private parts: Buffer[] = [];
  private size = 0;

  constructor(private readonly maxBytes: number) {}

  append(part: Buffer): void {
    if (this.tooLarge || part.length === 0) return;
    this.size += part.length;
    if (this.size > this.maxBytes) {
      this.tooLarge = true;
      this.parts = [];
      return;
    }
    this.parts.push(part);
  }

  /** Bytes gathered so far. */
  get length(): number {
    return this.size;
  }

  text(): string {
    return this.bytes().toString('utf8');
  }

  /** The gathered bytes (a slice of the chunk when they came in one). */
  bytes(): Buffer {
    const parts = this.parts;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  reset(): void {
    this.parts = [];
    this.size = 0;
    this.tooLarge = false;
  }
}

/**
 * Where the object value of one member (`key`) of the element being cut out
 * lies in the element's bytes. The span is given only when it is certainly
 * what `JSON.parse` takes for that member, and on one line, whatever the
 * chunks the bytes came in (a string at the element's level that runs across
 * chunks is followed across them):
 * - the key is matched on its raw bytes, so a string at the element's level
 *   that has an escape (it might decode to the key) withholds the span;
 * - a repeated key moves the span to the last value, as `JSON.parse` keeps the last;
 * - a value with a line break in it has no span.
 */
class MemberSpan {
  /** A string at the element's level is open. */
  stringOpen = false;
  /** The member's object value is open. */
  valueOpen = false;
  private readonly key: Buffer;
  /** Where the open string's bytes not yet looked at start in this chunk. */
  private stringStart = 0;
  // What the open string's bytes so far are: how many, whether one was a backslash, whether they begin the key.
  private stringLength = 0;
  private stringHasBackslash = false;
  private stringBeginsKey = false;
  private lastStringIsKey = false;
  private withheld = false;
  private start = -1;
  private end = -1;
  private line = 0;

  constructor(key: string) {
    this.key = Buffer.from(key, 'latin1');
  }

  reset(): void {
    this.stringOpen = this.valueOpen = this.lastStringIsKey = this.withheld = false;
    this.start = this.end = -1;
  }

  chunkStarted(from: number): void {
    if (this.stringOpen) this.stringStart = from;
  }

  /** The chunk ends at `end` inside the open string. */
  chunkEnded(buf: Buffer, end: number): void {
    this.take(buf, end);
  }

  stringOpened(start: number): void {
    this.stringOpen = true;
    this.stringStart = start;
    this.stringLength = 0;
    this.stringHasBackslash = false;
    this.stringBeginsKey = true;
  }

  stringClosed(buf: Buffer, end: number): void {
    this.take(buf, end);
    this.stringOpen = false;
    this.lastStringIsKey = this.stringBeginsKey && this.stringLength === this.key.length;
    if (!this.lastStringIsKey && this.stringHasBackslash) this.withheld = true;
  }

  /** A member's value opened at `offset` (every value follows its key, so the last string says whose). */
  valueOpened(isObject: boolean, offset: number, line: number): void {
    if (!this.lastStringIsKey) return;
    this.lastStringIsKey = false;
    this.valueOpen = isObject;
    this.start = isObject ? offset : -1;
    this.end = -1;
    this.line = line;
  }

  /** The member's value closed just before `offset`. */
  valueClosed(offset: number, line: number): void {
    this.valueOpen = false;
    if (line === this.line) this.end = offset;
  }

  /** The member's bytes in `element`, when known for certain. */
  slice(element: Buffer): Buffer | undefined {
    return this.withheld || this.start < 0 || this.end < 0 ? undefined : element.subarray(this.start, this.end);
  }

  /** Adds the open string's bytes from `stringStart` to `end` to what is known of it. */
  private take(buf: Buffer, end: number): void {
    const start = this.stringStart;
    const key = this.key;
    const length = this.stringLength;
    if (this.stringBeginsKey) {
      // A byte loop: the strings are short, and Buffer.compare's call cost more than the comparing.
      let same = length + (end - start) <= key.length;
      for (let k = start; same && k < end; k++) same = buf[k] === key[length + k - start];
      this.stringBeginsKey = same;
    }
    if (!this.stringHasBackslash) for (let k = start; k < end; k++) if (buf[k] === BACKSLASH) this.stringHasBackslash = true;
    this.stringLength = length + (end - start);
    this.stringStart = end;
  }
}

/** Backslashes at the end of buf[from, to), added to `carry` when they reach `from`. */
function trailingBackslashes(buf: Buffer, from: number, to: number, carry: number): number {
  let k = to - 1;
  while (k >= from && buf[k] === BACKSLASH) k--;
  const run = to - 1 - k;
  return k < from ? carry + run : run;
}
