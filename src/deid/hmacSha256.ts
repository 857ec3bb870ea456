/**
 * HMAC-SHA256 with the key's pads hashed once (RFC 2104 §4 "precomputed
 * intermediate values"), in plain JavaScript.
 *
 * Why not node:crypto's createHmac? Pseudonyms are HMACs of short ids, one
 * or more per resource, and createHmac costs several microseconds a call in
 * object set-up alone, more than the hashing. With the pads' states kept, an
 * id of up to 55 bytes takes two SHA-256 compressions and no allocation.
 * Tests check it against node:crypto on many inputs.
 */
import { createHash } from 'node:crypto';

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const MAX_KEPT_BUFFER = 64 * 1024;
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);

export class HmacSha256 {
  private readonly innerStart = new Int32Array(8);
  private readonly outerStart = new Int32Array(8);
  private readonly state = new Int32Array(8);
  private readonly w = new Int32Array(64);
  private message = Buffer.alloc(256);
  /** The result of the last `digest`: valid until the next call. */
  private readonly out = Buffer.alloc(32);

  constructor(key: Uint8Array) {
    const block = Buffer.alloc(64);
    (key.length > 64 ? createHash('sha256').update(key).digest() : Buffer.from(key)).copy(block);
    const pad = Buffer.alloc(64);
    for (let i = 0; i < 64; i++) pad[i] = block[i]! ^ 0x36;
    this.innerStart.set(IV);
    this.compress(this.innerStart, pad, 0);
    for (let i = 0; i < 64; i++) pad[i] = block[i]! ^ 0x5c;
    this.outerStart.set(IV);
    this.compress(this.outerStart, pad, 0);
  }

  /** HMAC-SHA256(key, UTF-8 of `text`): 32 bytes, overwritten by the next call. */
  digest(text: string): Buffer {
    // Room for the text, the 0x80 byte, padding and the 8-byte length.
    // Ids are short; a long value gets a buffer of its own rather than growing the kept one.
    const need = text.length * 3 + 72;
    if (need > this.message.length && need <= MAX_KEPT_BUFFER) this.message = Buffer.alloc(need);
    const m = need <= this.message.length ? this.message : Buffer.alloc(need);
    const n = writeUtf8(text, m);
    const state = this.state;
    state.set(this.innerStart);
    this.finish(state, m, n, 64 + n);
    // Outer: the 32-byte inner digest, padded to one block.
    putWords(state, m);
    state.set(this.outerStart);
    this.finish(state, m, 32, 96);
    putWords(state, this.out);
    return this.out;
  }

  /** Pads `m[0, n)` (the end of a message of `total` bytes) and hashes it into `state`. */
  private finish(state: Int32Array, m: Buffer, n: number, total: number): void {
    const end = n + 1;
    m[n] = 0x80;
    const blocks = Math.ceil((end + 8) / 64);
    const last = blocks * 64;
    m.fill(0, end, last - 8);
    const bits = total * 8;
    m.writeUInt32BE(Math.floor(bits / 0x100000000), last - 8);
    m.writeUInt32BE(bits >>> 0, last - 4);
    for (let b = 0; b < blocks; b++) this.compress(state, m, b * 64);
  }

  private compress(state: Int32Array, m: Uint8Array, at: number): void {
    const w = this.w;
    for (let i = 0; i < 16; i++) {
      const j = at + i * 4;
      w[i] = (m[j]! << 24) | (m[j + 1]! << 16) | (m[j + 2]! << 8) | m[j + 3]!;
    }
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15]!;
      const y = w[i - 2]!;
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
    }
    let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!, e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (h + S1 + ch + K[i]! + w[i]!) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    state[0] = (state[0]! + a) | 0;
    state[1] = (state[1]! + b) | 0;
    state[2] = (state[2]! + c) | 0;
    state[3] = (state[3]! + d) | 0;
    state[4] = (state[4]! + e) | 0;
    state[5] = (state[5]! + f) | 0;
    state[6] = (state[6]! + g) | 0;
    state[7] = (state[7]! + h) | 0;
  }
}

/** The 8 state words, big-endian, into `to[0, 32)`. */
function putWords(state: Int32Array, to: Uint8Array): void {
  for (let i = 0; i < 8; i++) {
    const v = state[i]!;
    to[i * 4] = v >>> 24;
    to[i * 4 + 1] = v >>> 16;
    to[i * 4 + 2] = v >>> 8;
    to[i * 4 + 3] = v;
  }
}

/** UTF-8 of `text` into `to` (big enough); ASCII, the usual id, without a call into C++. */
function writeUtf8(text: string, to: Buffer): number {
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) return to.write(text, 0, 'utf8');
    to[i] = c;
  }
  return n;
}
