/**
 * A compact set of string keys, such as `Type/id`, for stages that must
 * remember which records they have seen (bundle, fetch, fasten) without
 * keeping the records, or even the keys.
 *
 * Each key is stored as a 64-bit hash in open-addressing tables of
 * `Uint32Array` pairs (8 bytes a slot, linear probing). The top 8 bits of the
 * hash choose one of 256 segments, each its own table, kept at most 90% full
 * and grown by an eighth when it gets there (doubled while small, below 512
 * slots: up to 1 MB of slack in all). So the set costs 8.9 to 10 bytes per
 * key from about 200,000 keys on (about 9.5; 1 million keys: 9-10 MB,
 * whatever the length of the keys), and its growth is smooth: one segment is
 * rebuilt at a time, so the old and the new copy that coexist for a moment
 * are 1/256 of the set, not the whole of it as with a single table that
 * doubles (which peaked at 32 bytes per key while it did). At 80% and a
 * quarter (about 11 bytes per key), `hx run` with safe-harbor on two threads
 * peaked at 202 MB on 4 GB (4.2 million keys); the longer probes of a fuller
 * table cost `hx bundle` nothing measurable on 1 GB (16.6 against 16.7 s).
 *
 * The price of keeping hashes rather than keys: two different keys can share
 * a hash, and the second is then reported as already present (a false
 * positive; there are no false negatives). With n keys the chance that any
 * such pair exists is about n² / 2⁶⁵: 3·10⁻⁸ for 1 million keys, 3·10⁻⁶ for
 * 10 million, 3·10⁻⁴ for 100 million. The seed is fixed by default so that
 * even that rare collision drops the same record on every run (hx's output
 * is deterministic); pass a `seed` to vary it.
 */
import { hash64, hash64Out } from './hash64.js';

export interface KeySetOptions {
  /** Keys expected; the tables start large enough for them. */
  expected?: number;
  /** 32-bit hash seed; a fixed one by default, for byte-identical runs. */
  seed?: number;
}

const SEGMENTS = 256;
const MAX_LOAD = 0.9;
const GROWTH = 1.125;
const MIN_SLOTS = 16;
/**
 * A segment this small doubles instead: growing a quarter at a time from 16
 * slots, a set of 200,000 keys was rebuilt some 4,700 times (a sixth of its
 * cost; by an eighth, more). The slack this allows is at most 1 MB over the
 * 256 segments.
 */
const SMALL_SLOTS = 512;
/** Smaller replaced tables are left to the collector: handing them over costs more than they hold. */
const RELEASE_BYTES = 16 * 1024;
const DEFAULT_SEED = 0x9e3779b9;

export class KeySet {
  /** Segment s is `tables[s]`: slot i holds the hash (hi, lo) at [2i, 2i+1]; (0, 0) marks an empty slot. */
  private readonly tables: Uint32Array[] = [];
  /** Keys held per segment. */
  private readonly counts = new Int32Array(SEGMENTS);
  private count = 0;
  private tableBytes = 0;
  private readonly seed: number;
  // The last hash computed, kept in fields so that hashing allocates nothing.
  private hi = 0;
  private lo = 0;

  constructor(options: KeySetOptions = {}) {
    this.seed = (options.seed ?? DEFAULT_SEED) >>> 0;
    // A segment's share of the keys varies (binomially): leave room for four standard deviations above the mean.
    const share = (options.expected ?? 0) / SEGMENTS;
    const slots = Math.max(MIN_SLOTS, Math.ceil((share + 4 * Math.sqrt(share)) / MAX_LOAD));
    for (let s = 0; s < SEGMENTS; s++) this.tables.push(new Uint32Array(slots * 2));
    this.tableBytes = SEGMENTS * slots * 8;
  }

  /** Number of keys held. */
  get size(): number {
    return this.count;
  }

  /** Bytes held by the tables. */
  get bytes(): number {
    return this.tableBytes;
  }

  /** Adds `key`; returns false when it was (by its hash) already present. */
  add(key: string): boolean {
    this.hash(key, undefined);
    return this.insert();
  }

  /**
   * Adds the key `first/second`, such as (type, id), without building the
   * string (hashing a concatenation would flatten it: a copy per record).
   */
  addPair(first: string, second: string): boolean {
    this.hash(first, second);
    return this.insert();
  }

  /** Whether `key` (by its hash) is present. */
  has(key: string): boolean {
    this.hash(key, undefined);
    return this.find();
  }

  /** Whether the key `first/second` (by its hash) is present; `has(first + '/' + second)` gives the same. */
  hasPair(first: string, second: string): boolean {
    this.hash(first, second);
    return this.find();
  }

  private insert(): boolean {
    const { hi, lo } = this;
    const segment = hi >>> 24;
    const table = this.tables[segment]!;
    const slots = table.length >> 1;
    for (let slot = home(lo, slots); ; slot = slot + 1 === slots ? 0 : slot + 1) {
      const at = slot * 2;
      const slotHi = table[at]!;
      const slotLo = table[at + 1]!;
      if (slotHi === hi && slotLo === lo) return false;
      if (slotHi === 0 && slotLo === 0) {
        table[at] = hi;
        table[at + 1] = lo;
        this.count++;
        if (++this.counts[segment]! > slots * MAX_LOAD) this.grow(segment);
        return true;
      }
    }
  }

  private find(): boolean {
    const { hi, lo } = this;
    const table = this.tables[hi >>> 24]!;
    const slots = table.length >> 1;
    for (let slot = home(lo, slots); ; slot = slot + 1 === slots ? 0 : slot + 1) {
      const at = slot * 2;
      const slotHi = table[at]!;
      const slotLo = table[at + 1]!;
      if (slotHi === hi && slotLo === lo) return true;
      if (slotHi === 0 && slotLo === 0) return false;
    }
  }

  private grow(segment: number): void {
    const old = this.tables[segment]!;
    const oldSlots = old.length >> 1;
    const slots = oldSlots < SMALL_SLOTS ? oldSlots * 2 : Math.ceil(oldSlots * GROWTH);
    const table = new Uint32Array(slots * 2);
    for (let at = 0; at < old.length; at += 2) {
      const hi = old[at]!;
      const lo = old[at + 1]!;
      if (hi === 0 && lo === 0) continue;
      let slot = home(lo, slots);
      while (table[slot * 2] !== 0 || table[slot * 2 + 1] !== 0) slot = slot + 1 === slots ? 0 : slot + 1;
      table[slot * 2] = hi;
      table[slot * 2 + 1] = lo;
    }
    this.tables[segment] = table;
    this.tableBytes += table.byteLength - old.byteLength;
    if (old.byteLength >= RELEASE_BYTES) release(old);
  }

  /** The hash of `key` (or `key/second`) into (hi, lo); see `hash64`. */
  private hash(key: string, second: string | undefined): void {
    hash64(key, second, this.seed);
    this.hi = hash64Out[0]!;
    // (0, 0) marks an empty slot; moving that one hash costs nothing measurable.
    this.lo = hash64Out[1]! || (this.hi === 0 ? 1 : 0);
  }
}

/**
 * Frees a table that has been replaced, soon. A long-lived table was promoted
 * to V8's old generation, whose garbage waits for a full collection; a set
 * that grows often (each segment by a quarter) would leave several times its
 * own size of such tables behind (`hx bundle` on 1 GB: 127 MB peak RSS
 * against 84 without its set). Transferring the memory to a fresh, unreferenced
 * buffer makes it young garbage, which the next young collection frees.
 */
function release(table: Uint32Array): void {
  structuredClone(table.buffer, { transfer: [table.buffer] });
}

/**
 * The first slot to try for a hash whose low word is `lo`, in a table of
 * `slots` (any size, not only powers of two): its top 24 bits scaled to the
 * table (exact in doubles up to 2^29 slots a segment).
 */
function home(lo: number, slots: number): number {
  return Math.floor(((lo >>> 8) * slots) / 0x1000000);
}
