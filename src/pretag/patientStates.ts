import { hash64, hash64Out } from '../util/hash64.js';

/** What has been seen of one patient's smoking status: a few bits. */
export const NEVER = 1;
export const EVER = 2;
/** Both a never-smoker and an ever-smoker record: the patient is contradictory. */
export const CONTRADICTORY = NEVER | EVER;

/**
 * The smoking-status bits of every patient seen, keyed by a 64-bit hash
 * (`hash64`) of `subject.reference` (`''` for subject-less records, which are judged
 * together). Nothing of the reference itself is kept, so the cost does not
 * depend on how long references are.
 *
 * An open-addressing table in three typed arrays: 4 + 4 bytes of key and one
 * byte of bits per slot, 9 bytes, kept between a quarter and a half full, so
 * 18 to 36 bytes per patient (100,000 patients: at most 3.6 MB), out of the
 * garbage-collected heap. Two references collide with probability about
 * n²/2⁶⁵ (one in 3.7 million for 10 million patients); a collision merges the
 * two patients' bits.
 */
export class PatientStates {
  private hi: Uint32Array;
  private lo: Uint32Array;
  /** 0 = empty slot; otherwise the NEVER/EVER bits. */
  private bits: Uint8Array;
  private mask: number;
  /** Patients held. */
  size = 0;

  constructor(initialSlots = 1024) {
    const slots = 2 ** Math.ceil(Math.log2(Math.max(16, initialSlots)));
    this.hi = new Uint32Array(slots);
    this.lo = new Uint32Array(slots);
    this.bits = new Uint8Array(slots);
    this.mask = slots - 1;
  }

  /** Bytes the table occupies now. */
  get bytes(): number {
    return this.bits.length * 9;
  }

  /** Adds `bits` (NEVER or EVER) to the patient's state. */
  mark(reference: string, bits: number): void {
    hash64(reference, undefined, 0);
    this.markKey(hash64Out[0]!, hash64Out[1]!, bits);
  }

  /** The patient's bits (0 when never marked). */
  get(reference: string): number {
    hash64(reference, undefined, 0);
    const hi = hash64Out[0]!;
    const lo = hash64Out[1]!;
    for (let i = lo & this.mask; ; i = (i + 1) & this.mask) {
      const b = this.bits[i]!;
      if (b === 0) return 0;
      if (this.lo[i] === lo && this.hi[i] === hi) return b;
    }
  }

  /** Patients whose bits are exactly `bits`. */
  count(bits: number): number {
    let n = 0;
    for (let i = 0; i < this.bits.length; i++) if (this.bits[i] === bits) n++;
    return n;
  }

  private markKey(hi: number, lo: number, bits: number): void {
    for (let i = lo & this.mask; ; i = (i + 1) & this.mask) {
      const b = this.bits[i]!;
      if (b === 0) {
        this.hi[i] = hi;
        this.lo[i] = lo;
        this.bits[i] = bits;
        if (++this.size * 2 > this.bits.length) this.grow();
        return;
      }
      if (this.lo[i] === lo && this.hi[i] === hi) {
        this.bits[i] = b | bits;
        return;
      }
    }
  }

  private grow(): void {
    const { hi, lo, bits } = this;
    const slots = bits.length * 2;
    this.hi = new Uint32Array(slots);
    this.lo = new Uint32Array(slots);
    this.bits = new Uint8Array(slots);
    this.mask = slots - 1;
    this.size = 0;
    for (let i = 0; i < bits.length; i++) if (bits[i] !== 0) this.markKey(hi[i]!, lo[i]!, bits[i]!);
  }
}
