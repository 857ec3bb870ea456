/**
 * A byte scanner for a Fasten Health export file, a sibling of
 * `DocumentScanner` for a different shape:
 *
 *     {"providers":[{"name":"…","fhir":{"<ResourceType>":[resource, …], …}}, …]}
 *
 * It walks the bytes once, tracking nesting depth, strings and the keys on
 * the path to the resources, and hands each resource of each
 * `providers[p].fhir.<Type>` array to `onResource` as text (to be parsed
 * with `JSON.parse`), with the map key it was filed under. Every other
 * member (a provider's `name`, unknown keys) is skipped without being kept.
 *
 * Memory: one resource's text, capped at `maxBytes`. Speed: strings are
 * skipped with `Buffer.indexOf`; only structure outside strings is looked at
 * byte by byte, as in DocumentScanner.
 */
export interface FastenScannerEvents {
  /** One resource as JSON text; `mapType` is the key of the array it was in. */
  onResource(text: string, line: number, mapType: string, provider: number): void;
  /** A member of a type array that is not an object, or is larger than `maxBytes`. */
  onBadResource(reason: string, line: number): void;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NEWLINE = 0x0a;

/** Depths (1 = the top-level object) on the path to the resources. */
const TOP = 1;
const PROVIDERS = 2;
const PROVIDER = 3;
const FHIR = 4;
const TYPE_ARRAY = 5;

export class FastenExportScanner {
  /** Line the scanner is on (1-based). */
  line: number;
  /** Whether the top-level value has been closed. */
  done = false;
  /** Whether the top-level `providers` array was met. */
  sawProviders = false;
  private depth = 0;
  /** Container kind per depth up to TYPE_ARRAY: true for an object. */
  private readonly isObject: boolean[] = [];
  /** Current key per object depth up to FHIR. */
  private readonly keys: string[] = [];
  private expectKey = false;
  private inString = false;
  private pendingBackslashes = 0;
  private capturingKey = false;
  private keyParts: Buffer[] = [];
  private provider = -1;
  private resourceParts: Buffer[] | undefined;
  private resourceBytes = 0;
  private resourceLine = 0;
  private resourceTooLarge = false;
  private resourceStart = -1;
  /** A scalar member of a type array was reported; reset at the next comma. */
  private badScalar = false;

  constructor(
    private readonly events: FastenScannerEvents,
    private readonly maxBytes: number,
    startLine = 1,
  ) {
    this.line = startLine;
  }

  /** Scans `buf`. Returns the index just past the top-level value when it ends here, else -1. */
  push(buf: Buffer, from = 0): number {
    const n = buf.length;
    if (this.resourceParts) this.resourceStart = from;
    let keyStart = this.capturingKey ? from : -1;
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
        i = q + 1;
        if (run % 2 === 1) continue;
        this.inString = false;
        if (keyStart >= 0) {
          this.keyParts.push(buf.subarray(keyStart, q));
          this.keys[this.depth] = decodeKey(Buffer.concat(this.keyParts));
          this.keyParts = [];
          this.capturingKey = false;
          keyStart = -1;
        }
        continue;
      }
      const c = buf[i]!;
      switch (c) {
        case QUOTE:
          this.inString = true;
          if (this.expectKey) {
            this.expectKey = false;
            // Keys matter only on the path to the resources.
            if (this.depth <= FHIR) {
              this.capturingKey = true;
              keyStart = i + 1;
            }
          } else if (this.atTypeArray()) this.reportBadScalar();
          break;
        case 0x7b: // {
        case 0x5b: // [
          this.open(i, c === 0x7b);
          break;
        case 0x7d: // }
        case 0x5d: // ]
          if (this.close(buf, i)) return i + 1;
          break;
        case 0x2c: // ,
          if (this.depth <= FHIR && this.isObject[this.depth]) this.expectKey = true;
          if (this.atTypeArray()) this.badScalar = false;
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
          if (this.atTypeArray()) this.reportBadScalar();
      }
      i++;
    }
    if (keyStart >= 0) this.keyParts.push(buf.subarray(keyStart, n));
    if (this.resourceParts && this.resourceStart >= 0) this.append(buf.subarray(this.resourceStart, n));
    return -1;
  }

  /** True once the value has started but not ended: input cut short. */
  get started(): boolean {
    return this.depth > 0 || this.done;
  }

  /** Inside `providers[p].fhir.<Type>`, between its members. */
  private atTypeArray(): boolean {
    return this.depth === TYPE_ARRAY && !this.resourceParts && this.onResourcePath();
  }

  private onResourcePath(): boolean {
    return (
      this.keys[TOP] === 'providers' &&
      this.isObject[TOP] === true &&
      this.isObject[PROVIDERS] === false &&
      this.isObject[PROVIDER] === true &&
      this.keys[PROVIDER] === 'fhir' &&
      this.isObject[FHIR] === true &&
      this.isObject[TYPE_ARRAY] === false
    );
  }

  private reportBadScalar(): void {
    if (this.badScalar) return;
    this.badScalar = true;
    this.events.onBadResource(`${this.path()}: member is not an object`, this.line);
  }

  private open(i: number, isObject: boolean): void {
    this.depth++;
    const depth = this.depth;
    if (depth <= TYPE_ARRAY) {
      this.isObject[depth] = isObject;
      this.keys[depth] = '';
      this.expectKey = isObject;
      if (depth === PROVIDERS && this.keys[TOP] === 'providers' && !isObject) this.sawProviders = true;
      if (depth === PROVIDER && this.keys[TOP] === 'providers' && this.isObject[PROVIDERS] === false) this.provider++;
      return;
    }
    if (depth === TYPE_ARRAY + 1 && !this.resourceParts && isObject && this.onResourcePathAbove()) {
      this.resourceParts = [];
      this.resourceBytes = 0;
      this.resourceStart = i;
      this.resourceLine = this.line;
      this.resourceTooLarge = false;
    } else if (depth === TYPE_ARRAY + 1 && !isObject && this.onResourcePathAbove()) {
      this.reportBadScalar();
    }
  }

  /** The path test for a container opening just below the type array. */
  private onResourcePathAbove(): boolean {
    this.depth--;
    const on = this.atTypeArray();
    this.depth++;
    return on;
  }

  /** Returns true when this closes the top-level value. */
  private close(buf: Buffer, i: number): boolean {
    this.depth--;
    if (this.resourceParts && this.depth === TYPE_ARRAY) {
      this.append(buf.subarray(this.resourceStart, i + 1));
      const parts = this.resourceParts;
      this.resourceParts = undefined;
      this.resourceStart = -1;
      if (this.resourceTooLarge) this.events.onBadResource(`${this.path()}: resource larger than ${this.maxBytes} bytes`, this.resourceLine);
      else {
        const text = parts.length === 1 ? parts[0]!.toString('utf8') : Buffer.concat(parts).toString('utf8');
        this.events.onResource(text, this.resourceLine, this.keys[FHIR]!, this.provider);
      }
      return false;
    }
    if (this.depth < TYPE_ARRAY) this.badScalar = false;
    // Back in an object whose member just ended: its next token is `,` or `}`.
    this.expectKey = false;
    if (this.depth === 0) {
      this.done = true;
      return true;
    }
    return false;
  }

  /** Where the scanner is, for messages: `providers[0].fhir.Observation`. Keys are not PHI. */
  private path(): string {
    return `providers[${this.provider}].fhir.${this.keys[FHIR]}`;
  }

  private append(part: Buffer): void {
    if (this.resourceTooLarge || part.length === 0) return;
    this.resourceBytes += part.length;
    if (this.resourceBytes > this.maxBytes) {
      this.resourceTooLarge = true;
      this.resourceParts = [];
      return;
    }
    this.resourceParts!.push(part);
  }
}

/** A key's text; escapes (rare in keys) are decoded by JSON.parse. */
function decodeKey(raw: Buffer): string {
  const text = raw.toString('utf8');
  if (!text.includes('\\')) return text;
  try {
    return JSON.parse(`"${text}"`) as string;
  } catch {
    return text;
  }
}

/** Backslashes at the end of buf[from, to), added to `carry` when they reach `from`. */
function trailingBackslashes(buf: Buffer, from: number, to: number, carry: number): number {
  let k = to - 1;
  while (k >= from && buf[k] === BACKSLASH) k--;
  const run = to - 1 - k;
  return k < from ? carry + run : run;
}

/**
 * Whether `head` (the first bytes of an input) opens a Fasten export: a
 * JSON object whose first member is `providers`.
 */
export function looksLikeFastenExport(head: Buffer): boolean {
  const text = head.toString('latin1', 0, Math.min(head.length, 1024));
  return /^\s*\{\s*"providers"\s*:/.test(text);
}
