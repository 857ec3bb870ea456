/**
 * Keyed pseudonyms: the same key maps the same original to the same
 * pseudonym in every file and every run, with no lookup table, so a split
 * Bulk export stays joined and a transaction Bundle still resolves.
 *
 * Every use of the key is domain-separated: the key itself is only used to
 * derive one sub-key per purpose (ids, date offsets, HealthClaw patient
 * UUIDs), so a pseudonym never helps to guess a date offset or the other way
 * round. The exception is `ms-compat` ids, which by definition are
 * HMAC-SHA256(key, id) in lowercase hex (Microsoft's FHIR anonymizer
 * `cryptoHash`).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { HmacSha256 } from './hmacSha256.js';
import { FHIR_ID, RESOURCE_TYPE_NAME } from '../util/fhirSyntax.js';

export type IdMode = 'hx' | 'ms-compat';

/** Where the key came from, for the account (never the key itself). */
export type KeySource = 'key-file' | 'env' | 'random' | 'given';

/**
 * A cache of at most 2 × `size` entries in two generations: a lookup that
 * misses the young generation but hits the old one promotes the entry; when
 * the young one is full the old one is dropped. Near-LRU at the cost of two
 * Map lookups, no per-hit reordering.
 */
export class TwoGenerationCache<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();

  constructor(private readonly size = 8192) {}

  get(key: string): V | undefined {
    const hit = this.young.get(key);
    if (hit !== undefined) return hit;
    const old = this.old.get(key);
    if (old !== undefined) this.set(key, old);
    return old;
  }

  set(key: string, value: V): void {
    if (this.young.size >= this.size) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }

  get entries(): number {
    return this.young.size + this.old.size;
  }
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function hex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]!];
  return s;
}

/**
 * The first 16 bytes of `digest` as an RFC 9562 version-8 ("custom") UUID:
 * 122 bits of the HMAC, version nibble 8, variant bits 10.
 */
export function uuidFromDigest(digest: Uint8Array): string {
  const h = Buffer.from(digest.buffer, digest.byteOffset, 16).toString('hex');
  const variant = HEX_DIGITS[8 | ((digest[8]! >> 4) & 3)]!;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const HEX_DIGITS = '0123456789abcdef';

export interface PseudonymizerOptions {
  key: Buffer;
  idMode?: IdMode;
  /**
   * Entries per cache generation (see TwoGenerationCache); default 4096, so
   * at most 8192 references (about 1.5 MB) are remembered: enough for the
   * references of the patients in flight, which is where repeats are.
   */
  cacheSize?: number;
}

export class Pseudonymizer {
  readonly idMode: IdMode;
  /** First 8 hex digits of SHA-256(key): enough to tell keys apart in a report, never the key. */
  readonly fingerprint: string;
  private readonly idHmac: HmacSha256;
  private readonly uuidHmac: HmacSha256;
  private readonly dateHmac: HmacSha256;
  private readonly patientHmac: HmacSha256;
  private readonly references: TwoGenerationCache<string>;
  private readonly offsets: TwoGenerationCache<number>;

  constructor(options: PseudonymizerOptions) {
    const { key } = options;
    this.idMode = options.idMode ?? 'hx';
    this.fingerprint = createHash('sha256').update(key).digest('hex').slice(0, 8);
    const derive = (purpose: string) => new HmacSha256(createHmac('sha256', key).update(`hx-deid/${purpose}`).digest());
    this.uuidHmac = derive('id');
    // hx ids are the UUID pseudonyms themselves (so `urn:uuid:X` and id X stay
    // the same string); ms-compat ids are HMAC(key, id) with the raw key.
    this.idHmac = this.idMode === 'ms-compat' ? new HmacSha256(key) : this.uuidHmac;
    this.dateHmac = derive('date-shift');
    this.patientHmac = derive('healthclaw-patient');
    const size = options.cacheSize ?? 4096;
    this.references = new TwoGenerationCache(size);
    this.offsets = new TwoGenerationCache(Math.min(size, 4096));
  }

  /** A key for one run, drawn at random: pseudonyms will not match any other run. */
  static randomKey(): Buffer {
    return randomBytes(32);
  }

  /**
   * The pseudonym of a resource id. hx mode: a UUID (v8 layout) from the
   * first 16 bytes of HMAC-SHA256(id-key, id), 36 characters, a valid FHIR
   * id. ms-compat: 64 lowercase hex characters of HMAC-SHA256(key, id).
   */
  id(original: string): string {
    // Not cached: a resource's own id is met once. References, which repeat, are cached whole.
    return this.idMode === 'hx' ? this.uuid(original) : hex(this.idHmac.digest(original));
  }

  /** The UUID pseudonym of `original` (the part after `urn:uuid:`, or an id in hx mode). */
  uuid(original: string): string {
    return uuidFromDigest(this.uuidHmac.digest(original));
  }

  /**
   * A literal reference with its id pseudonymised: `Type/id`, an absolute
   * URL `…/Type/id[/_history/v]` (base and version kept), `#contained`,
   * `urn:uuid:…` (stays a valid UUID). Other `urn:` forms (OIDs) carry no
   * record id and are returned as they are. Returns `undefined` for what
   * cannot be pseudonymised (a conditional reference `Type?param=…`, say):
   * the caller must remove it.
   */
  reference(ref: string): string | undefined {
    // Whole references repeat (every resource of a patient names it): cache them.
    const cached = this.references.get(ref);
    if (cached !== undefined) return cached;
    const out = this.rewriteReference(ref);
    if (out !== undefined) this.references.set(ref, out);
    return out;
  }

  private rewriteReference(ref: string): string | undefined {
    if (ref.charCodeAt(0) === 35 /* # */) return ref.length === 1 ? ref : FHIR_ID.test(ref.slice(1)) ? '#' + this.id(ref.slice(1)) : undefined;
    if (ref.startsWith('urn:uuid:')) return 'urn:uuid:' + this.uuid(ref.slice(9));
    if (ref.startsWith('urn:')) return ref;
    const parts = parseLiteralReference(ref);
    if (!parts) return undefined;
    return ref.slice(0, parts.idStart) + this.id(parts.id) + ref.slice(parts.idEnd);
  }

  /**
   * `Bundle.entry.request.url`: `Type` alone is kept, `Type/id[/_history/v]`
   * pseudonymised; a conditional URL (`Type?…`) returns undefined.
   */
  requestUrl(url: string): string | undefined {
    if (RESOURCE_TYPE_NAME.test(url)) return url;
    return url.includes('?') ? undefined : this.reference(url);
  }

  /**
   * The `urn:healthclaw:patient` identifier value of a Patient: a UUID from
   * HMAC-SHA256 of its id under a sub-key of its own.
   */
  healthclawPatient(patientId: string): string {
    return uuidFromDigest(this.patientHmac.digest(patientId));
  }

  /**
   * The date offset of one patient, in whole days within ±`maxDays`:
   * HMAC-SHA256(date-key, patient) read as an unsigned 32-bit integer,
   * reduced modulo 2·maxDays+1. The same for every resource of the patient.
   */
  dayOffset(patient: string, maxDays: number): number {
    if (maxDays <= 0) return 0;
    let offset = this.offsets.get(patient);
    if (offset === undefined) {
      const n = this.dateHmac.digest(patient).readUInt32BE(0);
      offset = (n % (2 * maxDays + 1)) - maxDays;
      this.offsets.set(patient, offset);
    }
    return offset;
  }
}

interface LiteralReference {
  type: string;
  id: string;
  idStart: number;
  idEnd: number;
}

/**
 * `[base/]Type/id[/_history/vid]` taken apart by hand (a regex with an
 * optional base prefix backtracks on every slash): undefined for anything
 * else, including a conditional reference `Type?…`.
 */
function parseLiteralReference(ref: string): LiteralReference | undefined {
  if (ref.includes('?')) return undefined;
  let idEnd = ref.length;
  const history = ref.lastIndexOf('/_history/');
  if (history >= 0) {
    if (!FHIR_ID.test(ref.slice(history + 10))) return undefined;
    idEnd = history;
  }
  const slash = ref.lastIndexOf('/', idEnd - 1);
  if (slash <= 0) return undefined;
  const typeStart = ref.lastIndexOf('/', slash - 1) + 1;
  const type = ref.slice(typeStart, slash);
  const id = ref.slice(slash + 1, idEnd);
  if (!RESOURCE_TYPE_NAME.test(type) || !FHIR_ID.test(id)) return undefined;
  return { type, id, idStart: slash + 1, idEnd };
}

/** The id part of a literal reference (`Patient/1`, `…/Patient/1/_history/2`, `urn:uuid:…`), if any. */
export function referencedId(ref: string): string | undefined {
  if (ref.startsWith('urn:uuid:')) return ref.slice(9);
  return parseLiteralReference(ref)?.id;
}

/** The resource type a literal reference names, if it names one. */
export function referencedType(ref: string): string | undefined {
  return parseLiteralReference(ref)?.type;
}
