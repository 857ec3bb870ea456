/**
 * What the de-identifier knows about FHIR R4 data types, in one place.
 *
 * FHIR JSON carries no type names below the resource, so a datatype is told
 * from the element's name where R4 gives that name one type everywhere
 * (`telecom` is always ContactPoint, `identifier` always Identifier,
 * `*Date` always a date …) and otherwise from the value's shape (an object
 * with `contentType` and `data` is an Attachment, one with `system`/`code`
 * a Coding …). None of this is a list of resource paths: a resource type
 * nobody listed is covered by the same rules.
 */

export const DATA_ABSENT_REASON = 'http://hl7.org/fhir/StructureDefinition/data-absent-reason';

/**
 * The mark left where a value was removed: an element holding only the
 * data-absent-reason extension `masked`, so later stages can tell "removed"
 * from "never there". Shared and frozen: output objects point at it.
 */
export const MASKED = deepFreeze({ extension: [{ url: DATA_ABSENT_REASON, valueCode: 'masked' }] });
/** The mark for a repeating element (`_given`, `_line`, a removed `name[]`). */
export const MASKED_LIST = deepFreeze([MASKED]);

/** Extensions kept by safe-harbor (all others are dropped and counted by URL). */
export const ALLOWED_EXTENSIONS: ReadonlySet<string> = new Set([
  'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
  'http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity',
  'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex',
  'http://hl7.org/fhir/us/core/StructureDefinition/us-core-genderIdentity',
  DATA_ABSENT_REASON,
  'https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag',
]);

/**
 * HL7 security labels (v3 SecurityAlterationIntegrityObservationValue) for
 * what was done: REDACTED (removed), ABSTRED (dates, ZIPs, ages
 * generalised or shifted), PSEUDED (ids pseudonymised). Without `display`
 * ("redacted", "abstracted", "pseudonymized"): the codes say it, and three
 * displays on every resource cost more output than the rest of the labels.
 */
export const SECURITY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
export const SECURITY_LABELS = deepFreeze({
  REDACTED: { system: SECURITY_SYSTEM, code: 'REDACTED' },
  ABSTRED: { system: SECURITY_SYSTEM, code: 'ABSTRED' },
  PSEUDED: { system: SECURITY_SYSTEM, code: 'PSEUDED' },
} as const);

/**
 * Code systems whose displays are the standard's own names for their codes
 * (LOINC, SNOMED CT, RxNorm, ICD, CPT, CVX, NDC, UCUM, HL7 terminology,
 * BCP 47 languages, CDC race and ethnicity): kept by safe-harbor as they are.
 */
const STANDARD_SYSTEMS: ReadonlySet<string> = new Set([
  'http://loinc.org', 'http://snomed.info/sct', 'http://www.nlm.nih.gov/research/umls/rxnorm', 'http://hl7.org/fhir/sid/icd-10',
  'http://hl7.org/fhir/sid/icd-10-cm', 'http://hl7.org/fhir/sid/icd-9-cm', 'http://www.cms.gov/Medicare/Coding/ICD10',
  'http://www.ama-assn.org/go/cpt', 'http://hl7.org/fhir/sid/cvx', 'http://hl7.org/fhir/sid/ndc', 'http://unitsofmeasure.org',
  'urn:ietf:bcp:47', 'urn:oid:2.16.840.1.113883.6.238',
]);

export function isStandardSystem(system: unknown): boolean {
  return (
    typeof system === 'string' &&
    (STANDARD_SYSTEMS.has(system) || system.startsWith('http://terminology.hl7.org/') || system.startsWith('http://hl7.org/fhir/'))
  );
}

/** Resource types whose references lose `display` in the export profile (it is a person's name). */
export const PERSON_TYPES: ReadonlySet<string> = new Set(['Patient', 'Person', 'RelatedPerson']);

/**
 * Free-text string elements: removed (and marked) wherever they appear.
 * `text` is handled apart (in a CodeableConcept it may name the concept: see SafeHarbor.conceptText).
 */
export const FREE_TEXT_KEYS: ReadonlySet<string> = new Set([
  'comment', 'comments', 'description', 'note', 'valueString', 'valueMarkdown', 'valueUrl', 'valueUri',
  'valueBase64Binary', 'contentString', 'authorString', 'summary', 'conclusion', 'patientInstruction',
  'title', 'alias', 'sourceString', 'answerString', 'data', 'ifNoneExist', 'ifMatch', 'ifNoneMatch', 'ifModifiedSince',
  'outcomeString', 'reasonString', 'detailString', 'sourceUri', 'div',
  // AuditEvent.entity.query: a search, base64, whose parameters may be a name
  'query',
  // a string `address` is a URL (Endpoint) or a network address (AuditEvent)
  'address',
  // Subscription.criteria: a search, whose parameters may be a patient's identifier
  'criteria',
]);

/**
 * A free-text element: listed, or a choice element of type string or
 * markdown (`onsetString`, `ageString`, `bornString`, `deceasedString` …:
 * "about 95", "1920", a relative's name).
 */
export function isFreeTextKey(key: string): boolean {
  return FREE_TEXT_KEYS.has(key) || (key.length > 6 && key.endsWith('String')) || (key.length > 8 && key.endsWith('Markdown'));
}

/** Strings that are identifiers of a person or device without being an Identifier. */
export const IDENTIFIER_STRING_KEYS: ReadonlySet<string> = new Set([
  'serialNumber', 'subscriberId', 'preAuthRef', 'distinctIdentifier', 'carrierHRF', 'carrierAIDC', 'deviceIdentifier',
  'accountNumber', 'policyNumber',
  // a DICOM UID (ImagingStudy series and instances), a user's other id (AuditEvent.agent.altId)
  'uid', 'altId',
]);

/**
 * Resource types whose string `name` names a place, an organisation, a
 * device or a definition, never a person. Elsewhere a string `name` may be
 * one (`Account.name` is often the guarantor's "SMITH,JOHN", `Group.name` a
 * family's, `AuditEvent.agent.name` a user's) and safe-harbor masks it.
 */
const NAMES_NO_PERSON: ReadonlySet<string> = new Set([
  'Organization', 'Location', 'HealthcareService', 'Endpoint', 'InsurancePlan', 'Device', 'CodeSystem', 'ValueSet',
  'ConceptMap', 'NamingSystem', 'CapabilityStatement', 'TerminologyCapabilities', 'StructureMap', 'ImplementationGuide',
  'Questionnaire', 'Library', 'Measure', 'SearchParameter', 'TestScript', 'ExampleScenario', 'EvidenceVariable', 'Evidence',
  'Parameters', // parameter names (`patient`, `return`)
]);

/** Whether a string `name` in a resource of this type may be a person's (see NAMES_NO_PERSON; `*Definition` types never). */
export function mayNamePerson(resourceType: string): boolean {
  return !NAMES_NO_PERSON.has(resourceType) && !resourceType.endsWith('Definition');
}

/** Coded or structural strings, kept as they are (never free text, never a date). */
export const CODE_KEYS: ReadonlySet<string> = new Set([
  'resourceType', 'id', 'code', 'system', 'version', 'url', 'unit', 'status', 'use', 'type', 'language', 'contentType',
  'linkId', 'comparator', 'state', 'country', 'gender', 'profile', 'valueCode', 'valueId', 'valueOid', 'valueUuid',
  'intent', 'priority', 'mode', 'method', 'relation', 'versionId', 'source', 'fullUrl',
  // Money.currency; a string `outcome` is a code wherever R4 has one (claims, AuditEvent); so are a string
  // `category` and `criticality` (AllergyIntolerance)
  'currency', 'outcome', 'category', 'criticality',
]);

/** Elements typed date, dateTime or instant in R4 that do not end in Date/DateTime/Instant. */
const DATE_NAMES: ReadonlySet<string> = new Set([
  'date', 'start', 'end', 'issued', 'recorded', 'lastUpdated', 'timestamp', 'created', 'authoredOn', 'time', 'when',
  'sent', 'received', 'whenPrepared', 'whenHandedOver', 'occurrence', 'dateWritten', 'asserted', 'lastModified',
  'dateTime', 'instant', 'birthDate', 'collectedTime', 'receivedTime', 'effective',
]);

/** True for an element whose type is date, dateTime or instant. */
export function isDateKey(key: string): boolean {
  return DATE_NAMES.has(key) || key.endsWith('Date') || key.endsWith('DateTime') || key.endsWith('Instant');
}

/**
 * Instants (full precision required, so a year is not a valid value):
 * these are removed and marked rather than cut to the year.
 */
const INSTANT_NAMES: ReadonlySet<string> = new Set(['issued', 'recorded', 'lastUpdated', 'timestamp', 'when']);
const INSTANT_BY_TYPE: Readonly<Record<string, ReadonlySet<string>>> = {
  Appointment: new Set(['start', 'end']),
  Slot: new Set(['start', 'end']),
  DocumentReference: new Set(['date']),
};

export function isInstantKey(key: string, resourceType: string, atRoot: boolean): boolean {
  return INSTANT_NAMES.has(key) || key.endsWith('Instant') || (atRoot && INSTANT_BY_TYPE[resourceType]?.has(key) === true);
}

/** True for an element typed Identifier (`identifier`, `masterIdentifier`, `valueIdentifier` …, ServiceRequest's `requisition`). */
export function isIdentifierKey(key: string): boolean {
  return key === 'identifier' || key === 'requisition' || (key.endsWith('Identifier') && key !== 'distinctIdentifier' && key !== 'deviceIdentifier');
}

type Json = Record<string, unknown>;

/** A Coding (or something with a code, not a Reference): its `display` names the code and is kept. */
export function isCodingShape(shape: number): boolean {
  return (shape & (Shape.Code | Shape.System)) !== 0 && (shape & Shape.Reference) === 0;
}

/** A CodeableConcept (only `coding`, `text`, `id`, `extension`): its `text` may name the concept. */
export function isCodeableConceptShape(shape: number): boolean {
  return (shape & Shape.AllCodeableConcept) !== 0;
}

/**
 * Shapes: a data type met under an element name that does not tell it
 * (`valueHumanName`, `locationAddress`, an Attachment in `content` …) is
 * recognised from its keys. One pass over the keys with one Map lookup
 * each gives both which telling keys are present and whether every key
 * belongs to a type: cheaper than probing each type's keys on objects of
 * hundreds of different shapes.
 */
export const enum Shape {
  // keys that are present (any of them)
  NameCore = 1 << 0, // family, given
  AddressCore = 1 << 1, // line, city, postalCode, district
  AttachmentCore = 1 << 2, // data, url, contentType
  Value = 1 << 3,
  System = 1 << 4,
  Code = 1 << 5,
  Unit = 1 << 6,
  TypeOrAssigner = 1 << 7,
  ResourceType = 1 << 8,
  Reference = 1 << 9,
  // every key belongs to the type
  AllName = 1 << 16,
  AllAddress = 1 << 17,
  AllAttachment = 1 << 18,
  AllCodeableConcept = 1 << 19,
}

const MEMBER_BITS = Shape.AllName | Shape.AllAddress | Shape.AllAttachment | Shape.AllCodeableConcept;
const SHAPE_KEYS = new Map<string, number>();
function shapeKeys(bits: number, keys: string[]): void {
  for (const key of keys) SHAPE_KEYS.set(key, (SHAPE_KEYS.get(key) ?? 0) | bits);
}
shapeKeys(Shape.NameCore, ['family', 'given']);
shapeKeys(Shape.AddressCore, ['line', 'city', 'postalCode', 'district']);
shapeKeys(Shape.AttachmentCore, ['data', 'url', 'contentType']);
shapeKeys(Shape.Value, ['value']);
shapeKeys(Shape.System, ['system']);
shapeKeys(Shape.Code, ['code']);
shapeKeys(Shape.Unit, ['unit']);
shapeKeys(Shape.TypeOrAssigner, ['type', 'assigner']);
shapeKeys(Shape.ResourceType, ['resourceType']);
shapeKeys(Shape.Reference, ['reference']);
const COMMON = ['id', 'extension'];
shapeKeys(Shape.AllName, [...COMMON, 'use', 'text', 'family', 'given', 'prefix', 'suffix', 'period', '_family', '_given', '_text', '_prefix', '_suffix']);
shapeKeys(Shape.AllAddress, [
  ...COMMON, 'use', 'type', 'text', 'line', 'city', 'district', 'state', 'postalCode', 'country', 'period',
  '_text', '_line', '_city', '_district', '_state', '_postalCode', '_country',
]);
shapeKeys(Shape.AllCodeableConcept, [...COMMON, 'coding', 'text', '_text']);
shapeKeys(Shape.AllAttachment, [
  ...COMMON, 'contentType', 'language', 'data', 'url', 'size', 'hash', 'title', 'creation',
  '_contentType', '_language', '_data', '_url', '_size', '_hash', '_title', '_creation',
]);

/** The Shape bits of `obj`. */
export function shapeOf(obj: Json): number {
  let present = 0;
  let all = MEMBER_BITS;
  for (const key in obj) {
    const bits = SHAPE_KEYS.get(key) ?? 0;
    present |= bits;
    all &= bits;
  }
  return (present & ~MEMBER_BITS) | all;
}

const CONTACT_POINT_SYSTEMS: ReadonlySet<string> = new Set(['phone', 'fax', 'email', 'pager', 'url', 'sms', 'other']);

export function isAttachmentShape(shape: number): boolean {
  return (shape & Shape.AttachmentCore) !== 0 && (shape & Shape.AllAttachment) !== 0;
}

export function isHumanNameShape(shape: number): boolean {
  return (shape & Shape.NameCore) !== 0 && (shape & Shape.AllName) !== 0;
}

export function isAddressShape(shape: number): boolean {
  return (shape & Shape.AddressCore) !== 0 && (shape & Shape.AllAddress) !== 0;
}

/** A ContactPoint: a string value and a contact-point system. */
export function isContactPoint(obj: Json, shape: number): boolean {
  return (shape & (Shape.Value | Shape.System)) === (Shape.Value | Shape.System) && typeof obj.value === 'string' && CONTACT_POINT_SYSTEMS.has(obj.system as string);
}

/** An Identifier: a string `value` with a system, type or assigner, and no code. */
export function isIdentifier(obj: Json, shape: number): boolean {
  return (shape & Shape.Value) !== 0 && (shape & Shape.Code) === 0 && (shape & (Shape.System | Shape.TypeOrAssigner)) !== 0 && typeof obj.value === 'string';
}

/** Worth asking quantityYears: a value with a code or unit. */
export function mayBeQuantity(shape: number): boolean {
  return (shape & Shape.Value) !== 0 && (shape & (Shape.Code | Shape.Unit)) !== 0;
}

/** Years per unit of a time Quantity (UCUM code, or a common spelling in `unit`). */
const YEARS_PER_UNIT: ReadonlyMap<string, number> = new Map([
  ...['a', 'yr', 'yrs', 'year', 'years', 'y', 'ann'].map((unit) => [unit, 1] as const),
  ...['mo', 'mos', 'month', 'months'].map((unit) => [unit, 1 / 12] as const),
  ...['wk', 'wks', 'week', 'weeks'].map((unit) => [unit, 7 / 365.25] as const),
  ...['d', 'day', 'days'].map((unit) => [unit, 1 / 365.25] as const),
  ...['h', 'hr', 'hrs', 'hour', 'hours'].map((unit) => [unit, 1 / 8766] as const),
  ...['min', 'mins'].map((unit) => [unit, 1 / 525960] as const),
]);

/**
 * The age in years a Quantity states, when it is a Quantity of time
 * (the Age type, or an Observation value in `a`/`mo`/`d`…); else undefined.
 */
export function quantityYears(obj: Json): number | undefined {
  const value = obj.value;
  if (typeof value !== 'number') return undefined;
  const unit = typeof obj.code === 'string' ? obj.code : typeof obj.unit === 'string' ? obj.unit.toLowerCase() : undefined;
  if (unit === undefined) return undefined;
  const factor = YEARS_PER_UNIT.get(unit);
  return factor === undefined ? undefined : value * factor;
}

/** Whether a Quantity has a unit (a code or a unit string), read or not. */
export function hasUnit(obj: Json): boolean {
  return typeof obj.code === 'string' || typeof obj.unit === 'string';
}

/**
 * LOINC's codes for a person's age (Age; Age, patient-reported; Age,
 * calculated): an Observation (or component) coded so states an age in its
 * value, in years when it gives no unit.
 */
const AGE_CODES: ReadonlySet<string> = new Set(['30525-0', '21612-7', '29553-5']);
const AGE_WORD = /\bage\b/i;

/** Whether a CodeableConcept names a person's age: a LOINC age code, or "age" as a word of its text or a display. */
export function isAgeConcept(concept: unknown): boolean {
  if (concept === null || typeof concept !== 'object') return false;
  const { coding, text } = concept as Json;
  if (typeof text === 'string' && AGE_WORD.test(text)) return true;
  if (!Array.isArray(coding)) return false;
  for (const c of coding as (Json | null)[]) {
    if (c === null || typeof c !== 'object') continue;
    if (c.system === 'http://loinc.org' && AGE_CODES.has(c.code as string)) return true;
    if (typeof c.display === 'string' && AGE_WORD.test(c.display)) return true;
  }
  return false;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * A data type told by an element's name where the shape cannot tell it: a
 * choice element names its type (`valueHumanName`, `locationAddress`,
 * `onsetAge` …), and an object holding only a `text` looks like a
 * CodeableConcept but is not one under the names of TEXT_HOLDERS.
 */
export const enum NamedType {
  None,
  HumanName,
  ContactPoint,
  Address,
  Annotation,
  Attachment,
  Age,
  /** An element whose `text` is free text (a Dosage, a reference range, a process note). */
  TextHolder,
}

/** Elements of types whose `text` is free text, though a lone `text` makes them look like a CodeableConcept. */
const TEXT_HOLDERS: ReadonlySet<string> = new Set([
  'dosage', 'dosageInstruction', // Dosage (and MedicationAdministration.dosage)
  'referenceRange', // Observation.referenceRange
  'processNote', // ClaimResponse, ExplanationOfBenefit, PaymentReconciliation
  'term', 'offer', 'asset', // Contract
]);

const NAMED_TYPE_SUFFIXES: readonly (readonly [string, NamedType])[] = [
  ['HumanName', NamedType.HumanName],
  ['ContactPoint', NamedType.ContactPoint],
  ['Address', NamedType.Address],
  ['Annotation', NamedType.Annotation],
  ['Attachment', NamedType.Attachment],
  ['Dosage', NamedType.TextHolder],
  ['Age', NamedType.Age],
];

const namedTypes = new Map<string, NamedType>();

/** The type an object-valued element's name gives it (memoised as stringKind is). */
export function namedType(key: string): NamedType {
  let type = namedTypes.get(key);
  if (type === undefined) {
    type = TEXT_HOLDERS.has(key) ? NamedType.TextHolder : NamedType.None;
    for (const [suffix, named] of NAMED_TYPE_SUFFIXES) {
      if (key.endsWith(suffix)) {
        type = named;
        break;
      }
    }
    if (namedTypes.size < 10_000) namedTypes.set(key, type);
  }
  return type;
}

/** What a string element is, by its name alone (see stringKind). */
export const enum StringKind {
  Other,
  Code,
  FreeText,
  IdentifierString,
  Date,
}

const stringKinds = new Map<string, StringKind>();

/**
 * The kind of a string element by name, memoised: one Map lookup per string
 * instead of three set lookups and three suffix tests. Element names are
 * bounded by the FHIR schema; past 10,000 distinct names (hostile input)
 * the memo stops growing.
 */
export function stringKind(key: string): StringKind {
  let kind = stringKinds.get(key);
  if (kind === undefined) {
    kind = CODE_KEYS.has(key)
      ? StringKind.Code
      : isFreeTextKey(key)
        ? StringKind.FreeText
        : IDENTIFIER_STRING_KEYS.has(key)
          ? StringKind.IdentifierString
          : isDateKey(key)
            ? StringKind.Date
            : StringKind.Other;
    if (stringKinds.size < 10_000) stringKinds.set(key, kind);
  }
  return kind;
}
