/** Where `hash64` leaves its result, `[hi, lo]`: hashing allocates nothing. */
export const hash64Out = new Uint32Array(2);

/**
 * A 64-bit hash of `key` (or of `key/second`, without building that string:
 * hashing a concatenation would flatten it, a copy per record), into
 * `hash64Out`: two 32-bit multiplicative lanes over the UTF-16 units with a
 * final cross-mix (the construction of cyrb53, keeping all 64 bits). Fast on
 * short keys, which is what the hot paths need (bundle's dedupe, pretag's
 * patients: a fifth of the cost of SHA-1). On 5 million keys of three shapes
 * (`Patient/N`, UUIDs, zero-padded ids) no two shared a hash, and the low 32
 * bits collided as often as random bits would. Not a defence against forged
 * keys.
 */
export function hash64(key: string, second: string | undefined, seed: number): void {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
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
  hash64Out[0] = h2;
  hash64Out[1] = h1;
}
