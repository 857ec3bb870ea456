import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxAgeAt, shiftDate } from '../src/deid/dates.js';
import { isEhrIdentifier } from '../src/deid/exportProfile.js';
import { HmacSha256 } from '../src/deid/hmacSha256.js';
import { Pseudonymizer } from '../src/deid/pseudonym.js';
import { CENSUS_UNION_ZIP3, loadZip3Table, safeHarborZip } from '../src/deid/zip3.js';
import { RecordRejected } from '../src/errors.js';
import type { Resource } from '../src/types.js';
import { createDeidentifier, deidentify, type DeidentifyOptions, type Profile } from '../transforms/deidentify.js';
import { tempDir } from './support/cli.js';

const FIXTURES = join(import.meta.dirname, 'fixtures/deid');
const read = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as Resource;
const readLines = (name: string) =>
  readFileSync(join(FIXTURES, name), 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Resource);

/** The hand-written inputs of the goldens, in the order of the expected files. */
function goldenInputs(): Resource[] {
  return [read('patient.json'), read('observation.json'), read('bundle.json'), ...readLines('edge-cases.ndjson')];
}
const GOLDEN_OPTIONS = { key: 'golden-test-key', asOf: '2025-01-01' };
const DAR = 'http://hl7.org/fhir/StructureDefinition/data-absent-reason';
const MASKED = { extension: [{ url: DAR, valueCode: 'masked' }] };

function run(profile: Profile, resource: Resource, extra: Partial<DeidentifyOptions> = {}): Record<string, any> {
  return createDeidentifier({ profile, ...GOLDEN_OPTIONS, ...extra }).deidentify(resource);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

describe('goldens', () => {
  for (const profile of ['export', 'redact', 'safe-harbor'] as const) {
    it(`${profile}: hand-written resources give the reviewed output byte for byte`, () => {
      const d = createDeidentifier({ profile, ...GOLDEN_OPTIONS });
      const actual = goldenInputs().map((r) => JSON.stringify(d.deidentify(r)) + '\n').join('');
      const expectedPath = join(FIXTURES, `expected-${profile}.ndjson`);
      if (process.env.HX_UPDATE_GOLDENS) writeFileSync(expectedPath, actual);
      expect(actual).toBe(readFileSync(expectedPath, 'utf8'));
    });
  }

  it('never modifies its input (all profiles, frozen input)', () => {
    for (const profile of ['export', 'redact', 'safe-harbor'] as const) {
      for (const input of goldenInputs()) {
        const before = JSON.stringify(input);
        const frozen = deepFreeze(JSON.parse(before) as Resource);
        createDeidentifier({ profile, ...GOLDEN_OPTIONS }).deidentify(frozen);
        createDeidentifier({ profile, ...GOLDEN_OPTIONS, dateShiftDays: profile === 'safe-harbor' ? 40 : 0 }).deidentify(frozen);
        expect(JSON.stringify(frozen)).toBe(before);
      }
    }
  });
});

describe('export profile (contracts/healthclaw.md)', () => {
  const patient = run('export', read('patient.json'));

  it('removes name, address, telecom, photo, contact (and the narrative restating them), keeps the rest', () => {
    for (const key of ['name', 'address', 'telecom', 'photo', 'contact', 'text']) expect(patient).not.toHaveProperty(key);
    expect(patient.birthDate).toBe('1983-07-14');
    expect(patient.gender).toBe('male');
    expect(patient.communication[0].language.text).toBe('English');
    expect(patient.extension).toHaveLength(4);
    expect(patient.id).toBe('pat-lin-1');
  });

  it('drops the listed EHR identifiers, keeps others, inserts urn:healthclaw:patient first', () => {
    expect(patient.identifier.map((i: any) => i.system)).toEqual([
      'urn:healthclaw:patient',
      'http://hl7.org/fhir/sid/us-ssn',
      'https://member.example.org',
    ]);
    const inserted = patient.identifier[0];
    expect(Object.keys(inserted)).toEqual(['use', 'system', 'value']);
    expect(inserted.use).toBe('secondary');
    expect(inserted.value).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // derived from the key and the Patient id: stable, and different for another key or patient
    expect(run('export', read('patient.json')).identifier[0].value).toBe(inserted.value);
    expect(run('export', read('patient.json'), { key: 'other' }).identifier[0].value).not.toBe(inserted.value);
    expect(run('export', { ...read('patient.json'), id: 'p2' }).identifier[0].value).not.toBe(inserted.value);
  });

  it('applies each identifier drop rule of the contract', () => {
    expect(isEhrIdentifier({ system: 'urn:oid:1.2.840.114350', value: 'x' })).toBe(true);
    expect(isEhrIdentifier({ system: 'http://open.epic.com/FHIR/StructureDefinition/patient-dstu2-fhir-id' })).toBe(true);
    expect(isEhrIdentifier({ system: 'http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id' })).toBe(true);
    for (const text of ['MRN', 'epic', 'FHIR', 'fhir stu3', 'CEID', 'EID', 'EMPI', 'WEPIC', 'MEDIPAC', 'Internal', 'WPRINTERNAL', 'external']) {
      expect(isEhrIdentifier({ type: { text }, value: 'x' })).toBe(true);
    }
    expect(isEhrIdentifier({ type: { text: ' MRN' } })).toBe(false);
    expect(isEhrIdentifier({ system: 'urn:healthclaw:patient' })).toBe(false);
    expect(isEhrIdentifier({ system: 'http://hl7.org/fhir/sid/us-ssn', type: { text: 'SSN' } })).toBe(false);
  });

  it('keeps an existing urn:healthclaw:patient identifier instead of inserting one', () => {
    const input = { resourceType: 'Patient', id: 'x', identifier: [{ system: 'urn:healthclaw:patient', value: 'kept' }] };
    expect(run('export', input).identifier).toEqual([{ system: 'urn:healthclaw:patient', value: 'kept' }]);
  });

  it('removes display of references to Patient, Person, RelatedPerson (or of unknown target), everywhere', () => {
    const obs = run('export', read('observation.json'));
    expect(obs.subject).toEqual({ reference: 'Patient/pat-lin-1' });
    expect(obs.contained[1].subject).toEqual({ reference: 'Patient/pat-lin-1' });
    expect(obs.performer[1]).toEqual({ reference: 'RelatedPerson/rp-1' });
    expect(obs.performer[2].display).toBe('Wichita General');
    expect(obs.note[0].text).toContain('quit'); // the export keeps clinical text, as the contract says
    const unknown = run('export', { resourceType: 'Encounter', subject: { reference: 'urn:uuid:1', display: 'D L' }, participant: [{ individual: { display: 'X' } }] });
    expect(unknown.subject).toEqual({ reference: 'urn:uuid:1' });
    // nothing left of the participant: removed, not written as {} (the input's own empty objects stay)
    expect(unknown.participant).toBeUndefined();
    const emptied = run('export', {
      resourceType: 'Observation',
      subject: { display: 'Lin, Derrick' },
      performer: [{ display: 'Lin' }, { reference: 'Practitioner/1', display: 'Dr Who' }, { type: 'Patient', display: 'Lin' }],
      extension: [{}],
    });
    expect(emptied).toEqual({ resourceType: 'Observation', performer: [{ reference: 'Practitioner/1', display: 'Dr Who' }, { type: 'Patient' }], extension: [{}] });
  });

  it('handles Person and RelatedPerson like Patient, without the patient identifier', () => {
    for (const resourceType of ['Person', 'RelatedPerson']) {
      const out = run('export', {
        resourceType,
        id: 'x',
        name: [{ family: 'Lin' }],
        telecom: [{ value: '1' }],
        address: [{ city: 'W' }],
        photo: [{ data: 'AA' }],
        identifier: [{ type: { text: 'MRN' }, value: '1' }, { system: 'http://x', value: '2' }],
        gender: 'female',
      });
      expect(out).toEqual({ resourceType, id: 'x', identifier: [{ system: 'http://x', value: '2' }], gender: 'female' });
    }
  });

  it('returns a resource with nothing to do as the same object (fast path)', () => {
    const condition = { resourceType: 'Condition', id: 'c', subject: { reference: 'Patient/1' }, code: { coding: [{ code: 'x', display: 'y' }] } };
    expect(run('export', condition)).toBe(condition);
  });

  it('de-identifies Patients inside a Bundle read whole (--no-unpack)', () => {
    const bundle = run('export', read('bundle.json'));
    const patient = bundle.entry[0].resource;
    expect(patient.name).toBeUndefined();
    expect(patient.identifier[0].system).toBe('urn:healthclaw:patient');
    expect(bundle.entry[1].resource.subject.display).toBeUndefined();
  });
});

describe('redact profile (HealthClaw read-time redaction)', () => {
  const patient = run('redact', read('patient.json'));

  it('names to initials, identifiers to *** + last 4, birth date to year, address to state and country, telecom redacted', () => {
    expect(patient.name[0]).toEqual({ use: 'official', family: 'L.', given: ['D.', 'J.'], prefix: ['Mr.'] });
    expect(patient.name[2].text).toBeUndefined();
    expect(patient.identifier.map((i: any) => i.value)).toEqual(['***2913', '***6789', '***2345', '***0042', '***7120', '***5521']);
    expect(patient.birthDate).toBe('1983');
    expect(patient.address).toEqual([{ state: 'KS', country: 'US' }, { state: 'WY', country: 'US' }]);
    expect(patient.telecom.map((t: any) => t.value)).toEqual(['[Redacted]', '[Redacted]', '[Redacted]', '[Redacted]']);
    expect(patient.contact[0].name).toEqual({ family: 'L.', given: ['M.'] });
    expect(patient.photo).toBeUndefined();
    expect(patient.text).toBeUndefined();
    expect(patient.id).toBe('pat-lin-1');
  });

  it('removes every display, description and the listed value[x] free text, at any depth', () => {
    const out = run('redact', {
      resourceType: 'Observation',
      code: { coding: [{ system: 'http://loinc.org', code: '1', display: 'x' }] },
      subject: { reference: 'Patient/1', display: 'Lin' },
      valueString: 'Lin',
      component: [{ valueMarkdown: 'a', valueUrl: 'b', valueUri: 'c', valueCanonical: 'd', valueBase64Binary: 'e', valueDateTime: '2020-01-02T03:04:05Z' }],
      extension: [{ url: 'u', valueDate: '2020-02-03' }],
      description: 'x',
    });
    expect(out).toEqual({
      resourceType: 'Observation',
      code: { coding: [{ system: 'http://loinc.org', code: '1' }] },
      subject: { reference: 'Patient/1' },
      component: [{ valueDateTime: '2020' }],
      extension: [{ url: 'u', valueDate: '2020' }],
    });
  });
});

describe('safe-harbor profile', () => {
  const patient = run('safe-harbor', read('patient.json'));
  const obs = run('safe-harbor', read('observation.json'));

  it('masks HumanName, ContactPoint, photo with the data-absent-reason mark', () => {
    expect(patient.name).toEqual([MASKED]);
    expect(patient.telecom).toEqual([MASKED]);
    expect(patient.photo).toEqual([MASKED]);
    expect(patient.contact[0].name).toEqual(MASKED);
  });

  it('masks identifier values and keeps their system and type', () => {
    for (const id of patient.identifier) {
      expect(id.value).toBeUndefined();
      expect(id._value).toEqual(MASKED);
      expect(typeof id.system).toBe('string');
    }
    expect(patient.identifier[0].type.text).toBe('MRN');
  });

  it('keeps state, country, use, type of addresses; ZIP to 3 digits + 00; drops geolocation', () => {
    expect(patient.address[0]).toMatchObject({ use: 'home', type: 'both', state: 'KS', country: 'US', postalCode: '67200' });
    expect(patient.address[0]._line).toEqual([MASKED]);
    expect(patient.address[0]._city).toEqual(MASKED);
    expect(patient.address[0].extension).toBeUndefined();
    expect(patient.address[1].postalCode).toBe('82000');
  });

  it('cuts dates to the year, masks instants, removes narrative and meta.lastUpdated', () => {
    expect(patient.birthDate).toBe('1983');
    expect(patient.address[0].period).toEqual({ start: '2015' });
    expect(patient.text).toBeUndefined();
    expect(patient.meta.lastUpdated).toBeUndefined();
    expect(patient.meta.versionId).toBe('3');
    expect(obs.effectiveDateTime).toBe('2024');
    expect(obs.issued).toBeUndefined();
    expect(obs._issued).toEqual(MASKED);
    expect(obs.note[0]).toEqual({ _authorString: MASKED, time: '2024', _text: MASKED });
  });

  it('keeps allowed extensions, drops others (counted by URL)', () => {
    const d = createDeidentifier({ profile: 'safe-harbor', ...GOLDEN_OPTIONS });
    const out = d.deidentify(read('patient.json')) as any;
    expect(out.extension.map((e: any) => e.url)).toEqual([
      'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race',
      'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex',
    ]);
    expect(out._birthDate).toBeUndefined(); // its only extension (birthTime) was dropped
    expect(d.report.toJSON().extensionsDropped).toEqual({
      'http://hl7.org/fhir/StructureDefinition/geolocation': 1,
      'http://hl7.org/fhir/StructureDefinition/patient-birthPlace': 1,
      'http://hl7.org/fhir/StructureDefinition/patient-birthTime': 1,
      'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName': 1,
    });
  });

  it('keeps codes and their displays, quantities and CodeableConcept text that names the concept', () => {
    expect(obs.code).toEqual(read('observation.json').code);
    expect(obs.valueCodeableConcept.coding).toEqual(read('observation.json').valueCodeableConcept.coding);
    expect(obs.component).toEqual(read('observation.json').component);
    expect(patient.maritalStatus).toEqual(read('patient.json').maritalStatus);
    expect(patient.identifier[1].type.text).toBe('Social Security Number'); // no display to compare with
  });

  it("masks a CodeableConcept's text that is not one of its codings' displays, or holds contact details", () => {
    const coding = [{ system: 'http://snomed.info/sct', code: '8517006', display: 'Ex-smoker (finding)' }];
    const out = run('safe-harbor', {
      resourceType: 'Observation',
      code: { coding: [{ system: 'http://loinc.org', code: '72166-2', display: 'Tobacco smoking status' }], text: ' tobacco SMOKING status ' },
      valueCodeableConcept: { coding, text: 'quit in May, per his wife Mary' },
      interpretation: [{ coding: [{ system: 'x', code: 'H' }], text: 'High' }, { text: 'call 620-555-0143' }, { text: 'see mary@example.org' }, { text: 'Abnormal' }],
      reasonCode: [{ text: 'Fell at 12 Oak Street, Springfield' }, { text: '12 lead ECG' }, { text: 'Foley 3 Way Catheter' }],
      bodySite: { text: 'SSN 123-45-6789' },
    });
    expect(out.code.text).toBe(' tobacco SMOKING status ');
    // every word of it a word of a display: it says nothing the displays do not
    const bp = run('safe-harbor', { resourceType: 'Observation', code: { coding: [{ system: 'http://loinc.org', code: '55284-4', display: 'Blood pressure systolic and diastolic' }], text: 'Blood Pressure' } });
    expect(bp.code.text).toBe('Blood Pressure');
    expect(out.valueCodeableConcept).toEqual({ coding, _text: MASKED });
    expect(out.interpretation).toEqual([{ coding: [{ system: 'x', code: 'H' }], text: 'High' }, { _text: MASKED }, { _text: MASKED }, { text: 'Abnormal' }]);
    expect(out.bodySite).toEqual({ _text: MASKED });
    expect(out.reasonCode).toEqual([{ _text: MASKED }, { text: '12 lead ECG' }, { text: 'Foley 3 Way Catheter' }]);
  });

  it("keeps a standard system's displays as they are, and checks a local system's for contact details", () => {
    const out = run('safe-harbor', {
      resourceType: 'Observation',
      code: { coding: [{ system: 'http://loinc.org', code: '1', display: 'Call 620-555-0143 panel' }, { system: 'urn:oid:1.2.3', code: 'x', display: 'GLUCOSE @ 1 HR' }] },
      valueCodeableConcept: {
        coding: [{ system: 'urn:oid:1.2.3', code: 'y', display: 'call wife at 620-555-0143' }, { code: 'z', display: 'see jo@example.org' }],
        text: 'Call wife at 620-555-0143', // the same text as a masked display: masked too
      },
    });
    expect(out.code.coding.map((c: any) => c.display)).toEqual(['Call 620-555-0143 panel', 'GLUCOSE @ 1 HR']);
    expect(out.valueCodeableConcept).toEqual({ coding: [{ system: 'urn:oid:1.2.3', code: 'y', _display: MASKED }, { code: 'z', _display: MASKED }], _text: MASKED });
  });

  it("masks a date finer than a year in a local display or a lone concept text, and a local code that is someone's contact", () => {
    const local = (code: string, display?: string) => ({ system: 'urn:oid:1.2.3', code, ...(display ? { display } : {}) });
    const out = run('safe-harbor', {
      resourceType: 'Observation',
      code: { coding: [local('a', 'DOB 03/04/1950'), local('b', 'Seen March 4, 2020'), local('c', 'Since May 2020'), local('d', 'GLUCOSE 2 HR 75G')] },
      valueCodeableConcept: { coding: [local('123-45-6789'), local('jo@example.org'), local('(620) 555-0143'), local('6205550143'), local('GLU@1H'), { system: 'http://loinc.org', code: 'LA6576-8' }] },
      interpretation: [{ text: 'since 1950-03-04' }, { text: 'since 4 Mar 1950' }, { text: 'pain 1/2 of the time' }, { text: 'Decreased 1000 mL' }],
    });
    expect(out.code.coding.map((c: any) => c.display ?? '-')).toEqual(['-', '-', '-', 'GLUCOSE 2 HR 75G']);
    expect(out.valueCodeableConcept.coding.map((c: any) => c.code ?? '-')).toEqual(['-', '-', '-', '6205550143', 'GLU@1H', 'LA6576-8']);
    expect(out.valueCodeableConcept.coding[0]).toEqual({ system: 'urn:oid:1.2.3', _code: MASKED });
    expect(out.interpretation).toEqual([{ _text: MASKED }, { _text: MASKED }, { text: 'pain 1/2 of the time' }, { text: 'Decreased 1000 mL' }]);
    // A one-word string under an element name no rule knows, written as a date.
    const basic = run('safe-harbor', { resourceType: 'Basic', code: { text: 'x' }, seenOn: '03/04/1950', batch: '12/20' });
    expect(basic).toMatchObject({ _seenOn: MASKED, batch: '12/20' });
  });

  it('masks a lone concept text or a local display that names someone after a title or a relation', () => {
    const out = run('safe-harbor', {
      resourceType: 'Condition',
      reasonCode: [{ text: 'fell; per his wife Mary' }, { text: 'Referred by Dr. Okafor' }, { text: 'Mother Annie reports' }],
      evidence: [{ code: [{ text: "Mother's history of diabetes" }, { text: 'Chest pain' }, { text: 'Jackson Heights clinic' }] }],
      category: [{ coding: [{ system: 'urn:oid:1.2.3', code: 'x', display: 'seen with Mrs Lee' }] }],
    });
    expect(out.reasonCode).toEqual([{ _text: MASKED }, { _text: MASKED }, { _text: MASKED }]);
    expect(out.evidence[0].code).toEqual([{ text: "Mother's history of diabetes" }, { text: 'Chest pain' }, { text: 'Jackson Heights clinic' }]);
    expect(out.category[0].coding[0]).toEqual({ system: 'urn:oid:1.2.3', code: 'x', _display: MASKED });
  });

  it('walks the extensions it keeps: free text in them is masked, dates cut, unknown nested extensions dropped', () => {
    const race = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race';
    const dar = 'http://hl7.org/fhir/StructureDefinition/data-absent-reason';
    const omb = { url: 'ombCategory', valueCoding: { system: 'urn:oid:2.16.840.1.113883.6.238', code: '2106-3', display: 'White' } };
    const d = createDeidentifier({ profile: 'safe-harbor', ...GOLDEN_OPTIONS });
    const out = d.deidentify({
      resourceType: 'Patient',
      id: 'p',
      extension: [
        { url: race, extension: [omb, { url: 'text', valueString: 'John Smith' }, { url: 'http://example.org/secret', valueString: '123-45-6789' }] },
        { url: dar, valueString: 'lives at 12 Oak St', extension: [{ url: 'when', valueDateTime: '2020-03-04T05:06:07Z' }] },
        { url: 'when', valueString: 'a relative URL names a sub-extension only inside a kept extension' },
      ],
      modifierExtension: [{ url: dar, valueCode: 'unknown', extension: [{ url: 'note', valueString: 'Jane' }] }],
    }) as any;
    expect(out.extension).toEqual([
      { url: race, extension: [omb, { url: 'text', _valueString: MASKED }] },
      { url: dar, _valueString: MASKED, extension: [{ url: 'when', valueDateTime: '2020' }] },
    ]);
    expect(out.modifierExtension).toEqual([{ url: dar, valueCode: 'unknown', extension: [{ url: 'note', _valueString: MASKED }] }]);
    expect(d.report.toJSON().extensionsDropped).toEqual({ 'http://example.org/secret': 1, when: 1 });
  });

  it('masks Reference.display and pseudonymises every reference form consistently', () => {
    const p = new Pseudonymizer({ key: Buffer.from('golden-test-key') });
    expect(patient.id).toBe(p.id('pat-lin-1'));
    expect(obs.subject).toEqual({ reference: `Patient/${patient.id}`, _display: MASKED });
    expect(obs.encounter.reference).toBe(`http://ehr.example.org/fhir/Encounter/${p.id('enc-77')}/_history/2`);
    expect(obs.performer[0].reference).toBe(`#${obs.contained[0].id}`);
    expect(obs.specimen.reference).toBe(`#${obs.contained[1].id}`);
    expect(obs.contained[1].subject.reference).toBe(`Patient/${patient.id}`);
    expect(obs.contained[0].name).toEqual([MASKED]);
  });

  it('adds the HL7 security labels of what was done', () => {
    const codes = (r: any) => r.meta.security.filter((s: any) => s.system === 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue').map((s: any) => s.code);
    expect(codes(patient)).toEqual(['REDACTED', 'ABSTRED', 'PSEUDED']);
    expect(patient.meta.security[0]).toEqual({ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'N' });
    const condition = run('safe-harbor', { resourceType: 'Condition', id: 'c', onsetDateTime: '2020-01-02' });
    expect(codes(condition)).toEqual(['ABSTRED', 'PSEUDED']);
  });

  it('applies the 90+ rule at --as-of and caps ages over 89', () => {
    const [old1, old2, old3, young, condition, ageObs, fmh] = readLines('edge-cases.ndjson').map((r) => run('safe-harbor', r));
    expect(old1!._birthDate).toEqual(MASKED); // 90 on 2024-12-31
    expect(old2!.birthDate).toBe('1935'); // 89 until 2025-01-02
    expect(old3!._birthDate).toEqual(MASKED); // year only: may be 90
    expect(young!.birthDate).toBe('2024');
    expect(run('safe-harbor', readLines('edge-cases.ndjson')[1]!, { asOf: '2025-01-02' })._birthDate).toEqual(MASKED);
    expect(condition!.onsetAge).toEqual({ value: 90, unit: 'years', system: 'http://unitsofmeasure.org', code: 'a', comparator: '>=' });
    expect(condition!.abatementAge.value).toBe(89);
    expect(ageObs!.valueQuantity).toEqual({ value: 90, unit: 'a', system: 'http://unitsofmeasure.org', code: 'a', comparator: '>=' });
    expect(fmh!._bornDate).toEqual(MASKED);
    expect(fmh!._name).toEqual(MASKED);
  });

  it('masks every choice element of type string or markdown: an age, a birth year or a name in free text', () => {
    const out = run('safe-harbor', {
      resourceType: 'FamilyMemberHistory',
      ageString: 'about95',
      bornString: '1920',
      deceasedString: 'JohnSmithSr',
      condition: [{ code: { text: 'x' }, onsetString: 'age94', note: [{ text: 'y' }] }],
      extension: [{ url: 'http://hl7.org/fhir/StructureDefinition/data-absent-reason', valueMarkdown: '**Jane**' }],
    });
    expect(out).toMatchObject({ _ageString: MASKED, _bornString: MASKED, _deceasedString: MASKED });
    expect(out.condition[0]._onsetString).toEqual(MASKED);
    expect(out.extension[0]._valueMarkdown).toEqual(MASKED);
    expect(JSON.stringify(out)).not.toMatch(/95|1920|John|age94|Jane/);
  });

  it('tells a type by its choice element name where the shape cannot: a lone text is not always a concept', () => {
    const task = run('safe-harbor', {
      resourceType: 'Task',
      input: [
        { type: { text: 'who' }, valueHumanName: { text: 'John Smith' } },
        { type: { text: 'phone' }, valueContactPoint: { value: '555-0100' } },
        { type: { text: 'note' }, valueAnnotation: { text: 'called Mary' } },
        { type: { text: 'home' }, valueAddress: { text: '12 Oakwood Lane', state: 'MA' } },
        { type: { text: 'doc' }, valueAttachment: { title: 'Smith letter' } },
      ],
    });
    expect(task.input.map((i: any) => Object.keys(i)[1])).toEqual(['valueHumanName', 'valueContactPoint', 'valueAnnotation', 'valueAddress', 'valueAttachment']);
    expect(task.input[0].valueHumanName).toEqual(MASKED);
    expect(task.input[1].valueContactPoint).toEqual(MASKED);
    expect(task.input[2].valueAnnotation).toEqual({ _text: MASKED });
    expect(task.input[3].valueAddress).toEqual({ _text: MASKED, state: 'MA' });
    expect(task.input[4].valueAttachment).toEqual({ _title: MASKED });
    expect(task.input[0].type).toEqual({ text: 'who' }); // a CodeableConcept's lone text is still its name
    // A Dosage, a reference range or a process note holding only `text` looked like a CodeableConcept with no display.
    const request = run('safe-harbor', { resourceType: 'MedicationRequest', dosageInstruction: [{ text: 'one daily; ask Mary' }] });
    expect(request.dosageInstruction).toEqual([{ _text: MASKED }]);
    const obs = run('safe-harbor', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, referenceRange: [{ text: 'per Dr Smith' }] });
    expect(obs.referenceRange).toEqual([{ _text: MASKED }]);
    const claim = run('safe-harbor', { resourceType: 'ClaimResponse', processNote: [{ number: 1, text: 'paid to John' }] });
    expect(claim.processNote).toEqual([{ number: 1, _text: MASKED }]);
    // A device's network address and lot number; a subscription's search criteria.
    const device = run('safe-harbor', { resourceType: 'Device', url: 'http://pump-0042.example', lotNumber: 'L0042', modelNumber: 'X1' });
    expect(device).toMatchObject({ _url: MASKED, _lotNumber: MASKED, modelNumber: 'X1' });
    expect(run('safe-harbor', { resourceType: 'Subscription', criteria: 'Observation?patient.identifier=MRN0042' })._criteria).toEqual(MASKED);
    // An Identifier not named *identifier, with only a value (no system to tell it by).
    expect(run('safe-harbor', { resourceType: 'ServiceRequest', requisition: { value: 'REQ0042' } }).requisition).toEqual({ _value: MASKED });
    expect(JSON.stringify([task, request, obs, claim, device])).not.toMatch(/John|Smith|555|Mary|Oakwood|0042/);
  });

  it('caps an age over 89 wherever it is stated: an Age with no unit, spelt units, an age Observation without unit', () => {
    const capped = { value: 90, comparator: '>=', unit: 'a' };
    const condition = run('safe-harbor', { resourceType: 'Condition', onsetAge: { value: 95 }, abatementAge: { value: 93, unit: 'yrs old' } });
    expect(condition.onsetAge).toEqual(capped);
    expect(condition.abatementAge).toEqual(capped); // the Age type: a unit hx cannot read is taken as years
    const days = run('safe-harbor', { resourceType: 'Condition', onsetAge: { value: 95, unit: 'days' } });
    expect(days.onsetAge).toEqual({ value: 95, unit: 'days' });
    const ageCode = { coding: [{ system: 'http://loinc.org', code: '30525-0' }] };
    const spelt = run('safe-harbor', { resourceType: 'Observation', code: ageCode, valueQuantity: { value: 93, unit: 'yrs' } });
    expect(spelt.valueQuantity).toEqual({ value: 90, unit: 'yrs', comparator: '>=' });
    const unitless = run('safe-harbor', { resourceType: 'Observation', code: { text: 'Age at onset' }, valueQuantity: { value: 93 } });
    expect(unitless.valueQuantity).toEqual(capped);
    // In an integer: a Quantity of `>= 90` in its place (an integer cannot say "90 or more").
    const integer = run('safe-harbor', {
      resourceType: 'Observation',
      code: { text: 'x' },
      component: [{ code: { coding: [{ system: 'http://loinc.org', code: '21612-7', display: 'Age - Reported' }] }, valueInteger: 94 }],
    });
    expect(integer.component[0]).toEqual({
      code: { coding: [{ system: 'http://loinc.org', code: '21612-7', display: 'Age - Reported' }] },
      valueQuantity: { value: 90, comparator: '>=', unit: 'a', system: 'http://unitsofmeasure.org', code: 'a' },
    });
    // Not an age: a value in another unit, or one under 90, stays.
    const weight = run('safe-harbor', { resourceType: 'Observation', code: ageCode, valueQuantity: { value: 95, unit: 'kg' } });
    expect(weight.valueQuantity).toEqual({ value: 95, unit: 'kg' });
    expect(run('safe-harbor', { resourceType: 'Observation', code: ageCode, valueInteger: 89 }).valueInteger).toBe(89);
    expect(run('safe-harbor', { resourceType: 'Observation', code: { text: 'Heart rate' }, valueInteger: 95 }).valueInteger).toBe(95);
    // A capped age is walked too: an unknown extension in it goes.
    const extended = run('safe-harbor', { resourceType: 'Condition', onsetAge: { value: 95, unit: 'a', extension: [{ url: 'http://x.org/who', valueString: 'Mary' }] } });
    expect(extended.onsetAge).toEqual({ value: 90, unit: 'a', comparator: '>=' });
  });

  it("masks a string name where it may be a person's, user ids, DICOM UIDs and audited queries", () => {
    const account = run('safe-harbor', { resourceType: 'Account', id: 'a', name: 'SMITH,JOHN', status: 'active' });
    expect(account).toMatchObject({ _name: MASKED, status: 'active' });
    const group = run('safe-harbor', { resourceType: 'Group', id: 'g', name: 'Smiths', type: 'person', actual: true });
    expect(group._name).toEqual(MASKED);
    const audit = run('safe-harbor', {
      resourceType: 'AuditEvent',
      agent: [{ name: 'jsmith', altId: 'js0042', requestor: true }],
      entity: [{ query: 'bmFtZT1zbWl0aA==', name: 'x' }],
    });
    expect(audit.agent[0]).toEqual({ _name: MASKED, _altId: MASKED, requestor: true });
    expect(audit.entity[0]).toEqual({ _query: MASKED, _name: MASKED });
    const study = run('safe-harbor', { resourceType: 'ImagingStudy', series: [{ uid: '2.16.124.113543.6003.1154777499', instance: [{ uid: '2.16.124.113543.6003.2' }] }] });
    expect(study.series[0]).toEqual({ _uid: MASKED, instance: [{ _uid: MASKED }] });
    // a place's or a definition's name stays (as any string: masked when it has a space)
    expect(run('safe-harbor', { resourceType: 'Organization', name: 'Mercy' }).name).toBe('Mercy');
    expect(run('safe-harbor', { resourceType: 'ActivityDefinition', name: 'FluShot' }).name).toBe('FluShot');
    expect(run('safe-harbor', { resourceType: 'Parameters', parameter: [{ name: 'patient', valueString: 'Jane' }] }).parameter).toEqual([{ name: 'patient', _valueString: MASKED }]);
  });

  it('ZIP edge cases: restricted prefixes, ZIP+4, 9 digits, too short, not US', () => {
    const old1 = run('safe-harbor', readLines('edge-cases.ndjson')[0]!);
    expect(old1.address).toEqual([
      { postalCode: '00000', state: 'NH' },
      { postalCode: '10000' },
      { _postalCode: MASKED },
      { _postalCode: MASKED, country: 'GB' },
      { postalCode: '00000' },
    ]);
    expect(safeHarborZip('02139-4307', CENSUS_UNION_ZIP3)).toBe('02100');
    expect(safeHarborZip(' 88901 ', CENSUS_UNION_ZIP3)).toBe('88900');
    expect(safeHarborZip('89012', CENSUS_UNION_ZIP3)).toBe('00000');
    expect(safeHarborZip('89312', CENSUS_UNION_ZIP3)).toBe('00000');
    expect(safeHarborZip('1234', CENSUS_UNION_ZIP3)).toBeUndefined();
    for (const prefix of ['036', '059', '063', '102', '202', '203', '204', '205', '369', '556', '692', '753', '772', '790', '821', '823', '830', '831', '878', '879', '884', '890', '893']) {
      expect(safeHarborZip(`${prefix}45`, CENSUS_UNION_ZIP3)).toBe('00000');
    }
    expect(CENSUS_UNION_ZIP3.restricted.size).toBe(23);
  });

  it('loads a replacement ZIP table', () => {
    const path = join(tempDir(), 'zip3.txt');
    writeFileSync(path, '# test table\n672\n\n020 # comment\n');
    const table = loadZip3Table(path);
    expect([...table.restricted]).toEqual(['672', '020']);
    expect(safeHarborZip('67202', table)).toBe('00000');
    expect(safeHarborZip('03601', table)).toBe('03600');
    writeFileSync(path, '67\n');
    expect(() => loadZip3Table(path)).toThrow(/:1: not a three-digit ZIP prefix/);
  });

  it('covers a resource type nobody listed, by data type', () => {
    const basic = run('safe-harbor', readLines('edge-cases.ndjson')[8]!);
    expect(basic.created).toBe('2023');
    expect(basic.author._display).toEqual(MASKED);
    expect(basic.identifier[0]._value).toEqual(MASKED);
    expect(basic.extension).toBeUndefined();
    const device = run('safe-harbor', readLines('edge-cases.ndjson')[9]!);
    expect(device.udiCarrier).toEqual([MASKED]);
    expect(device._serialNumber).toEqual(MASKED);
    const location = run('safe-harbor', readLines('edge-cases.ndjson')[7]!);
    expect(location.position).toBeUndefined();
    const coverage = run('safe-harbor', readLines('edge-cases.ndjson')[10]!);
    expect(coverage._subscriberId).toEqual(MASKED);
    const claim = run('safe-harbor', {
      resourceType: 'Claim',
      accident: { locationAddress: { line: ['1 A St'], city: 'Wichita', postalCode: '67202', state: 'KS' } },
      related: [{ reference: { system: 'http://claims.example', value: 'CLM-1' } }],
      contained: [{ resourceType: 'Endpoint', address: 'https://ehr.example.org/fhir' }],
      other: [{ family: 'Lin', given: ['D'] }, { system: 'phone', value: '555 0101' }],
    });
    expect(claim.accident.locationAddress).toEqual({ _line: [MASKED], _city: MASKED, postalCode: '67200', state: 'KS' });
    expect(claim.related[0].reference).toEqual({ system: 'http://claims.example', _value: MASKED });
    expect(claim.contained[0]._address).toEqual(MASKED);
    expect(claim.other).toEqual([MASKED, MASKED]);
    const composition = run('safe-harbor', { resourceType: 'Composition', section: [{ title: 'Lin family', text: { status: 'generated', div: '<div>Derrick</div>' }, code: { text: 'History' } }] });
    expect(composition.section).toEqual([{ _title: MASKED, code: { text: 'History' } }]);
    const free = run('safe-harbor', { resourceType: 'Foo', id: 'x', whatever: 'two words', contactish: 'a@b.example', phone: '316-555-0142', ssn: '123-45-6789', token: 'abc' });
    expect(free).toMatchObject({ _whatever: MASKED, _contactish: MASKED, _phone: MASKED, _ssn: MASKED, token: 'abc' });
  });

  it('rejects an unknown modifierExtension, naming the path and no value', () => {
    const input = { resourceType: 'Observation', id: 'Zebulon-1', component: [{ modifierExtension: [{ url: 'http://x/secret-Zebulon', valueString: 'Zebulon' }] }] };
    let error: unknown;
    try {
      run('safe-harbor', input);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RecordRejected);
    expect((error as RecordRejected).reason).toBe('Observation.component.modifierExtension: unknown modifier extension (its meaning cannot be kept)');
    expect(String((error as Error).message)).not.toMatch(/Zebulon/);
  });

  it('rejects a conditional request URL in a Bundle rather than leaking its search values', () => {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Patient?identifier=123-45-6789' } }] };
    expect(() => run('safe-harbor', bundle)).toThrow(/^Bundle\.entry\.request\.url: a conditional or malformed URL cannot be pseudonymised$/);
  });

  it('keeps a Bundle resolvable: urn:uuid fullUrls, references and ids map alike (core on a whole Bundle)', () => {
    const bundle = run('safe-harbor', read('bundle.json'));
    const fullUrls = new Set(bundle.entry.map((e: any) => e.fullUrl));
    for (const entry of bundle.entry) {
      expect(entry.fullUrl).toBe(`urn:uuid:${entry.resource.id}`);
      expect(entry.fullUrl).toMatch(/^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    const refs: string[] = [];
    JSON.stringify(bundle, (key, value) => (key === 'reference' && refs.push(value), value));
    expect(refs.length).toBe(3);
    for (const ref of refs) expect(fullUrls.has(ref)).toBe(true);
    expect(bundle.entry[2].request).toEqual({ method: 'PUT', url: `Condition/${bundle.entry[2].resource.id}` });
    expect(bundle.entry[0].request).toEqual({ method: 'POST', url: 'Patient' });
    expect(bundle.link).toBeUndefined();
    expect(bundle.entry[0].resource.name).toEqual([MASKED]);
  });

  it('--date-shift: one keyed offset per patient, intervals, precision and zones kept', () => {
    const d = createDeidentifier({ profile: 'safe-harbor', ...GOLDEN_OPTIONS, dateShiftDays: 30 });
    const bundle = d.deidentify(read('bundle.json')) as any;
    const encounter = bundle.entry[1].resource;
    const condition = bundle.entry[2].resource;
    const shiftOf = (before: string, after: string) => (Date.parse(after.slice(0, 10)) - Date.parse(before.slice(0, 10))) / 86_400_000;
    const offset = shiftOf('2024-05-30', encounter.period.start);
    expect(Math.abs(offset)).toBeLessThanOrEqual(30);
    expect(encounter.period.start.slice(10)).toBe('T09:00:00-05:00');
    expect(shiftOf('2020-02-29', condition.onsetDateTime)).toBe(offset); // same patient (urn:uuid subject)
    expect(shiftOf('1983-07-14', bundle.entry[0].resource.birthDate)).toBe(offset); // the Patient itself
    const other = d.deidentify({ resourceType: 'Condition', subject: { reference: 'Patient/someone-else' }, onsetDateTime: '2020-02-29' }) as any;
    const again = d.deidentify({ resourceType: 'Condition', subject: { reference: 'Patient/someone-else' }, recordedDate: '2021-03' }) as any;
    expect(other.onsetDateTime).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(again.recordedDate).toMatch(/^\d{4}-\d{2}$/);
    // The patient named by Task.for, a list of subjects, or an Appointment's participant gets the same offset.
    const patient = 'Patient/someone-else';
    const offsetOther = shiftOf('2020-02-29', other.onsetDateTime);
    const task = d.deidentify({ resourceType: 'Task', for: { reference: patient }, authoredOn: '2020-02-29' }) as any;
    const account = d.deidentify({ resourceType: 'Account', subject: [{ reference: 'Device/d' }, { reference: patient }], servicePeriod: { start: '2020-02-29' } }) as any;
    const visit = d.deidentify({ resourceType: 'Appointment', participant: [{ actor: { reference: 'Practitioner/p' } }, { actor: { reference: patient } }], created: '2020-02-29' }) as any;
    expect([task.authoredOn, account.servicePeriod.start, visit.created].map((date: string) => shiftOf('2020-02-29', date))).toEqual([offsetOther, offsetOther, offsetOther]);
    expect(offsetOther).not.toBe(offset); // (for this key: else the test above would prove nothing)
  });
});

describe('dates', () => {
  it('shifts keeping precision and what follows the date', () => {
    expect(shiftDate('2024-02-28T23:00:00.123+05:30', 1)).toBe('2024-02-29T23:00:00.123+05:30');
    expect(shiftDate('2024-03-01', -1)).toBe('2024-02-29');
    expect(shiftDate('2023-12-31', 1)).toBe('2024-01-01');
    expect(shiftDate('2024-05', 10)).toBe('2024-05');
    expect(shiftDate('2024-05', 20)).toBe('2024-06');
    expect(shiftDate('2024', 100)).toBe('2024');
    expect(shiftDate('0050-01-01', -1)).toBe('0049-12-31');
    expect(shiftDate('not a date', 1)).toBeUndefined();
  });

  it('tells the greatest possible age', () => {
    const asOf = { year: 2025, month: 1, day: 1 };
    expect(maxAgeAt('1935-01-01', asOf)).toBe(90);
    expect(maxAgeAt('1935-01-02', asOf)).toBe(89);
    expect(maxAgeAt('1935', asOf)).toBe(90);
    expect(maxAgeAt('1935-02', asOf)).toBe(89);
  });
});

describe('pseudonyms', () => {
  it('ms-compat: lowercase hex HMAC-SHA256 of the bare id with the key (Microsoft anonymizer vector)', () => {
    const p = new Pseudonymizer({ key: Buffer.from('123', 'utf8'), idMode: 'ms-compat' });
    const vector = '8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae';
    expect(p.id('abc')).toBe(vector);
    expect(p.reference('Patient/abc')).toBe(`Patient/${vector}`);
    expect(p.reference('https://x.org/fhir/Patient/abc/_history/3')).toBe(`https://x.org/fhir/Patient/${vector}/_history/3`);
    const out = deidentify({ resourceType: 'Patient', id: 'abc' }, { profile: 'safe-harbor', key: '123', idMode: 'ms-compat', asOf: '2025-01-01' });
    expect(out.id).toBe(vector);
  });

  it('hx ids are valid FHIR ids and UUIDs; urn:uuid stays a UUID; urn:oid and # stay as they are', () => {
    const p = new Pseudonymizer({ key: randomBytes(32) });
    const id = p.id('Patient-123.a');
    expect(id).toMatch(/^[A-Za-z0-9\-.]{1,64}$/);
    expect(p.reference('urn:uuid:6f1c2a3e-0d4b-4c5e-9f00-1a2b3c4d5e6f')).toBe(`urn:uuid:${p.id('6f1c2a3e-0d4b-4c5e-9f00-1a2b3c4d5e6f')}`);
    expect(p.reference('urn:oid:1.2.3')).toBe('urn:oid:1.2.3');
    expect(p.reference('#')).toBe('#');
    expect(p.reference('#med1')).toBe(`#${p.id('med1')}`);
    expect(p.reference('Patient?identifier=x')).toBeUndefined();
    expect(p.requestUrl('Patient')).toBe('Patient');
  });

  it('depends only on the key and the original', () => {
    const a = new Pseudonymizer({ key: Buffer.from('k') });
    const b = new Pseudonymizer({ key: Buffer.from('k'), cacheSize: 1 });
    const c = new Pseudonymizer({ key: Buffer.from('k2') });
    for (const ref of ['Patient/1', 'Patient/2', 'Patient/1', 'Observation/1']) expect(b.reference(ref)).toBe(a.reference(ref));
    expect(c.id('1')).not.toBe(a.id('1'));
    expect(a.fingerprint).toMatch(/^[0-9a-f]{8}$/);
    expect(a.dayOffset('p', 10)).toBe(b.dayOffset('p', 10));
  });

  it('the JavaScript HMAC-SHA256 equals node:crypto for keys and messages of every length class', () => {
    for (const keyLength of [1, 3, 32, 63, 64, 65, 200]) {
      const key = randomBytes(keyLength);
      const hmac = new HmacSha256(key);
      for (const length of [0, 1, 36, 55, 56, 63, 64, 65, 119, 120, 300, 30_000]) {
        const message = 'é€'.repeat(length % 3) + randomBytes(length).toString('base64').slice(0, length);
        expect(Buffer.from(hmac.digest(message)).toString('hex')).toBe(createHmac('sha256', key).update(message).digest('hex'));
      }
    }
  });
});

describe('report', () => {
  it('counts resources by rule, elements removed by kind, and paths when explaining', () => {
    const d = createDeidentifier({ profile: 'safe-harbor', ...GOLDEN_OPTIONS, explain: true });
    for (const r of goldenInputs()) d.deidentify(r);
    const json = d.report.toJSON() as any;
    expect(json.resources).toBe(14);
    expect(json.resourcesByRule.pseudonymised).toBe(14);
    expect(json.removedByKind.HumanName).toBeGreaterThanOrEqual(3);
    expect(json.removedByKind['Identifier.value']).toBe(7);
    const explain = d.report.explain();
    expect(explain).toContain('Patient.name\tmasked\t1\n');
    expect(explain).toContain('Bundle.entry.resource.ofType(Patient).name\tmasked\t1\n');
    expect(explain).toContain('Observation.contained.ofType(Practitioner).telecom\tmasked\t1\n');
    expect(explain).not.toMatch(/Derrick|Lin\b|555/);
  });
});
