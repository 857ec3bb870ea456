/**
 * The safe-harbor profile: HIPAA Safe Harbor (45 CFR 164.514(b)(2)) on any
 * FHIR R4 resource, driven by data types (see fhirTypes.ts), not by paths.
 *
 * One copy-on-write walk per resource: an object or array is copied only
 * when something under it changes, so unchanged subtrees (codings,
 * quantities) are shared with the input, which is never modified.
 */
import { RecordRejected } from '../errors.js';
import type { Resource } from '../types.js';
import { FHIR_DATE, looksLikeDate, maxAgeAt, shiftDate, type CalendarDate } from './dates.js';
import {
  ALLOWED_EXTENSIONS,
  MASKED,
  MASKED_LIST,
  SECURITY_LABELS,
  Shape,
  StringKind,
  isAddressShape,
  isAttachmentShape,
  isCodeableConceptShape,
  isCodingShape,
  isContactPoint,
  isHumanNameShape,
  isIdentifier,
  hasUnit,
  isAgeConcept,
  isIdentifierKey,
  isInstantKey,
  namedType,
  NamedType,
  mayBeQuantity,
  mayNamePerson,
  isStandardSystem,
  quantityYears,
  shapeOf,
  stringKind,
} from './fhirTypes.js';
import { referencedId, referencedType, type Pseudonymizer } from './pseudonym.js';
import type { Action, DeidReport } from './report.js';
import { safeHarborZip, type Zip3Table } from './zip3.js';

type Json = Record<string, unknown>;

export interface SafeHarborConfig {
  pseudonyms: Pseudonymizer;
  /** The day the 90+ rule is judged on. */
  asOf: CalendarDate;
  /** 0: dates become their year (Safe Harbor). n > 0: shift by the patient's keyed offset in ±n days (not Safe Harbor). */
  dateShiftDays: number;
  zip3: Zip3Table;
  report: DeidReport;
}

/** What an element becomes besides a new value. */
const REMOVE = Symbol('remove');
/** A primitive removed and marked: `_key` gets the data-absent-reason mark. */
const MASK = Symbol('mask');
/** A complex element removed and marked: `key` becomes the mark itself. */
const MASK_ELEMENT = Symbol('mask-element');

/** The datatype of the object being walked, when its members have rules of their own. */
const enum Kind {
  Plain,
  Root,
  Identifier,
  Address,
  Annotation,
  Attachment,
  Meta,
  Request,
  Response,
  /** An extension that is kept: its sub-extensions (relative URLs) are its own. */
  Extension,
  /** A Dosage, reference range or process note: its `text` is free text (see NamedType.TextHolder). */
  TextHolder,
}

/** A member replaced by one of another name: an age of 90 or more in a `valueInteger` becomes a `valueQuantity` of `>= 90`. */
class Renamed {
  constructor(
    readonly key: string,
    readonly value: unknown,
  ) {}
}

const UCUM = 'http://unitsofmeasure.org';

/** Bits of what was done to one resource, for its meta.security labels. */
const REDACTED = 1;
const ABSTRED = 2;
const PSEUDED = 4;

// Patterns the checks below share: a phone number (separators optional), a social security number, a date written 03/04/1950.
const PHONE = String.raw`\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}`;
const SSN = String.raw`\d{3}-\d{2}-\d{4}`;
const SLASH_DATE = String.raw`\d{1,2}\/\d{1,2}\/\d{2,4}`;
/** Free text (a space or line break), an e-mail address, a phone or social security number, a date written 03/04/1950. */
const FREE_TEXT_OR_CONTACT = new RegExp(String.raw`\s|@|^\+?${PHONE}$|^${SSN}$|^${SLASH_DATE}$`);
/**
 * A code that is an e-mail address, a social security number or a phone
 * number written with separators (a lab's local "GLU@1H" or a bare
 * ten-digit code is none).
 */
const CONTACT_CODE = new RegExp(String.raw`^[\w.+-]+@[\w-]+\.[\w.-]+$|^${SSN}$|^\+?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}$`);
/** A month's name or its abbreviation ("Decreased" and "Marked" are none). */
const MONTH = String.raw`(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?`;
/** A title or a relation, either case first ("Dr", "wife", "Mother"): before a capitalised word, a person's name. */
const NAMED_BY = [
  'Dr', 'Mr', 'Mrs', 'Ms', 'Miss', 'Mx', 'Prof', 'wife', 'husband', 'partner', 'son', 'daughter', 'mother', 'father',
  'brother', 'sister', 'aunt', 'uncle', 'cousin', 'niece', 'nephew', 'grandson', 'granddaughter', 'grandmother',
  'grandfather', 'friend', 'neighbor', 'neighbour', 'caregiver',
].map((word) => `[${word[0]!.toUpperCase()}${word[0]!.toLowerCase()}]${word.slice(1)}`);
/**
 * Contact details, a date finer than a year or a person named after a title
 * or a relation, anywhere in a text: an e-mail address, a phone or social
 * security number, a street address ("12 Oak Street"), a date ("03/04/1950",
 * "1950-03-04", "March 4, 1950", "4 Mar 1950", "May 2020"), "Dr. Smith",
 * "per his wife Mary". A lab's "GLUCOSE @ 1 HR", a "12 lead ECG" or a
 * "Mother's history of diabetes" is none.
 */
const IDENTIFYING_TEXT = new RegExp(
  [
    String.raw`\b(?:${NAMED_BY.join('|')})\.?\s+[A-Z][a-z]`,
    String.raw`[\w.+-]+@[\w-]+\.\w`,
    PHONE,
    SSN,
    String.raw`\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Lane|Ln|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Circle|Highway|Hwy|Parkway|Pkwy)\b`,
    String.raw`\b${SLASH_DATE}\b`,
    String.raw`\b\d{1,2}\/\d{4}\b`,
    String.raw`\b\d{4}-\d{2}-\d{2}\b`,
    String.raw`\b${MONTH}\s+(?:\d{1,2}(?:st|nd|rd|th)?,?\s+)?\d{4}\b`,
    String.raw`\b\d{1,2}\s+${MONTH},?\s+\d{4}\b`,
  ].join('|'),
);

export class SafeHarbor {
  private readonly path: string[] = [];
  private resourceType = '';
  private patient = '';
  private offset = 0;
  private hits = 0;

  constructor(private readonly config: SafeHarborConfig) {}

  apply(resource: Resource): Resource {
    this.path.length = 0;
    this.patient = '';
    return this.root(resource, false) as Resource;
  }

  private get report(): DeidReport {
    return this.config.report;
  }

  private root(res: Json, contained: boolean): Json {
    const savedType = this.resourceType;
    const savedPatient = this.patient;
    const savedOffset = this.offset;
    const savedHits = this.hits;
    const type = String(res.resourceType);
    this.resourceType = type;
    this.path.push(this.path.length === 0 ? type : `ofType(${type})`);
    if (this.config.dateShiftDays > 0) {
      this.patient = patientOf(res) ?? this.patient;
      this.offset = this.config.pseudonyms.dayOffset(this.patient, this.config.dateShiftDays);
    }
    this.hits = 0;
    let out = this.object(res, Kind.Root, shapeOf(res));
    if (!contained && this.hits !== 0) out = withSecurityLabels(out === res ? { ...res } : out, this.hits);
    this.path.pop();
    this.resourceType = savedType;
    this.patient = savedPatient;
    this.offset = savedOffset;
    this.hits |= savedHits;
    return out;
  }

  /** `shape`: shapeOf(obj), which tells the members what their parent is. */
  private object(obj: Json, kind: Kind, shape: number): Json {
    let out: Json | undefined;
    for (const key in obj) {
      const value = obj[key];
      // The extensions of a primitive that was removed go with it.
      if (out !== undefined && key.charCodeAt(0) === 95 && (out[key] === MASKED || out[key] === MASKED_LIST)) continue;
      const result = this.member(obj, shape, key, value, kind);
      if (result === value && out === undefined) continue;
      out ??= copyBefore(obj, key);
      if (result === REMOVE) continue;
      if (result === MASK) out['_' + key] = Array.isArray(value) ? MASKED_LIST : MASKED;
      else if (result === MASK_ELEMENT) out[key] = Array.isArray(value) ? MASKED_LIST : MASKED;
      else if (result instanceof Renamed) out[result.key] = result.value;
      else out[key] = result;
    }
    return out ?? obj;
  }

  /** `owner`: the object `key` is a member of (`parent` is its shape). */
  private member(owner: Json, parent: number, key: string, value: unknown, kind: Kind): unknown {
    if (value === null || typeof value !== 'object') {
      if (typeof value === 'string') return this.string(owner, parent, key, value, kind);
      if (key === 'valueInteger' && typeof value === 'number' && value >= 90 && isAgeConcept(owner.code)) {
        this.record(key, 'age-capped', ABSTRED);
        return new Renamed('valueQuantity', { value: 90, comparator: '>=', unit: 'a', system: UCUM, code: 'a' });
      }
      return value;
    }
    // An object-valued `text` is a Narrative (a CodeableConcept's text is a string).
    if (key === 'text' && !Array.isArray(value)) return this.remove(key, 'Narrative');
    if (kind === Kind.Root) {
      if (key === 'meta') return this.descend(key, value as Json, Kind.Meta);
      if (key === 'contained' && Array.isArray(value)) return this.contained(value);
    }
    switch (key) {
      case 'extension':
        return this.extensions(value, kind === Kind.Extension);
      case 'modifierExtension':
        return this.modifierExtensions(value, kind === Kind.Extension);
      case 'name':
        return this.maskElement(key, 'HumanName');
      case 'telecom':
        return this.maskElement(key, 'ContactPoint');
      case 'photo':
        return this.maskElement(key, 'Attachment (photo)');
      case 'udiCarrier':
        return this.maskElement(key, 'UDI');
      case 'position':
        return this.remove(key, 'geolocation');
      case 'address':
        return this.typed(key, value, Kind.Address);
      case 'note':
        return this.typed(key, value, Kind.Annotation);
      case 'link':
        // Bundle.link / entry.link: search URLs, whose parameters may be identifiers.
        if (Array.isArray(value) && typeof (value[0] as Json | undefined)?.relation === 'string') return this.remove(key, 'Bundle.link');
        break;
      case 'request':
        if (typeof (value as Json).method === 'string') return this.descend(key, value as Json, Kind.Request);
        break;
      case 'response':
        if (typeof (value as Json).status === 'string') return this.descend(key, value as Json, Kind.Response);
        break;
    }
    if (isIdentifierKey(key)) return this.typed(key, value, Kind.Identifier);
    switch (namedType(key)) {
      case NamedType.HumanName:
        return this.maskElement(key, 'HumanName');
      case NamedType.ContactPoint:
        return this.maskElement(key, 'ContactPoint');
      case NamedType.Address:
        return this.typed(key, value, Kind.Address);
      case NamedType.Annotation:
        return this.typed(key, value, Kind.Annotation);
      case NamedType.Attachment:
        return this.typed(key, value, Kind.Attachment);
      case NamedType.TextHolder:
        return this.typed(key, value, Kind.TextHolder);
      case NamedType.Age:
        // The Age type: a value with no unit, or one hx cannot read, is taken as years.
        if (!Array.isArray(value)) return this.age(key, value as Json, quantityYears(value as Json) ?? (value as Json).value);
        break;
    }
    // An age Observation's value: in years when it has no unit.
    if (key === 'valueQuantity' && !Array.isArray(value) && isAgeConcept(owner.code)) {
      const quantity = value as Json;
      return this.age(key, quantity, quantityYears(quantity) ?? (hasUnit(quantity) ? undefined : quantity.value));
    }
    if (Array.isArray(value)) return this.array(owner, parent, key, value, kind);
    return this.objectValue(key, value as Json);
  }

  /** An object met as a member (or an array item): a resource, a data type told by its shape, or plain. */
  private objectValue(key: string, obj: Json): unknown {
    const shape = shapeOf(obj);
    if (shape & Shape.ResourceType && typeof obj.resourceType === 'string') {
      this.path.push(key);
      const out = this.root(obj, false);
      this.path.pop();
      return out;
    }
    if (isAttachmentShape(shape)) return this.descend(key, obj, Kind.Attachment, shape);
    if (isHumanNameShape(shape)) return this.maskElement(key, 'HumanName');
    if (isContactPoint(obj, shape)) return this.maskElement(key, 'ContactPoint');
    if (isAddressShape(shape)) return this.descend(key, obj, Kind.Address, shape);
    if (isIdentifier(obj, shape)) return this.descend(key, obj, Kind.Identifier, shape);
    if (mayBeQuantity(shape)) return this.age(key, obj, quantityYears(obj), shape);
    return this.descend(key, obj, Kind.Plain, shape);
  }

  /** A Quantity that may state an age (`years`, when it does): capped at `>= 90` over 89, else walked. */
  private age(key: string, obj: Json, years: unknown, shape = shapeOf(obj)): unknown {
    const walked = this.descend(key, obj, Kind.Plain, shape);
    if (typeof years !== 'number' || years < 90 || walked === REMOVE) return walked;
    this.path.push(key);
    this.record('value', 'age-capped', ABSTRED);
    this.path.pop();
    const out: Json = { ...walked, value: 90, comparator: '>=' };
    if (obj.code !== undefined) out.code = 'a';
    if (typeof obj.unit !== 'string' || (quantityYears({ value: 1, unit: obj.unit }) ?? 0) !== 1) out.unit = 'a';
    return out;
  }

  /** The walked object, or REMOVE when all its members went (an empty element is not valid FHIR). */
  private descend(key: string, obj: Json, kind: Kind, shape = shapeOf(obj)): Json | typeof REMOVE {
    this.path.push(key);
    const out = this.object(obj, kind, shape);
    this.path.pop();
    return out !== obj && isEmpty(out) ? REMOVE : out;
  }

  private array(owner: Json, parent: number, key: string, arr: unknown[], kind: Kind): unknown {
    let out: unknown[] | undefined;
    for (let i = 0; i < arr.length; i++) {
      const item = arr[i];
      let result: unknown = item;
      if (item !== null && typeof item === 'object') result = this.objectValue(key, item as Json);
      else if (typeof item === 'string') {
        result = this.string(owner, parent, key, item, kind);
        if (result === MASK) return MASK; // a repeating primitive goes as a whole
      }
      if (result === item && out === undefined) continue;
      out ??= arr.slice(0, i);
      if (result === MASK_ELEMENT) out.push(MASKED);
      else if (result !== REMOVE) out.push(result);
    }
    return out === undefined ? arr : out.length > 0 ? out : REMOVE;
  }

  /** Objects (or a list of them) of a datatype with rules of its own; anything else in their place is masked. */
  private typed(key: string, value: unknown, kind: Kind): unknown {
    if (!Array.isArray(value)) {
      return value !== null && typeof value === 'object' ? this.descend(key, value as Json, kind) : this.mask(key, 'unexpected value');
    }
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (item === null || typeof item !== 'object') return this.mask(key, 'unexpected value');
      const result = this.descend(key, item as Json, kind);
      if (result === item && out === undefined) continue;
      out ??= value.slice(0, i);
      if (result !== REMOVE) out.push(result);
    }
    return out === undefined ? value : out.length > 0 ? out : REMOVE;
  }

  private contained(list: unknown[]): unknown[] {
    this.path.push('contained');
    const out = list.map((item) => (item !== null && typeof item === 'object' && !Array.isArray(item) ? this.root(item as Json, true) : item));
    this.path.pop();
    return out;
  }

  private string(owner: Json, parent: number, key: string, value: string, kind: Kind): unknown {
    switch (kind) {
      case Kind.Root:
        if (key === 'id') return this.pseudonymise(key, this.config.pseudonyms.id(value), value);
        // A device's network address and lot number identify it (with its serial number and UDI).
        if (this.resourceType === 'Device' && (key === 'url' || key === 'lotNumber')) return this.mask(key, `Device.${key}`);
        break;
      case Kind.TextHolder:
        if (key === 'text') return this.mask(key, 'free text');
        break;
      case Kind.Identifier:
        if (key === 'value') return this.mask(key, 'Identifier.value');
        break;
      case Kind.Address:
        if (key === 'postalCode') return this.zip(key, value);
        if (key === 'line' || key === 'city' || key === 'district' || key === 'text') return this.mask(key, `Address.${key}`);
        break;
      case Kind.Annotation:
        if (key === 'text') return this.mask(key, 'Annotation.text');
        break;
      case Kind.Attachment:
        if (key === 'data' || key === 'url' || key === 'title' || key === 'hash') return this.mask(key, `Attachment.${key}`);
        break;
      case Kind.Meta:
        if (key === 'lastUpdated' && this.config.dateShiftDays === 0) return this.remove(key, 'meta.lastUpdated');
        break;
      case Kind.Request:
        if (key === 'url') {
          const url = this.config.pseudonyms.requestUrl(value);
          if (url === undefined) throw new RecordRejected(`${this.pathOf(key)}: a conditional or malformed URL cannot be pseudonymised`);
          return this.pseudonymise(key, url, value);
        }
        break;
      case Kind.Response:
        if (key === 'location') return this.reference(key, value);
        break;
    }
    switch (key) {
      case 'reference':
      case 'fullUrl':
        return this.reference(key, value);
      case 'code':
        // A local code that is an e-mail address, a phone or social security number is one (codes are kept otherwise).
        if (CONTACT_CODE.test(value) && isCodingShape(parent) && !isStandardSystem(owner.system)) return this.mask(key, 'Coding.code (contact details)');
        break;
      case 'display':
        if (!isCodingShape(parent)) return this.mask(key, 'Reference.display');
        // A standard system's display names its code; a local one's is text someone wrote, checked like a text-only concept's.
        if (isStandardSystem(owner.system)) return value;
        if (IDENTIFYING_TEXT.test(value)) return this.mask(key, 'Coding.display (contact details, a date or a name)');
        return this.kept(key, 'local-display', value);
      case 'text':
        return isCodeableConceptShape(parent) ? this.conceptText(owner, value) : this.mask(key, 'free text');
      case 'name':
        if (mayNamePerson(this.resourceType)) return this.mask(key, 'name (string)');
        break;
    }
    switch (stringKind(key)) {
      case StringKind.Code:
        return value;
      case StringKind.FreeText:
        return this.mask(key, 'free text');
      case StringKind.IdentifierString:
        return this.mask(key, 'identifier (string)');
      case StringKind.Date:
        return this.date(key, value, kind, true);
    }
    if (looksLikeDate(value)) return this.date(key, value, kind, false);
    if (FREE_TEXT_OR_CONTACT.test(value)) return this.mask(key, 'free text');
    return this.kept(key, 'string', value);
  }

  /** `value`, noted for --explain as kept on a judgement (see DeidReport.kept). */
  private kept(key: string, why: string, value: string): string {
    if (this.report.tracksPaths) this.report.kept(this.pathOf(key), why);
    return value;
  }

  /**
   * A CodeableConcept's `text`: kept when it says nothing its codings'
   * displays do not (every word of it is a word of a display this profile
   * keeps: "Blood Pressure" beside LOINC's "Blood pressure systolic and
   * diastolic"), so it cannot carry a name or a number the output does not
   * show anyway. When the codings have displays and the text says more, it
   * may be anything a person typed ("never smoker, per his wife Mary"):
   * masked, the codes and their displays keep the meaning. With no display
   * to compare with, the text is the only name of the concept ("MRN"): kept,
   * unless it holds contact details, a date or a name after a title or a
   * relation (IDENTIFYING_TEXT), and listed by --explain.
   */
  private conceptText(concept: Json, text: string): unknown {
    const codings = concept.coding;
    let displayed = false;
    let words: Set<string> | undefined;
    if (Array.isArray(codings)) {
      const wanted = text.trim().toLowerCase();
      for (const coding of codings) {
        const display = (coding as Json | null)?.display;
        if (typeof display !== 'string') continue;
        displayed = true;
        // Only the displays that are kept as they are count: a standard system's, or a local one IDENTIFYING_TEXT passes.
        if (!isStandardSystem((coding as Json).system) && IDENTIFYING_TEXT.test(display)) continue;
        if (display.trim().toLowerCase() === wanted) return text;
        words ??= new Set();
        for (const word of wordsOf(display)) words.add(word);
      }
    }
    if (words !== undefined && wordsOf(text).every((word) => words.has(word))) return text;
    if (displayed) return this.mask('text', "CodeableConcept.text (words beyond its codings' displays)");
    return IDENTIFYING_TEXT.test(text) ? this.mask('text', 'CodeableConcept.text (contact details, a date or a name)') : this.kept('text', 'concept-text', text);
  }

  private date(key: string, value: string, kind: Kind, byName: boolean): unknown {
    if (key === 'birthDate' || key === 'bornDate') {
      const age = maxAgeAt(value, this.config.asOf);
      if (age === undefined) return this.mask(key, 'unreadable date');
      if (age >= 90) return this.mask(key, 'birth date (age 90 or over)');
    }
    if (!FHIR_DATE.test(value)) return byName ? this.mask(key, 'unreadable date') : value;
    if (this.config.dateShiftDays > 0) {
      const shifted = shiftDate(value, this.offset)!;
      if (shifted !== value) this.record(key, 'shifted', ABSTRED);
      return shifted;
    }
    if (isInstantKey(key, this.resourceType, kind === Kind.Root)) return this.mask(key, 'instant');
    if (value.length <= 4) return value;
    this.record(key, 'to-year', ABSTRED);
    return value.slice(0, 4);
  }

  private zip(key: string, value: string): unknown {
    const zip = safeHarborZip(value, this.config.zip3);
    if (zip === undefined) return this.mask(key, 'postalCode (not a US ZIP)');
    this.record(key, zip === '00000' ? 'zip-restricted' : 'zip3', ABSTRED);
    return zip;
  }

  private reference(key: string, value: string): unknown {
    const ref = this.config.pseudonyms.reference(value);
    if (ref === undefined) return this.mask(key, 'reference (conditional or malformed)');
    return this.pseudonymise(key, ref, value);
  }

  private pseudonymise(key: string, pseudonym: string, original: string): string {
    if (pseudonym !== original) this.record(key, 'pseudonymised', PSEUDED);
    return pseudonym;
  }

  /**
   * Extensions on the allow-list are kept and walked like any element (a
   * `valueString` in one is free text as anywhere else); so are the
   * sub-extensions of a kept one (relative URLs, `inKept`). Others are
   * dropped and counted by URL.
   */
  private extensions(value: unknown, inKept: boolean, key = 'extension'): unknown {
    if (!Array.isArray(value)) return this.mask(key, 'unexpected value');
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const ext = value[i] as Json | null;
      let result: unknown = REMOVE;
      if (isKeptExtension(ext, inKept)) result = this.descend(key, ext as Json, Kind.Extension);
      else {
        this.report.extensionDropped(ext?.url);
        this.record(key, 'extension-dropped', REDACTED);
      }
      if (result === ext && out === undefined) continue;
      out ??= value.slice(0, i);
      if (result !== REMOVE) out.push(result);
    }
    if (out === undefined) return value;
    return out.length > 0 ? out : REMOVE;
  }

  private modifierExtensions(value: unknown, inKept: boolean): unknown {
    if (Array.isArray(value) && value.every((ext) => isKeptExtension(ext as Json | null, inKept))) {
      return this.extensions(value, inKept, 'modifierExtension');
    }
    throw new RecordRejected(`${this.pathOf('modifierExtension')}: unknown modifier extension (its meaning cannot be kept)`);
  }

  private mask(key: string, kind: string): typeof MASK {
    this.record(key, 'masked', REDACTED, kind);
    return MASK;
  }

  private maskElement(key: string, kind: string): typeof MASK_ELEMENT {
    this.record(key, 'masked', REDACTED, kind);
    return MASK_ELEMENT;
  }

  private remove(key: string, kind: string): typeof REMOVE {
    this.record(key, 'removed', REDACTED, kind);
    return REMOVE;
  }

  private record(key: string, action: Action, bit: number, kind?: string): void {
    this.hits |= bit;
    this.report.record(this.report.tracksPaths ? this.pathOf(key) : '', action, kind);
  }

  private pathOf(key: string): string {
    return this.path.join('.') + '.' + key;
  }
}

/** The members that name the patient a resource belongs to (Task.for, ResearchSubject.individual, Account's list of subjects …). */
const PATIENT_KEYS = ['subject', 'patient', 'beneficiary', 'for', 'individual'];

/**
 * The patient a resource belongs to, for its date offset: its own id, or the
 * first Patient (or untyped) reference among its PATIENT_KEYS, or among an
 * Appointment's participants.
 */
function patientOf(res: Json): string | undefined {
  if (res.resourceType === 'Patient') return typeof res.id === 'string' ? res.id : undefined;
  for (const key of PATIENT_KEYS) {
    const id = patientIn(res[key]);
    if (id !== undefined) return id;
  }
  if (Array.isArray(res.participant)) {
    for (const participant of res.participant) {
      const id = patientIn((participant as Json | null)?.actor);
      if (id !== undefined) return id;
    }
  }
  return undefined;
}

/** The id of a Patient (or untyped) reference in `value`, a Reference or a list of them. */
function patientIn(value: unknown): string | undefined {
  for (const item of Array.isArray(value) ? value : [value]) {
    const ref = (item as Json | null | undefined)?.reference;
    if (typeof ref !== 'string') continue;
    const type = referencedType(ref);
    if (type === undefined || type === 'Patient') {
      const id = referencedId(ref);
      if (id !== undefined) return id;
    }
  }
  return undefined;
}

/** An extension safe-harbor keeps: on the allow-list, or a sub-extension (relative URL) of one it keeps. */
function isKeptExtension(ext: Json | null, inKept: boolean): boolean {
  if (ext === null || typeof ext !== 'object' || Array.isArray(ext)) return false;
  const url = ext.url;
  return typeof url === 'string' && (ALLOWED_EXTENSIONS.has(url) || (inKept && url.length > 0 && !url.includes(':')));
}

/** The words of `text`, lower case: runs of letters and digits. */
function wordsOf(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

function isEmpty(obj: Json): boolean {
  for (const _ in obj) return false;
  return true;
}

/** A new object with the members of `obj` that come before `stop`. */
function copyBefore(obj: Json, stop: string): Json {
  const out: Json = {};
  for (const key in obj) {
    if (key === stop) break;
    out[key] = obj[key];
  }
  return out;
}

/** `res` with the labels for `hits` added to meta.security (once each). */
function withSecurityLabels(res: Json, hits: number): Json {
  const meta = (res.meta !== null && typeof res.meta === 'object' ? res.meta : {}) as Json;
  const security = Array.isArray(meta.security) ? [...meta.security] : [];
  const add = (bit: number, label: Readonly<{ system: string; code: string }>) => {
    if (!(hits & bit)) return;
    if (security.some((s) => (s as Json)?.system === label.system && (s as Json)?.code === label.code)) return;
    security.push(label); // shared and frozen, as the masks
  };
  add(REDACTED, SECURITY_LABELS.REDACTED);
  add(ABSTRED, SECURITY_LABELS.ABSTRED);
  add(PSEUDED, SECURITY_LABELS.PSEUDED);
  res.meta = { ...meta, security };
  return res;
}
