/** A FHIR resource as parsed JSON. Only `resourceType` is guaranteed by the spine. */
export interface Resource {
  resourceType: string;
  id?: string;
  [key: string]: unknown;
}

/**
 * The unit that flows between stream stages: the resources read from one
 * chunk of one input, with the line each started on. Batching keeps the
 * per-record cost of Node streams off the hot path (see README, "Design").
 */
export interface Batch {
  /** Input name, `-` for stdin. */
  source: string;
  /** 1-based line on which each resource starts in `source`. */
  lines: number[];
  resources: Resource[];
  /**
   * The NDJSON line each resource was parsed from, where there is one and
   * nothing has changed the resource since (else undefined): a serializer
   * writes it as it came instead of serialising the resource again, which
   * saves a third of `hx cat` and keeps what a JSON round trip loses (a
   * decimal's `1.50`). A stage that passes resources on builds a new Batch,
   * which drops these, and may carry a text over only for a resource it
   * returns untouched, or rewrite it to say exactly what it changed (pretag's
   * Tagger splices its tags in): never keep it for a resource it changed, in
   * place or not. Absent: serialise everything.
   */
  texts?: (RecordText | undefined)[];
}

/**
 * A record's JSON text (`Batch.texts`): a string, or a string followed by
 * bytes already in UTF-8 (pretag's tags, spliced in; see `SplicedText`).
 */
export type RecordText = string | SplicedText;

/**
 * `head` followed by `tail`: a text whose end is shared by many records and
 * encoded once. Pretag's tag texts hold an em dash; spliced into a line as a
 * string, it made V8 store the whole line as UTF-16, whose encoding to UTF-8
 * cost `hx pretag` about a fifth of its time (a fifth of the benchmark's
 * records get a tag).
 */
export class SplicedText {
  constructor(
    readonly head: string,
    readonly tail: EncodedText,
  ) {}

  toString(): string {
    return this.head + this.tail.text;
  }
}

/** A text and its UTF-8 bytes. */
export class EncodedText {
  readonly bytes: Buffer;

  constructor(readonly text: string) {
    this.bytes = Buffer.from(text, 'utf8');
  }
}

/** Where a record came from, for messages that must not carry its content. */
export interface Location {
  source: string;
  line: number;
}

export function formatLocation(loc: Location): string {
  return `${loc.source}:${loc.line}`;
}

/**
 * How many batches an object-mode stage buffers on each side. Node's default
 * (16) would hold megabytes of parsed records per stage; a few suffice to
 * keep every stage busy.
 */
export const BATCHES_IN_FLIGHT = 4;
