/**
 * A pass-through that counts what an NDJSON file holds while it streams:
 * bytes, non-blank lines, and (for output organised by patient) the
 * `Parameters` header lines and the resource type of every line
 * (`readTypes`). It adds a
 * final newline when the file lacks one, so files can be concatenated.
 * Counting costs one `indexOf` per line; the type is read from the first
 * bytes of a line only when asked (mixed-type files).
 */
import { Transform, type TransformCallback } from 'node:stream';

const NEWLINE = 0x0a;
const HEAD_BYTES = 96;
const TYPE_AT_START = /^\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]+)"/;

export interface LineCounts {
  /** Bytes passed on, the added final newline included. */
  bytes: number;
  /** Non-blank lines. */
  lines: number;
  /** Lines that are `Parameters` resources (patient header lines). */
  headerLines: number;
  /** Whether a final newline was added. */
  addedNewline: boolean;
  /** Resources per type, when types are read (`readTypes`). */
  types?: Map<string, number>;
}

export class LineCounter extends Transform {
  readonly counts: LineCounts;
  private lastByte = NEWLINE;
  /** Whether the current line has had a non-whitespace byte. */
  private lineHasContent = false;
  /** First bytes of the current line, when types are read. */
  private head: Buffer[] = [];
  private headLength = 0;

  constructor(
    private readonly readTypes: boolean,
    /** Told the size of each chunk as it passes (progress). */
    private readonly onBytes?: (bytes: number) => void,
  ) {
    super();
    this.counts = { bytes: 0, lines: 0, headerLines: 0, addedNewline: false, types: readTypes ? new Map() : undefined };
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.counts.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    if (chunk.length) this.lastByte = chunk[chunk.length - 1];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl === -1 ? chunk.length : nl;
      if (end > start) this.see(chunk, start, end);
      if (nl === -1) break;
      this.endLine();
      start = nl + 1;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.lastByte !== NEWLINE) {
      this.endLine();
      this.counts.bytes++;
      this.counts.addedNewline = true;
      this.push(Buffer.from('\n'));
    }
    done();
  }

  private see(chunk: Buffer, start: number, end: number): void {
    if (!this.lineHasContent) {
      // A line of only whitespace (\r, spaces) is blank; look for the first other byte.
      for (let i = start; i < end; i++) {
        const b = chunk[i];
        if (b !== 0x20 && b !== 0x0d && b !== 0x09) {
          this.lineHasContent = true;
          break;
        }
      }
    }
    if (this.readTypes && this.headLength < HEAD_BYTES) {
      const piece = chunk.subarray(start, Math.min(end, start + HEAD_BYTES - this.headLength));
      this.head.push(piece);
      this.headLength += piece.length;
    }
  }

  private endLine(): void {
    if (this.lineHasContent) {
      this.counts.lines++;
      if (this.readTypes) this.countType();
    }
    this.lineHasContent = false;
    if (this.head.length) {
      this.head = [];
      this.headLength = 0;
    }
  }

  private countType(): void {
    const head = Buffer.concat(this.head, this.headLength).toString('latin1');
    const type = TYPE_AT_START.exec(head)?.[1];
    if (type === 'Parameters') this.counts.headerLines++;
    else {
      const key = type ?? '(type not first)';
      this.counts.types!.set(key, (this.counts.types!.get(key) ?? 0) + 1);
    }
  }
}
