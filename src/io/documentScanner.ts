/**
 * A byte scanner for one JSON document too large to parse whole: a FHIR
 * Bundle (of any size, pretty or on one line) or a top-level array of
 * resources. It hands each element of the Bundle's `entry` array (or of the
 * top-level array) to `onElement` as text, to be parsed with `JSON.parse`.
 * Everything else of the top-level object (`resourceType`, `type`, `total`,
 * `link`, …) is kept as `meta`, with `entry` emptied.
 *
 * The byte walk (strings, depth, lines, cutting out elements) is `JsonWalker`'s;
 * this class only says which array is streamed and keeps the meta members.
 * Memory: one element plus the meta members, each capped at `maxBytes`.
 */
import { CappedText, JsonWalker } from './jsonWalker.js';

export interface ScannerEvents {
  /**
   * One entry (or array element) as JSON text, with the line it starts on and,
   * when asked for (`resourceBytes`), the bytes of the entry's `resource` as
   * they came, if it is an object on one line whose bytes are known for
   * certain (see `JsonWalker`).
   */
  onElement(text: string, line: number, resource?: Buffer): void;
  /** An element that does not fit in `maxBytes`, or is not an object. */
  onBadElement(reason: string, line: number): void;
}

export class DocumentScanner extends JsonWalker {
  private top: 'object' | 'array' | undefined;
  /** At depth 1 of the top object, the next string is a key. */
  private expectKey = false;
  /** What the string being captured is. */
  private capturing: 'key' | 'resourceType' = 'key';
  private lastKey = '';
  private resourceType: string | undefined;
  private readonly metaText: CappedText;
  /** Where the meta members resume in the current chunk, or -1. */
  private metaStart = -1;

  constructor(
    private readonly events: ScannerEvents,
    maxBytes: number,
    startLine = 1,
    /** Find the bytes of each entry's `resource`. */
    resourceBytes = false,
  ) {
    // Array elements of the streamed array are cut out too: the caller rejects them once parsed.
    super(maxBytes, startLine, true, resourceBytes ? 'resource' : undefined);
    this.metaText = new CappedText(maxBytes);
  }

  override push(buf: Buffer, from = 0): number {
    if (this.capturingMeta()) this.metaStart = from;
    const end = super.push(buf, from);
    // The chunk ends inside the meta members: keep them.
    if (end < 0 && this.capturingMeta() && this.metaStart >= 0) this.metaText.append(buf.subarray(this.metaStart));
    return end;
  }

  /** The top-level object's members other than the streamed `entry` elements. */
  meta(): string | undefined {
    if (this.top !== 'object') return undefined;
    if (this.metaText.tooLarge) throw new Error(`document members other than entry exceed ${this.maxBytes} bytes`);
    return this.metaText.text();
  }

  get isArray(): boolean {
    return this.top === 'array';
  }

  /** True once the value has started but not ended: input cut short. */
  get started(): boolean {
    return this.top !== undefined;
  }

  private capturingMeta(): boolean {
    return this.top === 'object' && this.streamDepth < 0 && !this.done;
  }

  protected override opened(buf: Buffer, i: number, isObject: boolean): void {
    if (this.depth === 1) {
      this.top = isObject ? 'object' : 'array';
      if (isObject) {
        this.expectKey = true;
        this.metaStart = i;
      } else {
        this.streamDepth = 1;
      }
    } else if (
      this.top === 'object' &&
      this.depth === 2 &&
      !isObject &&
      this.lastKey === 'entry' &&
      (this.resourceType === undefined || this.resourceType === 'Bundle')
    ) {
      // Into Bundle.entry: stream its elements, keep `"entry":[` in meta.
      this.metaText.append(buf.subarray(this.metaStart, i + 1));
      this.metaStart = -1;
      this.streamDepth = 2;
    }
  }

  protected override streamEnded(i: number): void {
    if (this.top === 'object') this.metaStart = i;
  }

  protected override closed(buf: Buffer, i: number): void {
    if (this.depth !== 0) return;
    if (this.top === 'object') this.metaText.append(buf.subarray(this.metaStart, i + 1));
    this.metaStart = -1;
  }

  protected override comma(): void {
    if (this.depth === 1 && this.top === 'object') this.expectKey = true;
  }

  /** Keys of the top object are read, and the value of its `resourceType`. */
  protected override stringStarts(): boolean {
    if (this.depth !== 1 || this.top !== 'object') return false;
    if (this.expectKey) {
      this.expectKey = false;
      this.capturing = 'key';
      return true;
    }
    if (this.lastKey !== 'resourceType') return false;
    this.capturing = 'resourceType';
    return true;
  }

  protected override stringCaptured(raw: Buffer): void {
    const text = raw.toString('utf8');
    if (this.capturing === 'key') this.lastKey = text;
    else this.resourceType = text;
  }

  protected elementFound(text: string, line: number, resource?: Buffer): void {
    // In a top-level array the elements are resources, not entries.
    this.events.onElement(text, line, this.top === 'object' ? resource : undefined);
  }

  protected elementTooLarge(line: number): void {
    this.events.onBadElement(`entry larger than ${this.maxBytes} bytes`, line);
  }

  protected notObject(line: number): void {
    this.events.onBadElement('array element is not an object', line);
  }
}
