/**
 * The redact profile: HealthClaw Guardrails' read-time PHI redaction as
 * `contracts/healthclaw.md` states it (release 1.10.0), applied at any
 * depth of any resource:
 *
 * - HumanName (`name` objects): `family` and each `given` become their
 *   initial and a dot, `text` goes;
 * - `birthDate`, `deceasedDateTime`, `valueDate`, `valueDateTime` → the year;
 * - Identifier values → `***` and their last 4 characters;
 * - Address → only `state` and `country`;
 * - ContactPoint (`telecom`) values → `[Redacted]`;
 * - `photo`, resource narratives (`text`), and every `display`,
 *   `description`, `valueString`, `valueMarkdown`, `valueUrl`, `valueUri`,
 *   `valueCanonical`, `valueBase64Binary` are removed.
 *
 * The server puts back displays of codes from its own terminology table;
 * hx has no such table, so coded displays stay removed. Ids are kept.
 */
import type { Resource } from '../types.js';
import type { Action, DeidReport } from './report.js';

type Json = Record<string, unknown>;

const REMOVED_KEYS: ReadonlySet<string> = new Set([
  'display', 'description', 'valueString', 'valueMarkdown', 'valueUrl', 'valueUri', 'valueCanonical', 'valueBase64Binary', 'photo',
]);
const YEAR_KEYS: ReadonlySet<string> = new Set(['birthDate', 'deceasedDateTime', 'valueDate', 'valueDateTime']);

export class RedactProfile {
  private readonly path: string[] = [];

  constructor(private readonly report: DeidReport) {}

  apply(resource: Resource): Resource {
    this.path.length = 0;
    return this.object(resource, true) as Resource;
  }

  private object(obj: Json, root: boolean): Json {
    if (root) this.path.push(this.path.length === 0 ? String(obj.resourceType) : `ofType(${String(obj.resourceType)})`);
    const out: Json = {};
    for (const key in obj) {
      const value = obj[key];
      if (REMOVED_KEYS.has(key) || (root && key === 'text')) {
        this.record(key, 'removed', key === 'text' ? 'Narrative' : key);
        continue;
      }
      if (typeof value === 'string') {
        if (YEAR_KEYS.has(key) && value.length > 4) {
          out[key] = value.slice(0, 4);
          this.record(key, 'to-year');
        } else out[key] = value;
        continue;
      }
      if (value === null || typeof value !== 'object') {
        out[key] = value;
        continue;
      }
      this.path.push(key);
      out[key] = this.member(key, value);
      this.path.pop();
    }
    if (root) this.path.pop();
    return out;
  }

  private member(key: string, value: object): unknown {
    switch (key) {
      case 'name':
        return this.each(value, (name) => this.name(name));
      case 'identifier':
        return this.each(value, (id) => this.identifier(id));
      case 'address':
        return this.each(value, (address) => this.address(address));
      case 'telecom':
        return this.each(value, (telecom) => this.telecom(telecom));
    }
    return this.value(value);
  }

  private value(value: unknown): unknown {
    if (Array.isArray(value)) return value.map((item) => this.value(item));
    if (value === null || typeof value !== 'object') return value;
    return this.object(value as Json, typeof (value as Json).resourceType === 'string');
  }

  private each(value: object, fn: (obj: Json) => Json): unknown {
    const one = (item: unknown) => (item !== null && typeof item === 'object' && !Array.isArray(item) ? fn(this.object(item as Json, false)) : item);
    return Array.isArray(value) ? value.map(one) : one(value);
  }

  private name(name: Json): Json {
    const out = { ...name };
    if (typeof out.family === 'string' && out.family) out.family = initial(out.family);
    if (Array.isArray(out.given)) out.given = out.given.map((g) => (typeof g === 'string' && g ? initial(g) : g));
    delete out.text;
    this.record('', 'initials');
    return out;
  }

  private identifier(id: Json): Json {
    if (typeof id.value !== 'string') return id;
    this.record('value', 'last4');
    return { ...id, value: '***' + lastChars(id.value, 4) };
  }

  private address(address: Json): Json {
    const out: Json = {};
    if (address.state !== undefined) out.state = address.state;
    if (address.country !== undefined) out.country = address.country;
    this.record('', 'redacted-value', 'Address (all but state, country)');
    return out;
  }

  private telecom(telecom: Json): Json {
    if (typeof telecom.value !== 'string') return telecom;
    this.record('value', 'redacted-value');
    return { ...telecom, value: '[Redacted]' };
  }

  private record(key: string, action: Action, kind?: string): void {
    if (!this.report.tracksPaths) return this.report.record('', action, kind);
    this.report.record(key ? this.path.join('.') + '.' + key : this.path.join('.'), action, kind);
  }
}

function initial(s: string): string {
  return String.fromCodePoint(s.codePointAt(0)!) + '.';
}

/** The last `n` characters (code points), as Python's `value[-4:]`. */
function lastChars(s: string, n: number): string {
  const chars = Array.from(s);
  return chars.slice(Math.max(0, chars.length - n)).join('');
}
