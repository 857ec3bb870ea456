/**
 * A deterministic generator of realistic synthetic FHIR R4 data for the
 * benchmarks (and for tests, at small sizes). The same seed and size give the
 * same bytes. Patients carry names, addresses, telecom and identifiers;
 * Observations are vitals with components, labs with valueQuantity and
 * interpretation, and smoking status (LOINC 72166-2, SNOMED values, a few
 * patients contradictory); Conditions, Encounters, MedicationRequests and
 * Procedures reference their patient with a `display` name.
 *
 *     node dist/bench/generate.js --mb 100 --out bench/data/corpus-100
 *       → corpus-100.ndjson, corpus-100.ndjson.gz, corpus-100.bundle.json
 */
import { createWriteStream, mkdirSync } from 'node:fs';
import { once } from 'node:events';
import { dirname } from 'node:path';
import { createGzip } from 'node:zlib';
import type { Writable } from 'node:stream';
import type { Resource } from '../src/types.js';

/** mulberry32: small, fast, deterministic. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const GIVEN = ['Derrick', 'Maria', 'Sumiko', 'Abram', 'Fannie', 'Dwain', 'Lucia', 'Tomasz', 'Aisha', 'Kwame', 'Ingrid', 'Rafael'];
const FAMILY = ['Lin', 'Lemke', 'Waelchi', 'McGlynn', 'Streich', 'Okafor', 'Nguyen', 'Larue', 'Kowalski', 'Haddad'];
const STREETS = ['Maple Avenue', 'Harbor Road', 'Elm Street', 'Quarry Lane', 'Birch Court', 'Mill Pond Way'];
const CITIES: [string, string, string][] = [
  ['Springfield', 'MA', '01103'],
  ['Boston', 'MA', '02118'],
  ['Wichita', 'KS', '67202'],
  ['Laramie', 'WY', '82070'],
  ['Austin', 'TX', '78701'],
];
const CONDITIONS: [string, string][] = [
  ['44054006', 'Diabetes mellitus type 2'],
  ['38341003', 'Hypertensive disorder'],
  ['195662009', 'Acute viral pharyngitis'],
  ['10509002', 'Acute bronchitis'],
  ['162864005', 'Body mass index 30+ - obesity'],
];
const LABS: [string, string, string, number, number][] = [
  ['2339-0', 'Glucose [Mass/volume] in Blood', 'mg/dL', 70, 180],
  ['2093-3', 'Cholesterol [Mass/volume] in Serum or Plasma', 'mg/dL', 120, 280],
  ['718-7', 'Hemoglobin [Mass/volume] in Blood', 'g/dL', 10, 18],
  ['6690-2', 'Leukocytes [#/volume] in Blood by Automated count', '10*3/uL', 3, 14],
];
const SMOKING: [string, string][] = [
  ['266919005', 'Never smoker'],
  ['8517006', 'Former smoker'],
  ['449868002', 'Current every day smoker'],
];
const MEDS: [string, string][] = [
  ['860975', '24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet'],
  ['314076', 'lisinopril 10 MG Oral Tablet'],
  ['197361', 'amlodipine 5 MG Oral Tablet'],
];
const PROCEDURES: [string, string][] = [
  ['430193006', 'Medication Reconciliation (procedure)'],
  ['710824005', 'Assessment of health and social care needs (procedure)'],
  ['171207006', 'Depression screening (procedure)'],
];

export class CorpusGenerator {
  private readonly next: () => number;
  private patientCount = 0;
  private resourceCount = 0;

  constructor(seed = 42) {
    this.next = random(seed);
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }

  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  private uuid(): string {
    const hex = (n: number) =>
      Array.from({ length: n }, () => Math.floor(this.next() * 16).toString(16)).join('');
    return `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`;
  }

  private date(fromYear: number, toYear: number): string {
    const y = this.int(fromYear, toYear);
    const m = String(this.int(1, 12)).padStart(2, '0');
    const d = String(this.int(1, 28)).padStart(2, '0');
    return `${y}-${m}-${d}`;
  }

  private instant(): string {
    return `${this.date(2015, 2025)}T${String(this.int(0, 23)).padStart(2, '0')}:${String(this.int(0, 59)).padStart(2, '0')}:00-05:00`;
  }

  /** One patient and their records, in the order a Synthea bundle has them. */
  patient(): Resource[] {
    this.patientCount++;
    const id = this.uuid();
    const given = this.pick(GIVEN);
    const family = this.pick(FAMILY);
    const [city, state, zip] = this.pick(CITIES);
    const display = `${given}${this.int(100, 999)} ${family}${this.int(100, 999)}`;
    const subject = { reference: `Patient/${id}`, display };
    const out: Resource[] = [
      {
        resourceType: 'Patient',
        id,
        meta: { profile: ['http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient'] },
        text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${display}</div>` },
        extension: [
          {
            url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex',
            valueCode: this.pick(['M', 'F']),
          },
          {
            url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName',
            valueString: `${this.pick(FAMILY)}${this.int(10, 99)}`,
          },
        ],
        identifier: [
          { system: 'https://github.com/synthetichealth/synthea', value: id },
          {
            type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical Record Number' }], text: 'Medical Record Number' },
            system: 'http://hospital.smarthealthit.org',
            value: this.uuid(),
          },
          {
            type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'SS', display: 'Social Security Number' }], text: 'Social Security Number' },
            system: 'http://hl7.org/fhir/sid/us-ssn',
            value: `999-${this.int(10, 99)}-${this.int(1000, 9999)}`,
          },
        ],
        name: [{ use: 'official', family: `${family}${this.int(100, 999)}`, given: [`${given}${this.int(100, 999)}`], prefix: ['Mx.'] }],
        telecom: [
          { system: 'phone', value: `555-${this.int(100, 999)}-${this.int(1000, 9999)}`, use: 'home' },
          { system: 'email', value: `${given.toLowerCase()}.${family.toLowerCase()}@example.com` },
        ],
        gender: this.pick(['male', 'female']),
        birthDate: this.date(1925, 2015),
        address: [
          {
            line: [`${this.int(1, 999)} ${this.pick(STREETS)}`],
            city,
            state,
            postalCode: zip,
            country: 'US',
            extension: [
              {
                url: 'http://hl7.org/fhir/StructureDefinition/geolocation',
                extension: [
                  { url: 'latitude', valueDecimal: 42 + this.next() },
                  { url: 'longitude', valueDecimal: -71 - this.next() },
                ],
              },
            ],
          },
        ],
        communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: 'en-US', display: 'English' }] } }],
      },
    ];
    const encounters = this.int(2, 6);
    for (let e = 0; e < encounters; e++) {
      const encId = this.uuid();
      const start = this.instant();
      out.push({
        resourceType: 'Encounter',
        id: encId,
        status: 'finished',
        class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
        type: [{ coding: [{ system: 'http://snomed.info/sct', code: '185349003', display: 'Encounter for check up (procedure)' }], text: 'Encounter for check up (procedure)' }],
        subject,
        participant: [{ individual: { reference: `Practitioner/${this.uuid()}`, display: `Dr. ${this.pick(GIVEN)} ${this.pick(FAMILY)}` } }],
        period: { start, end: start },
        serviceProvider: { reference: `Organization/${this.uuid()}`, display: 'SPRINGFIELD MEDICAL CENTER' },
      });
      const encounter = { reference: `Encounter/${encId}` };
      out.push(this.vitals(subject, encounter, start), this.lab(subject, encounter, start), this.lab(subject, encounter, start));
      if (e === 0) out.push(this.smoking(subject, encounter, start, this.patientCount % 7 === 0 ? 0 : -1));
      if (e === 1 && this.patientCount % 7 === 0) out.push(this.smoking(subject, encounter, start, 2));
      if (this.next() < 0.6) {
        const [code, text] = this.pick(CONDITIONS);
        out.push({
          resourceType: 'Condition',
          id: this.uuid(),
          clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
          verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
          category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis', display: 'Encounter Diagnosis' }] }],
          code: { coding: [{ system: 'http://snomed.info/sct', code, display: text }], text },
          subject,
          encounter,
          onsetDateTime: start,
          recordedDate: start,
          note: [{ text: `Patient ${display} reports symptoms since last visit.` }],
        });
      }
      if (this.next() < 0.5) {
        const [code, text] = this.pick(MEDS);
        out.push({
          resourceType: 'MedicationRequest',
          id: this.uuid(),
          status: 'active',
          intent: 'order',
          medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code, display: text }], text },
          subject,
          encounter,
          authoredOn: start,
          requester: { reference: `Practitioner/${this.uuid()}`, display: `Dr. ${this.pick(GIVEN)} ${this.pick(FAMILY)}` },
          dosageInstruction: [{ sequence: 1, text: 'Take one tablet by mouth daily', timing: { repeat: { frequency: 1, period: 1, periodUnit: 'd' } } }],
        });
      }
      if (this.next() < 0.4) {
        const [code, text] = this.pick(PROCEDURES);
        out.push({
          resourceType: 'Procedure',
          id: this.uuid(),
          status: 'completed',
          code: { coding: [{ system: 'http://snomed.info/sct', code, display: text }], text },
          subject,
          encounter,
          performedPeriod: { start, end: start },
        });
      }
    }
    this.resourceCount += out.length;
    return out;
  }

  private vitals(subject: object, encounter: object, when: string): Resource {
    return {
      resourceType: 'Observation',
      id: this.uuid(),
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs', display: 'vital-signs' }] }],
      code: { coding: [{ system: 'http://loinc.org', code: '85354-9', display: 'Blood pressure panel with all children optional' }], text: 'Blood pressure' },
      subject,
      encounter,
      effectiveDateTime: when,
      issued: when.replace('-05:00', '.000-05:00'),
      component: [
        { code: { coding: [{ system: 'http://loinc.org', code: '8462-4', display: 'Diastolic Blood Pressure' }] }, valueQuantity: { value: this.int(60, 95), unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
        { code: { coding: [{ system: 'http://loinc.org', code: '8480-6', display: 'Systolic Blood Pressure' }] }, valueQuantity: { value: this.int(100, 160), unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' } },
      ],
    };
  }

  private lab(subject: object, encounter: object, when: string): Resource {
    const [code, text, unit, lo, hi] = this.pick(LABS);
    const value = Math.round((lo + this.next() * (hi - lo) * 1.2) * 10) / 10;
    const high = value > hi;
    return {
      resourceType: 'Observation',
      id: this.uuid(),
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory', display: 'laboratory' }] }],
      code: { coding: [{ system: 'http://loinc.org', code, display: text }], text },
      subject,
      encounter,
      effectiveDateTime: when,
      issued: when.replace('-05:00', '.000-05:00'),
      valueQuantity: { value, unit, system: 'http://unitsofmeasure.org', code: unit },
      interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: high ? 'H' : 'N', display: high ? 'High' : 'Normal' }] }],
      referenceRange: [{ low: { value: lo, unit }, high: { value: hi, unit } }],
    };
  }

  /** `which` picks the SNOMED value; -1 draws never/former at random. */
  private smoking(subject: object, encounter: object, when: string, which: number): Resource {
    const [code, text] = which >= 0 ? SMOKING[which]! : this.pick(SMOKING.slice(0, 2));
    return {
      resourceType: 'Observation',
      id: this.uuid(),
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'social-history', display: 'social-history' }] }],
      code: { coding: [{ system: 'http://loinc.org', code: '72166-2', display: 'Tobacco smoking status NHIS' }], text: 'Tobacco smoking status NHIS' },
      subject,
      encounter,
      effectiveDateTime: when,
      valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code, display: text }], text },
    };
  }
}

/** Writes `bytes` worth of patients as NDJSON to `out`; resolves with the counts. */
export async function writeCorpus(out: Writable, bytes: number, seed = 42): Promise<{ bytes: number; resources: number }> {
  const gen = new CorpusGenerator(seed);
  let written = 0;
  let resources = 0;
  while (written < bytes) {
    let text = '';
    for (const r of gen.patient()) {
      text += JSON.stringify(r) + '\n';
      resources++;
    }
    written += Buffer.byteLength(text);
    if (!out.write(text)) await once(out, 'drain');
  }
  return { bytes: written, resources };
}

/** The same data as one Bundle JSON document, written incrementally. */
export async function writeBundle(out: Writable, bytes: number, seed = 42): Promise<void> {
  const gen = new CorpusGenerator(seed);
  let written = 0;
  let first = true;
  out.write('{"resourceType":"Bundle","type":"collection","entry":[');
  while (written < bytes) {
    let text = '';
    for (const r of gen.patient()) {
      const line = JSON.stringify(r);
      written += Buffer.byteLength(line) + 1;
      text += `${first ? '' : ','}{"fullUrl":"urn:uuid:${r.id}","resource":${line}}`;
      first = false;
    }
    if (!out.write(text)) await once(out, 'drain');
  }
  out.write(']}\n');
}

async function finish(stream: Writable): Promise<void> {
  stream.end();
  await once(stream, 'finish');
}

export async function generateAll(base: string, megabytes: number): Promise<void> {
  mkdirSync(dirname(base), { recursive: true });
  const bytes = megabytes * 1e6;
  const ndjson = createWriteStream(`${base}.ndjson`);
  await writeCorpus(ndjson, bytes);
  await finish(ndjson);
  const gz = createGzip({ level: 6 });
  const gzFile = createWriteStream(`${base}.ndjson.gz`);
  gz.pipe(gzFile);
  await writeCorpus(gz, bytes);
  gz.end();
  await once(gzFile, 'close');
  const bundle = createWriteStream(`${base}.bundle.json`);
  await writeBundle(bundle, bytes);
  await finish(bundle);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const mb = Number(args[args.indexOf('--mb') + 1] ?? 100);
  const out = args.includes('--out') ? args[args.indexOf('--out') + 1]! : `bench/data/corpus-${mb}`;
  await generateAll(out, mb);
  process.stderr.write(`wrote ${out}.ndjson, .ndjson.gz, .bundle.json (${mb} MB each before compression)\n`);
}
