/**
 * UTF-8 written straight into one growing Buffer: no string concatenation
 * to flatten, and the byte count of each piece comes back from the write
 * (the Bundle encoder needs every entry's offset). At most twice the
 * content in memory.
 */
export class ByteBuilder {
  private buf: Buffer;
  private used = 0;

  /** `size`: the first buffer's; growth doubles it. */
  constructor(private size = 1 << 16) {
    this.buf = Buffer.allocUnsafe(0);
  }

  get length(): number {
    return this.used;
  }

  /** Appends `piece` (text as UTF-8); returns the bytes it took. */
  append(piece: string | Uint8Array): number {
    if (typeof piece !== 'string') {
      this.room(piece.byteLength);
      this.buf.set(piece, this.used);
      this.used += piece.byteLength;
      return piece.byteLength;
    }
    // A UTF-16 unit takes at most 3 UTF-8 bytes; measure exactly only near the end of the buffer.
    if (this.used + piece.length * 3 > this.buf.length) this.room(Buffer.byteLength(piece));
    const n = this.buf.write(piece, this.used, 'utf8');
    this.used += n;
    return n;
  }

  /** The bytes written so far, in place: valid until the next append or truncate. */
  peek(): Buffer {
    return this.buf.subarray(0, this.used);
  }

  /** Forgets the bytes written after the first `length`. */
  truncate(length: number): void {
    this.used = Math.min(this.used, length);
  }

  /** The bytes written, on a buffer of their own; the next piece starts a new buffer. */
  take(): Buffer {
    const bytes = this.buf.subarray(0, this.used);
    this.size = Math.max(this.size, this.buf.length);
    this.buf = Buffer.allocUnsafe(0);
    this.used = 0;
    return bytes;
  }

  /**
   * A copy of the bytes written, exactly their size; the buffer is kept for
   * what comes next, unless one enormous piece grew it past KEEP_BYTES.
   */
  copy(): Buffer {
    const bytes = Buffer.allocUnsafe(this.used);
    this.buf.copy(bytes, 0, 0, this.used);
    this.used = 0;
    if (this.buf.length > KEEP_BYTES) this.buf = Buffer.allocUnsafe(0);
    return bytes;
  }

  private room(more: number): void {
    const need = this.used + more;
    if (need <= this.buf.length) return;
    let size = Math.max(this.size, this.buf.length * 2);
    while (size < need) size *= 2;
    const grown = Buffer.allocUnsafe(size);
    this.buf.copy(grown, 0, 0, this.used);
    this.buf = grown;
  }
}

/** The largest buffer `copy` keeps for reuse: a batch's worth, not a 64 MiB line's. */
const KEEP_BYTES = 16 << 20;
