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
 * The byte walk (strings, depth, lines, cutting out resources) is
 * `JsonWalker`'s; this class only tracks the keys on the path and says which
 * arrays are streamed. Memory: one resource's text, capped at `maxBytes`.
 */
import { JsonWalker } from '../io/jsonWalker.js';

export interface FastenScannerEvents {
  /** One resource as JSON text; `mapType` is the key of the array it was in. */
  onResource(text: string, line: number, mapType: string, provider: number): void;
  /** A member of a type array that is not an object, or is larger than `maxBytes`. */
  onBadResource(reason: string, line: number): void;
}

/** Depths (1 = the top-level object) on the path to the resources. */
const TOP = 1;
const PROVIDERS = 2;
const PROVIDER = 3;
const FHIR = 4;
const TYPE_ARRAY = 5;

export class FastenExportScanner extends JsonWalker {
  /** Whether the top-level `providers` array was met. */
  sawProviders = false;
  /** Container kind per depth up to TYPE_ARRAY: true for an object. */
  private readonly isObject: boolean[] = [];
  /** Current key per object depth up to FHIR. */
  private readonly keys: string[] = [];
  private expectKey = false;
  private provider = -1;

  constructor(
    private readonly events: FastenScannerEvents,
    maxBytes: number,
    startLine = 1,
  ) {
    super(maxBytes, startLine, false);
  }

  /** True once the value has started but not ended: input cut short. */
  get started(): boolean {
    return this.depth > 0 || this.done;
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

  protected override opened(_buf: Buffer, _i: number, isObject: boolean): void {
    const depth = this.depth;
    if (depth > TYPE_ARRAY) return;
    this.isObject[depth] = isObject;
    this.keys[depth] = '';
    this.expectKey = isObject;
    if (depth === PROVIDERS && this.keys[TOP] === 'providers' && !isObject) this.sawProviders = true;
    if (depth === PROVIDER && this.keys[TOP] === 'providers' && this.isObject[PROVIDERS] === false) this.provider++;
    // Inside `providers[p].fhir.<Type>`: stream its members.
    if (depth === TYPE_ARRAY && this.onResourcePath()) this.streamDepth = TYPE_ARRAY;
  }

  protected override closed(): void {
    // Back in an object whose member just ended: its next token is `,` or `}`.
    this.expectKey = false;
  }

  protected override comma(): void {
    if (this.depth <= FHIR && this.isObject[this.depth]) this.expectKey = true;
  }

  /** Keys matter only on the path to the resources. */
  protected override stringStarts(): boolean {
    if (!this.expectKey) return false;
    this.expectKey = false;
    return this.depth <= FHIR;
  }

  protected override stringCaptured(raw: Buffer): void {
    this.keys[this.depth] = decodeKey(raw);
  }

  protected elementFound(text: string, line: number): void {
    this.events.onResource(text, line, this.keys[FHIR]!, this.provider);
  }

  protected elementTooLarge(line: number): void {
    this.events.onBadResource(`${this.path()}: resource larger than ${this.maxBytes} bytes`, line);
  }

  protected notObject(line: number): void {
    this.events.onBadResource(`${this.path()}: member is not an object`, line);
  }

  /** Where the scanner is, for messages: `providers[0].fhir.Observation`. Keys are not PHI. */
  private path(): string {
    return `providers[${this.provider}].fhir.${this.keys[FHIR]}`;
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

/**
 * Whether `head` (the first bytes of an input) opens a Fasten export: a
 * JSON object whose first member is `providers`.
 */
export function looksLikeFastenExport(head: Buffer): boolean {
  const text = head.toString('latin1', 0, Math.min(head.length, 1024));
  return /^\s*\{\s*"providers"\s*:/.test(text);
}
