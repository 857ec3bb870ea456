/**
 * A byte scanner for one JSON document too large to parse whole: a FHIR
 * Bundle (of any size, pretty or on one line) or a top-level array of
 * resources. It walks the bytes once, tracking only nesting depth and
 * strings, and hands each element of the Bundle's `entry` array (or of the
 * top-level array) to `onElement` as text, to be parsed with `JSON.parse`.
 * Everything else of the top-level object (`resourceType`, `type`, `total`,
 * `link`, …) is kept as `meta`, with `entry` emptied.
 *
 * Memory: one element plus the meta members, each capped at `maxBytes`.
 * Speed: strings, which hold most of the bytes of FHIR JSON, are skipped with
 * `Buffer.indexOf`; only structure outside strings is looked at byte by byte.
 */
export interface ScannerEvents {
  /** One entry (or array element) as JSON text, with the line it starts on. */
  onElement(text: string, line: number): void;
  /** An element that does not fit in `maxBytes`, or is not an object. */
  onBadElement(reason: string, line: number): void;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;

export class DocumentScanner {
  /** Line the scanner is on (1-based, counted in the bytes it has seen). */
  line: number;
  /** Whether the top-level value has been closed. */
  done = false;
  private top: 'object' | 'array' | undefined;
  private depth = 0;
  private inString = false;
  private pendingBackslashes = 0;
  private expectKey = false;
  private captureKey = false;
  private keyParts: Buffer[] = [];
  private lastKey = '';
  private resourceType: string | undefined;
  private captureResourceType = false;
  /** Depth of the array whose elements are streamed, or -1 when not inside it. */
  private containerDepth = -1;
  private elementParts: Buffer[] | undefined;
  private elementBytes = 0;
  private elementLine = 0;
  private elementTooLarge = false;
  private elementStart = -1;
  private badScalar = false;
  private metaParts: Buffer[] = [];
  private metaBytes = 0;
  private metaStart = -1;
  private metaTooLarge = false;

  constructor(
    private readonly events: ScannerEvents,
    private readonly maxBytes: number,
    startLine = 1,
  ) {
    this.line = startLine;
  }

  /**
   * Scans `buf` from `from`. Returns the index just past the end of the
   * top-level value when it ends in this chunk, else -1.
   */
  push(buf: Buffer, from = 0): number {
    const n = buf.length;
    if (this.elementParts) this.elementStart = from;
    if (this.capturingMeta()) this.metaStart = from;
    let keyStart = this.captureKey || this.captureResourceType ? from : -1;
    let i = from;
    while (i < n) {
      if (this.inString) {
        const q = buf.indexOf(QUOTE, i);
        if (q === -1) {
          this.pendingBackslashes = trailingBackslashes(buf, i, n, i === from ? this.pendingBackslashes : 0);
          i = n;
          break;
        }
        let k = q - 1;
        while (k >= i && buf[k] === BACKSLASH) k--;
        let run = q - 1 - k;
        if (k < i && i === from) run += this.pendingBackslashes;
        this.pendingBackslashes = 0;
        if (run % 2 === 1) {
          i = q + 1;
          continue;
        }
        this.inString = false;
        if (keyStart >= 0) {
          this.keyParts.push(buf.subarray(keyStart, q));
          const text = Buffer.concat(this.keyParts).toString('utf8');
          this.keyParts = [];
          if (this.captureKey) this.lastKey = text;
          else this.resourceType = text;
          this.captureKey = this.captureResourceType = false;
          keyStart = -1;
        }
        i = q + 1;
        continue;
      }
      const c = buf[i]!;
      switch (c) {
        case QUOTE:
          this.inString = true;
          if (this.depth === 1 && this.top === 'object') {
            if (this.expectKey) {
              this.expectKey = false;
              this.captureKey = true;
              keyStart = i + 1;
            } else if (this.lastKey === 'resourceType') {
              this.captureResourceType = true;
              keyStart = i + 1;
            }
          } else if (this.atContainerLevel()) {
            this.reportBadScalar();
          }
          break;
        case 0x7b: // {
        case 0x5b: // [
          this.open(buf, i, c === 0x7b);
          break;
        case 0x7d: // }
        case 0x5d: // ]
          if (this.close(buf, i)) return i + 1;
          break;
        case 0x2c: // ,
          if (this.depth === 1 && this.top === 'object') this.expectKey = true;
          if (this.atContainerLevel()) this.badScalar = false;
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
          if (this.atContainerLevel()) this.reportBadScalar();
      }
      i++;
    }
    // The chunk ends inside the value: keep what is being captured.
    if (keyStart >= 0) this.keyParts.push(buf.subarray(keyStart, n));
    if (this.elementParts && this.elementStart >= 0) this.appendElement(buf.subarray(this.elementStart, n));
    if (this.capturingMeta() && this.metaStart >= 0) this.appendMeta(buf.subarray(this.metaStart, n));
    return -1;
  }

  /** The top-level object's members other than the streamed `entry` elements. */
  meta(): string | undefined {
    if (this.top !== 'object') return undefined;
    if (this.metaTooLarge) throw new Error(`document members other than entry exceed ${this.maxBytes} bytes`);
    return Buffer.concat(this.metaParts).toString('utf8');
  }

  get isArray(): boolean {
    return this.top === 'array';
  }

  /** True once the value has started but not ended: input cut short. */
  get started(): boolean {
    return this.top !== undefined;
  }

  private atContainerLevel(): boolean {
    return this.containerDepth >= 0 && this.depth === this.containerDepth && !this.elementParts;
  }

  private capturingMeta(): boolean {
    return this.top === 'object' && this.containerDepth < 0 && !this.done;
  }

  private reportBadScalar(): void {
    if (this.badScalar) return;
    this.badScalar = true;
    this.events.onBadElement('array element is not an object', this.line);
  }

  private open(buf: Buffer, i: number, isObject: boolean): void {
    if (this.depth === 0) {
      this.top = isObject ? 'object' : 'array';
      this.depth = 1;
      if (isObject) {
        this.expectKey = true;
        this.metaStart = i;
      } else {
        this.containerDepth = 1;
      }
      return;
    }
    this.depth++;
    if (this.depth === this.containerDepth + 1 && !this.elementParts && this.containerDepth >= 0) {
      this.elementParts = [];
      this.elementBytes = 0;
      this.elementStart = i;
      this.elementLine = this.line;
      this.elementTooLarge = false;
      return;
    }
    if (
      this.top === 'object' &&
      this.depth === 2 &&
      !isObject &&
      this.lastKey === 'entry' &&
      (this.resourceType === undefined || this.resourceType === 'Bundle')
    ) {
      // Into Bundle.entry: stream its elements, keep `"entry":[` in meta.
      this.appendMeta(buf.subarray(this.metaStart, i + 1));
      this.metaStart = -1;
      this.containerDepth = 2;
    }
  }

  /** Returns true when this closes the top-level value. */
  private close(buf: Buffer, i: number): boolean {
    this.depth--;
    if (this.elementParts && this.depth === this.containerDepth) {
      this.appendElement(buf.subarray(this.elementStart, i + 1));
      const parts = this.elementParts;
      this.elementParts = undefined;
      this.elementStart = -1;
      if (this.elementTooLarge) {
        this.events.onBadElement(`entry larger than ${this.maxBytes} bytes`, this.elementLine);
      } else {
        const text = parts.length === 1 ? parts[0]!.toString('utf8') : Buffer.concat(parts).toString('utf8');
        this.events.onElement(text, this.elementLine);
      }
      return false;
    }
    if (this.containerDepth >= 0 && this.depth === this.containerDepth - 1) {
      this.containerDepth = -1;
      this.badScalar = false;
      if (this.top === 'object') this.metaStart = i;
    }
    if (this.depth === 0) {
      if (this.top === 'object') this.appendMeta(buf.subarray(this.metaStart, i + 1));
      this.metaStart = -1;
      this.done = true;
      return true;
    }
    return false;
  }

  private appendElement(part: Buffer): void {
    if (this.elementTooLarge || part.length === 0) return;
    this.elementBytes += part.length;
    if (this.elementBytes > this.maxBytes) {
      this.elementTooLarge = true;
      this.elementParts = [];
      return;
    }
    this.elementParts!.push(part);
  }

  private appendMeta(part: Buffer): void {
    if (this.metaTooLarge || part.length === 0) return;
    this.metaBytes += part.length;
    if (this.metaBytes > this.maxBytes) {
      this.metaTooLarge = true;
      this.metaParts = [];
      return;
    }
    this.metaParts.push(part);
  }
}

/** Backslashes at the end of buf[from, to), added to `carry` when they reach `from`. */
function trailingBackslashes(buf: Buffer, from: number, to: number, carry: number): number {
  let k = to - 1;
  while (k >= from && buf[k] === BACKSLASH) k--;
  const run = to - 1 - k;
  return k < from ? carry + run : run;
}
