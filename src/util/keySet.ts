/**
 * A compact set of string keys, such as `Type/id`, for stages that must
 * remember which records they have seen (bundle, fetch, fasten) without
 * keeping the records, or even the keys.
 *
 * Each key is stored as a 64-bit hash in an open-addressing table of
 * `Uint32Array` pairs (linear probing). The table is doubled when it gets 75%
 * full, so it holds 8 bytes per slot and 10.7 to 21.3 bytes per key (about
 * 16 on average); while it doubles, the old and the new table exist together
 * for a moment (1.5× that). 1 million keys cost about 16 MB, whatever the
 * length of the keys.
 *
 * The price of keeping hashes rather than keys: two different keys can share
 * a hash, and the second is then reported as already present (a false
 * positive; there are no false negatives). With n keys the chance that any
 * such pair exists is about n² / 2⁶⁵: 3·10⁻⁸ for 1 million keys, 3·10⁻⁶ for
 * 10 million, 3·10⁻⁴ for 100 million. The seed is fixed by default so that
 * even that rare collision drops the same record on every run (hx's output
 * is deterministic); pass a `seed` to vary it.
 */
export interface KeySetOptions {
  /** Keys expected; the table starts large enough for them. */
  expected?: number;
  /** 32-bit hash seed; a fixed one by default, for byte-identical runs. */
  seed?: number;
}

const MAX_LOAD = 0.75;
const DEFAULT_SEED = 0x9e3779b9;

export class KeySet {
  /** Slot i holds the hash (hi, lo) at [2i, 2i+1]; (0, 0) marks an empty slot. */
  private table: Uint32Array;
  private mask: number;
  private count = 0;
  private readonly seed: number;
  // The last hash computed, kept in fields so that hashing allocates nothing.
  private hi = 0;
  private lo = 0;

  constructor(options: KeySetOptions = {}) {
    this.seed = (options.seed ?? DEFAULT_SEED) >>> 0;
    let slots = 1024;
    while (slots * MAX_LOAD < (options.expected ?? 0)) slots *= 2;
    this.table = new Uint32Array(slots * 2);
    this.mask = slots - 1;
  }

  /** Number of keys held. */
  get size(): number {
    return this.count;
  }

  /** Bytes held by the table. */
  get bytes(): number {
    return this.table.byteLength;
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
    const { hi, lo, table, mask } = this;
    for (let slot = lo & mask; ; slot = (slot + 1) & mask) {
      const at = slot * 2;
      const slotHi = table[at]!;
      const slotLo = table[at + 1]!;
      if (slotHi === hi && slotLo === lo) return false;
      if (slotHi === 0 && slotLo === 0) {
        table[at] = hi;
        table[at + 1] = lo;
        if (++this.count > (mask + 1) * MAX_LOAD) this.grow();
        return true;
      }
    }
  }

  private find(): boolean {
    const { hi, lo, table, mask } = this;
    for (let slot = lo & mask; ; slot = (slot + 1) & mask) {
      const at = slot * 2;
      const slotHi = table[at]!;
      const slotLo = table[at + 1]!;
      if (slotHi === hi && slotLo === lo) return true;
      if (slotHi === 0 && slotLo === 0) return false;
    }
  }

  private grow(): void {
    const old = this.table;
    const slots = (this.mask + 1) * 2;
    const table = new Uint32Array(slots * 2);
    const mask = slots - 1;
    for (let at = 0; at < old.length; at += 2) {
      const hi = old[at]!;
      const lo = old[at + 1]!;
      if (hi === 0 && lo === 0) continue;
      let slot = lo & mask;
      while (table[slot * 2] !== 0 || table[slot * 2 + 1] !== 0) slot = (slot + 1) & mask;
      table[slot * 2] = hi;
      table[slot * 2 + 1] = lo;
    }
    this.table = table;
    this.mask = mask;
  }

  /**
   * A 64-bit hash of `key` into (hi, lo): two 32-bit multiplicative lanes
   * with a final cross-mix (the construction of cyrb53, keeping all 64
   * bits). Fast on short keys, which is what the hot path needs.
   */
  private hash(key: string, second: string | undefined): void {
    let h1 = 0xdeadbeef ^ this.seed;
    let h2 = 0x41c6ce57 ^ this.seed;
    for (let i = 0; i < key.length; i++) {
      const c = key.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 2654435761);
      h2 = Math.imul(h2 ^ c, 1597334677);
    }
    if (second !== undefined) {
      h1 = Math.imul(h1 ^ 0x2f, 2654435761); // the '/' between the two parts
      h2 = Math.imul(h2 ^ 0x2f, 1597334677);
      for (let i = 0; i < second.length; i++) {
        const c = second.charCodeAt(i);
        h1 = Math.imul(h1 ^ c, 2654435761);
        h2 = Math.imul(h2 ^ c, 1597334677);
      }
    }
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
    h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
    h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
    this.hi = h2 >>> 0;
    // (0, 0) marks an empty slot; moving that one hash costs nothing measurable.
    this.lo = h1 >>> 0 || (this.hi === 0 ? 1 : 0);
  }
}
