/**
 * The export profile: the patient-controlled de-identification of
 * HealthClaw's `export_healthex.py`, exactly as `contracts/healthclaw.md`
 * states it, plus two things the script does not do:
 *
 * - `Person` and `RelatedPerson` lose the same elements as `Patient` (a
 *   HealthEx `$everything` returns a Person); only a Patient gets the
 *   `urn:healthclaw:patient` identifier, since it names the patient.
 * - Their narrative (`text`) goes too: it restates the name and address
 *   the contract removes (a generated Patient narrative is exactly that).
 * - A reference to a Patient, Person or RelatedPerson loses its `display`
 *   in every resource (HealthEx writes the patient's name there). A
 *   reference whose target type cannot be told (`urn:uuid:`, `#contained`,
 *   identifier or display only) is treated as one: it may name a person.
 *
 * A reference left with nothing once its display is gone (`{"display": "Lin,
 * Derrick"}`) is removed rather than written as `{}` (FHIR JSON has no empty
 * objects), and so is an element or list that this leaves empty.
 *
 * Ids are kept: the export feeds an import that upserts on (type, id), and
 * the contract says only Patient changes. The walk is copy-on-write: a
 * resource with no such display is returned as it is (the same object).
 */
import type { Resource } from '../types.js';
import { PERSON_TYPES } from './fhirTypes.js';
import { referencedType, type Pseudonymizer } from './pseudonym.js';
import type { DeidReport } from './report.js';

type Json = Record<string, unknown>;

const REMOVED_ELEMENTS = ['name', 'address', 'telecom', 'photo', 'contact'];
/** Removed beyond the contract (see above); counted apart so the account shows the difference. */
const REMOVED_NARRATIVE = 'text';
const EHR_IDENTIFIER_SYSTEMS: ReadonlySet<string> = new Set([
  'http://open.epic.com/FHIR/StructureDefinition/patient-dstu2-fhir-id',
  'http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id',
]);
const EHR_IDENTIFIER_TYPES: ReadonlySet<string> = new Set([
  'MRN', 'EPIC', 'FHIR', 'FHIR STU3', 'CEID', 'EID', 'EMPI', 'WEPIC', 'MEDIPAC', 'INTERNAL', 'WPRINTERNAL', 'EXTERNAL',
]);
export const HEALTHCLAW_PATIENT_SYSTEM = 'urn:healthclaw:patient';
/** What `walk` returns for an element that the profile left empty: its parent drops it. */
const EMPTIED = Symbol('emptied');

export interface ExportConfig {
  pseudonyms: Pseudonymizer;
  report: DeidReport;
}

export class ExportProfile {
  private readonly path: string[] = [];

  constructor(private readonly config: ExportConfig) {}

  apply(resource: Resource): Resource {
    this.path.length = 0;
    const out = this.walk(resource);
    return (out === EMPTIED ? {} : out) as Resource;
  }

  /** Patient, Person, RelatedPerson (at any depth): `out` is a copy the walk made, ours to change. */
  private person(out: Json, original: Json): Json {
    const { report } = this.config;
    const type = out.resourceType;
    const at = report.tracksPaths ? this.path.join('.') + '.' : '';
    for (const key of REMOVED_ELEMENTS) {
      if (key in out) {
        delete out[key];
        report.record(at + key, 'removed', key);
      }
    }
    if (REMOVED_NARRATIVE in out) {
      delete out[REMOVED_NARRATIVE];
      report.record(at + REMOVED_NARRATIVE, 'removed', 'Narrative');
    }
    let identifiers = Array.isArray(out.identifier) ? (out.identifier as unknown[]) : undefined;
    if (identifiers) {
      const kept = identifiers.filter((id) => !isEhrIdentifier(id));
      for (let n = identifiers.length - kept.length; n > 0; n--) report.record(at + 'identifier', 'identifier-dropped', 'EHR identifier');
      identifiers = kept;
      out.identifier = kept;
    }
    if (type === 'Patient' && !identifiers?.some((id) => (id as Json | null)?.system === HEALTHCLAW_PATIENT_SYSTEM)) {
      // A Patient without id still gets a stable value: the HMAC of its JSON text.
      const basis = typeof original.id === 'string' ? original.id : JSON.stringify(original);
      const value = this.config.pseudonyms.healthclawPatient(basis);
      out.identifier = [{ use: 'secondary', system: HEALTHCLAW_PATIENT_SYSTEM, value }, ...(identifiers ?? [])];
      report.record(at + 'identifier', 'identifier-inserted');
    }
    return out;
  }

  /** Copy-on-write: the same value back when no person display was found under it; EMPTIED when nothing is left of it. */
  private walk(value: unknown): unknown {
    if (Array.isArray(value)) {
      let out: unknown[] | undefined;
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        const result = item !== null && typeof item === 'object' ? this.walk(item) : item;
        if (result === item && out === undefined) continue;
        out ??= value.slice(0, i);
        if (result !== EMPTIED) out.push(result);
      }
      if (out === undefined) return value;
      return out.length > 0 ? out : EMPTIED;
    }
    const obj = value as Json;
    const paths = this.config.report.tracksPaths;
    let out: Json | undefined;
    // Paths (--explain) need the resource type before the members; otherwise the loop finds it.
    let type: unknown = paths ? obj.resourceType : undefined;
    const pushed = typeof type === 'string';
    if (pushed) this.path.push(this.path.length === 0 ? (type as string) : `ofType(${type as string})`);
    // One pass over the keys: recurse into objects, and note the primitive
    // keys that tell a resource, a Reference, a Coding (key compares, no property probes).
    let display = false;
    let coded = false;
    for (const key in obj) {
      const item = obj[key];
      if (item === null || typeof item !== 'object') {
        if (key === 'display') display = true;
        else if (key === 'code' || key === 'system') coded = true;
        else if (key === 'resourceType') type = item;
        continue;
      }
      // The path is kept for --explain only: it costs a push and a pop per member.
      if (paths) this.path.push(key);
      const result = this.walk(item);
      if (paths) this.path.pop();
      if (result === item) continue;
      out ??= { ...obj };
      if (result === EMPTIED) delete out[key];
      else out[key] = result;
    }
    if (display && !coded && typeof obj.display === 'string' && isPersonReference(obj)) {
      out = withoutKey(out ?? obj, 'display');
      this.config.report.record(paths ? this.path.join('.') + '.display' : '', 'display-removed', 'Reference.display');
    }
    if (typeof type === 'string' && PERSON_TYPES.has(type)) out = this.person(out ?? { ...obj }, obj);
    if (pushed) this.path.pop();
    return out === undefined ? obj : isEmpty(out) ? EMPTIED : out;
  }
}

/** The contract's drop rule for a Patient identifier. */
export function isEhrIdentifier(id: unknown): boolean {
  if (id === null || typeof id !== 'object') return false;
  const { system, type } = id as { system?: unknown; type?: { text?: unknown } };
  if (typeof system === 'string' && (system.startsWith('urn:oid:') || EHR_IDENTIFIER_SYSTEMS.has(system))) return true;
  const text = type?.text;
  return typeof text === 'string' && EHR_IDENTIFIER_TYPES.has(text.toUpperCase());
}

/**
 * A Reference (not a Coding) whose target is a Patient, Person or
 * RelatedPerson, or cannot be told.
 */
function isPersonReference(obj: Json): boolean {
  if (obj.code !== undefined || obj.system !== undefined) return false;
  if (typeof obj.type === 'string') return PERSON_TYPES.has(obj.type);
  const ref = obj.reference;
  if (typeof ref !== 'string') return true;
  const type = referencedType(ref);
  return type === undefined || PERSON_TYPES.has(type);
}

function isEmpty(obj: Json): boolean {
  for (const _ in obj) return false;
  return true;
}

function withoutKey(obj: Json, drop: string): Json {
  const out: Json = {};
  for (const key in obj) if (key !== drop) out[key] = obj[key];
  return out;
}
