/**
 * The export profile on a record's JSON text, without parsing it into
 * objects: for a resource that is not a person, the profile's only change is
 * to remove the `display` of references to people (`ExportProfile`), so the
 * text can be copied with those members cut out. Parsing and serialising
 * cost about twice what this one pass does, and the text keeps what a JSON
 * round trip would lose (a decimal's `1.50`, as `hx cat` keeps it).
 *
 * It answers only when the answer is certainly the object path's: the text
 * must be strict JSON (the grammar `JSON.parse` accepts) with
 *
 * - no control character, and no backslash in a key or in a value the rule
 *   reads (`resourceType`, `type`, `reference`): each of those is its raw
 *   text, so no escape can spell a key or a target differently (escapes
 *   elsewhere, a note's `\n`, are checked and kept as they are);
 * - no key twice in one object: `JSON.parse` keeps the last value of a
 *   repeated key, so the text would hold what the profile never saw (an
 *   earlier `"display":"Lin, Derrick"`), and writing it would leak that;
 * - a `resourceType` naming a FHIR type that is not a Bundle, and no object
 *   anywhere whose `resourceType` is a person type (those lose names,
 *   addresses and identifiers: the object path's work);
 * - no member named `__proto__` (see where it is met);
 * - no reference whose `display` is its only member (the object path
 *   removes it whole, and what that leaves empty).
 *
 * Anything else gets `undefined`, and the caller takes the object path
 * (which also gives invalid JSON its proper rejection). The differential
 * tests hold the two paths equal: `JSON.parse` of the edited text deep-equals
 * the object path's result.
 */
import { PERSON_TYPES } from './fhirTypes.js';
import { referencedType } from './pseudonym.js';
import { RESOURCE_TYPE_NAME } from '../util/fhirSyntax.js';

export interface ExportTextResult {
  /** The record's text with the person references' displays cut out (the same string when none). */
  text: string;
  resourceType: string;
  /** Displays removed. */
  removed: number;
}

/**
 * No control character, anywhere. (Anchored and negated: V8 runs this twice
 * as fast as a search for the characters.)
 */
const NO_CONTROL = /^[^\u0000-\u001f]*$/;
/** What may follow a backslash in a JSON string (`u` is checked apart). */
const SIMPLE_ESCAPE = /["\\/bfnrt]/;
const HEX4 = /^[0-9A-Fa-f]{4}$/;
/** Deeper than any FHIR resource; deeper text takes the object path. */
const MAX_DEPTH = 64;

const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;
const SPACE = 0x20;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/** Thrown inside the scan when the text must take the object path; caught in `exportByText`. */
class NotThisWay {}
const NOT_THIS_WAY = new NotThisWay();

/**
 * `line` under the export profile, or undefined when the object path must
 * do it (see the module comment). `line` is one JSON text, nothing around it.
 */
export function exportByText(line: string): ExportTextResult | undefined {
  if (line.charCodeAt(0) !== OPEN_BRACE || !NO_CONTROL.test(line)) return undefined;
  return scanner.run(line);
}

class ExportTextScanner {
  private s = '';
  private i = 0;
  /** Where the next backslash is (at or after a position already passed, or the line's length): a string before it ends at the next quote. */
  private backslash = -1;
  /** Whether the last string read held one. */
  private escaped = false;
  private depth = 0;
  /** Keys of the objects open on the path to the current one, as [start, end) pairs, flat: `keys[0, keyCount)`. */
  private readonly keys: number[] = [];
  private keyCount = 0;
  /** Spans to cut, as [start, end) pairs, flat. */
  private readonly cuts: number[] = [];
  private cutCount = 0;
  private topType = '';

  run(line: string): ExportTextResult | undefined {
    this.s = line;
    this.i = 0;
    this.backslash = -1;
    this.depth = 0;
    this.keyCount = 0;
    this.cutCount = 0;
    this.topType = '';
    try {
      this.object();
      // Nothing after the object, not even spaces: the reader keeps a line's text only then (ndjsonSplit).
      if (this.i !== line.length) return undefined;
    } catch (err) {
      if (err === NOT_THIS_WAY) return undefined;
      throw err;
    } finally {
      this.s = '';
    }
    if (!RESOURCE_TYPE_NAME.test(this.topType) || this.topType === 'Bundle') return undefined;
    return { text: this.cutText(line), resourceType: this.topType, removed: this.cutCount / 2 };
  }

  private cutText(line: string): string {
    const { cuts, cutCount } = this;
    if (cutCount === 0) return line;
    if (cutCount === 2) return line.slice(0, cuts[0]) + line.slice(cuts[1]);
    // Inner objects close first, so their cuts come first even when they lie later: put them in order.
    const order: number[] = [];
    for (let k = 0; k < cutCount; k += 2) order.push(k);
    order.sort((a, b) => cuts[a]! - cuts[b]!);
    let text = '';
    let from = 0;
    for (const k of order) {
      text += line.slice(from, cuts[k]);
      from = cuts[k + 1]!;
    }
    return text + line.slice(from);
  }

  private cut(start: number, end: number): void {
    this.cuts[this.cutCount++] = start;
    this.cuts[this.cutCount++] = end;
  }

  /** The character at the position, moved past spaces (the only whitespace a plain line can hold). */
  private peek(): number {
    const s = this.s;
    let c = s.charCodeAt(this.i);
    while (c === SPACE) c = s.charCodeAt(++this.i);
    return c;
  }

  private value(): void {
    const c = this.peek();
    if (c === OPEN_BRACE) this.object();
    else if (c === OPEN_BRACKET) this.array();
    else if (c === QUOTE) this.string();
    else if (c === 0x74 /* t */) this.literal('true');
    else if (c === 0x66 /* f */) this.literal('false');
    else if (c === 0x6e /* n */) this.literal('null');
    else this.number();
  }

  /** At a quote: past the closing one, checking the escapes on the way (`escaped` says whether there were any). */
  private string(): void {
    const s = this.s;
    const end = s.indexOf('"', this.i + 1);
    if (end < 0) throw NOT_THIS_WAY;
    this.escaped = false;
    if (this.backslash < this.i) {
      const next = s.indexOf('\\', this.i);
      this.backslash = next < 0 ? s.length : next;
    }
    if (this.backslash > end) {
      this.i = end + 1;
      return;
    }
    // Escapes inside: each backslash takes the character after it (so `\"` does not close the string).
    this.escaped = true;
    let i = this.i + 1;
    for (;;) {
      const quote = s.indexOf('"', i);
      const backslash = s.indexOf('\\', i);
      if (quote < 0) throw NOT_THIS_WAY;
      if (backslash < 0 || quote < backslash) {
        this.i = quote + 1;
        return;
      }
      const c = s[backslash + 1] ?? '';
      if (c === 'u') {
        if (!HEX4.test(s.slice(backslash + 2, backslash + 6))) throw NOT_THIS_WAY;
        i = backslash + 6;
      } else if (SIMPLE_ESCAPE.test(c)) {
        i = backslash + 2;
      } else throw NOT_THIS_WAY;
    }
  }

  /** The string value just read (its quote at `start`), which the rule reads: refused if it holds an escape. */
  private readValue(start: number): string {
    if (this.escaped) throw NOT_THIS_WAY;
    return this.s.slice(start + 1, this.i - 1);
  }

  private literal(word: string): void {
    if (!this.s.startsWith(word, this.i)) throw NOT_THIS_WAY;
    this.i += word.length;
  }

  /** JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
  private number(): void {
    const s = this.s;
    let i = this.i;
    let c = s.charCodeAt(i);
    if (c === 0x2d /* - */) c = s.charCodeAt(++i);
    if (c === 0x30 /* 0 */) c = s.charCodeAt(++i);
    else if (isDigit(c)) do c = s.charCodeAt(++i); while (isDigit(c));
    else throw NOT_THIS_WAY;
    if (c === 0x2e /* . */) {
      c = s.charCodeAt(++i);
      if (!isDigit(c)) throw NOT_THIS_WAY;
      do c = s.charCodeAt(++i); while (isDigit(c));
    }
    if (c === 0x65 || c === 0x45 /* e E */) {
      c = s.charCodeAt(++i);
      if (c === 0x2b || c === 0x2d /* + - */) c = s.charCodeAt(++i);
      if (!isDigit(c)) throw NOT_THIS_WAY;
      do c = s.charCodeAt(++i); while (isDigit(c));
    }
    this.i = i;
  }

  private array(): void {
    this.i++;
    if (this.peek() === CLOSE_BRACKET) {
      this.i++;
      return;
    }
    for (;;) {
      this.value();
      const c = this.peek();
      this.i++;
      if (c === CLOSE_BRACKET) return;
      if (c !== COMMA) throw NOT_THIS_WAY;
    }
  }

  /**
   * At `{`: past the matching `}`, noting the members that decide the
   * export rule and, when it applies, the span that removes `display`.
   */
  private object(): void {
    if (++this.depth > MAX_DEPTH) throw NOT_THIS_WAY;
    const s = this.s;
    const keys = this.keys;
    const firstKey = this.keyCount;
    this.i++;
    // The members the rule looks at (ExportProfile.walk and isPersonReference).
    let displayStart = -1; // the display member's key quote, when its value is a string
    let displayEnd = -1;
    let commaBefore = -1; // the comma before the display member, if it is not the first
    let nextMember = -1; // the key quote of the member after it
    let coded = false; // a code or system member (a Coding, not a Reference)
    let type: string | undefined; // a string `type`
    let reference: string | undefined; // a string `reference`
    let resourceType: string | undefined;
    let members = 0;
    let comma = -1;
    if (this.peek() === CLOSE_BRACE) {
      this.i++;
      this.depth--;
      return;
    }
    if (s.charCodeAt(this.i) !== QUOTE) throw NOT_THIS_WAY;
    for (;;) {
      const keyQuote = this.i; // at the key's quote (checked before the loop and at each comma)
      const keyStart = keyQuote + 1;
      this.string();
      if (this.escaped) throw NOT_THIS_WAY; // a key compared by its raw text
      const keyEnd = this.i - 1;
      const keyLength = keyEnd - keyStart;
      const keyCount = this.keyCount;
      for (let k = firstKey; k < keyCount; k += 2) {
        if (keys[k + 1]! - keys[k]! === keyLength && sameText(s, keys[k]!, keyStart, keyLength)) throw NOT_THIS_WAY;
      }
      keys[keyCount] = keyStart;
      keys[keyCount + 1] = keyEnd;
      this.keyCount = keyCount + 2;
      if (members === 1 && displayStart >= 0 && commaBefore < 0) nextMember = keyQuote;
      members++;
      if (this.peek() !== COLON) throw NOT_THIS_WAY;
      this.i++;
      const isString = this.peek() === QUOTE;
      const valueStart = this.i;
      if (isString) this.string();
      else this.value();
      // Which member is it? Compared only for the few lengths and first letters that matter.
      const first = s.charCodeAt(keyStart);
      switch (keyLength) {
        case 4:
          if (first === 0x63 /* c */ && s.startsWith('code', keyStart)) coded = true;
          else if (first === 0x74 /* t */ && isString && s.startsWith('type', keyStart)) type = this.readValue(valueStart);
          break;
        case 6:
          if (first === 0x73 /* s */ && s.startsWith('system', keyStart)) coded = true;
          break;
        case 7:
          if (first === 0x64 /* d */ && isString && s.startsWith('display', keyStart)) {
            displayStart = keyQuote;
            displayEnd = this.i;
            commaBefore = comma;
          }
          break;
        case 9:
          if (first === 0x72 /* r */ && isString && s.startsWith('reference', keyStart)) reference = this.readValue(valueStart);
          // A member named __proto__ is an own member after JSON.parse but a prototype once an object is copied: left to the object path.
          else if (first === 0x5f /* _ */ && s.startsWith('__proto__', keyStart)) throw NOT_THIS_WAY;
          break;
        case 12:
          if (first === 0x72 /* r */ && isString && s.startsWith('resourceType', keyStart)) {
            resourceType = this.readValue(valueStart);
            if (PERSON_TYPES.has(resourceType)) throw NOT_THIS_WAY; // as soon as it is known (usually the first key)
          }
          break;
      }
      const c = this.peek();
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) throw NOT_THIS_WAY;
      comma = this.i;
      this.i++;
      if (this.peek() !== QUOTE) throw NOT_THIS_WAY;
    }
    this.i++;
    this.keyCount = firstKey;
    if (resourceType !== undefined && this.depth === 1) this.topType = resourceType;
    this.depth--;
    if (displayStart < 0 || coded) return;
    // isPersonReference: by `type` when it is a string, else by the reference's target; none or unknown counts as a person.
    if (type !== undefined ? PERSON_TYPES.has(type) : reference === undefined || isPersonTarget(reference)) {
      if (commaBefore >= 0) this.cut(commaBefore, displayEnd);
      else if (nextMember >= 0) this.cut(displayStart, nextMember);
      else throw NOT_THIS_WAY; // the display is all there is: the object path removes the reference (no `{}`)
    }
  }
}

/** The last reference asked about and its answer: a patient's resources follow one another, each naming the patient. */
let lastReference = '';
let lastAnswer = false;

function isPersonTarget(reference: string): boolean {
  if (reference === lastReference) return lastAnswer;
  const type = referencedType(reference);
  lastReference = reference;
  return (lastAnswer = type === undefined || PERSON_TYPES.has(type));
}

function sameText(s: string, a: number, b: number, length: number): boolean {
  for (let k = 0; k < length; k++) if (s.charCodeAt(a + k) !== s.charCodeAt(b + k)) return false;
  return true;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

const scanner = new ExportTextScanner();
