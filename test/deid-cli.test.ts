import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hx, parseNdjson, SHARED, tempDir } from './support/cli.js';

/**
 * PHI planted in a generated corpus, in every place it turns up in real
 * records: the leak test asserts none of these strings survives safe-harbor.
 */
const FIRST = ['Zebulon', 'Quillon', 'Marisol', 'Thaddeus', 'Ophelia', 'Ignatius'];
const FAMILY = ['Vandersloot', 'Quackenbush', 'Featherstonehaugh', 'Oyelaran', 'Przybylski', 'Abernathy'];
const STREETS = ['Wobblestone Crescent', 'Larkspur Hollow Road', 'Tamarack Bend', 'Juniper Knoll Drive'];
const CITIES = ['Pemberton Falls', 'Quillcrest', 'Harrowgate Springs'];
const ZIPS = ['67219', '66044-1234', '82072', '02139'];
const PHONES = ['(620) 555-0187', '620-555-0143', '+1 785 555 0121', '913.555.0166'];
const EMAILS = ['zebulon.v@mailhost.example', 'oquack@inbox.example', 'thaddeus_p@clinic.example'];
const MRNS = ['MRN-Q8812734', 'ACCT-77310022', 'SSN-NOT-123', 'DL-K99817234', 'MBR-55102938'];
const LOINC = ['72166-2', '2339-0', '8480-6'];
const SNOMED = ['8517006', '44054006', '266919005'];

function corpus(patients: number): string {
  const lines: string[] = [];
  const pick = <T,>(list: T[], i: number) => list[i % list.length]!;
  for (let i = 0; i < patients; i++) {
    const given = pick(FIRST, i);
    const family = pick(FAMILY, i * 7 + 1);
    const name = `${given} ${family}`;
    const street = `${100 + i} ${pick(STREETS, i)}`;
    const phone = pick(PHONES, i);
    const email = pick(EMAILS, i);
    const mrn = pick(MRNS, i);
    const pid = `patient-${i}`;
    const subject = { reference: `Patient/${pid}`, display: name };
    lines.push(JSON.stringify({
      resourceType: 'Patient', id: pid,
      text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${name}, ${street}</div>` },
      extension: [
        { url: 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName', valueString: pick(FAMILY, i + 2) },
        // an allowed extension whose contents carry PHI: a free-text sub-extension, an unknown nested one
        { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', extension: [{ url: 'text', valueString: name }, { url: 'http://example.org/x', valueString: pick(FAMILY, i + 5) }] },
      ],
      identifier: [{ type: { text: 'MRN' }, system: 'http://hospital.example/mrn', value: mrn }, { system: 'http://hl7.org/fhir/sid/us-ssn', value: `${mrn}-ssn` }],
      name: [{ family, given: [given], text: name }],
      telecom: [{ system: 'phone', value: phone }, { system: 'email', value: email }],
      gender: 'female', birthDate: `19${50 + (i % 40)}-0${1 + (i % 9)}-1${i % 9}`,
      address: [{ line: [street], city: pick(CITIES, i), state: 'KS', postalCode: pick(ZIPS, i), country: 'US' }],
      contact: [{ name: { family: pick(FAMILY, i + 3), given: [pick(FIRST, i + 1)] }, telecom: [{ value: pick(PHONES, i + 1) }] }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'RelatedPerson', id: `rp-${i}`, patient: subject, name: [{ text: `${pick(FIRST, i + 2)} ${family}` }],
      telecom: [{ system: 'email', value: pick(EMAILS, i + 1) }], address: [{ line: [`${i} ${pick(STREETS, i + 1)}`], postalCode: pick(ZIPS, i + 1) }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Observation', id: `obs-${i}`, status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: pick(LOINC, i), display: 'Lab' }] },
      subject, performer: [{ reference: `RelatedPerson/rp-${i}`, display: `${pick(FIRST, i + 2)} ${family}` }],
      effectiveDateTime: '2024-03-04T10:00:00Z',
      valueQuantity: { value: 100 + i + 0.25, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
      note: [{ authorString: name, text: `Called ${name} at ${phone}, lives on ${street}; MRN ${mrn}; email ${email}` }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Condition', id: `cond-${i}`, subject,
      code: { coding: [{ system: 'http://snomed.info/sct', code: pick(SNOMED, i), display: 'Condition' }], text: `as told by ${name}` },
      severity: { text: `mild; reach at ${email}` },
      onsetDateTime: '2019-05-06', note: [{ text: `${given} reports symptoms` }],
      evidence: [{ detail: [{ reference: `Observation/obs-${i}`, display: `${name} lab` }] }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Encounter', id: `enc-${i}`, status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject, participant: [{ individual: { display: `Dr. ${pick(FAMILY, i + 4)}` } }], period: { start: '2024-03-04T09:00:00Z' },
      location: [{ location: { display: street } }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'QuestionnaireResponse', id: `qr-${i}`, status: 'completed', subject,
      item: [{ linkId: '1', answer: [{ valueString: `${street}, ${pick(CITIES, i)} ${pick(ZIPS, i)}` }] }, { linkId: '2', answer: [{ valueString: email }] }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Coverage', id: `cov-${i}`, status: 'active', subscriberId: mrn, beneficiary: subject,
      identifier: [{ system: 'http://payer.example/member', value: `${mrn}-M` }], payor: [{ reference: 'Organization/payer', display: 'Payer Inc' }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Communication', id: `com-${i}`, status: 'completed', subject,
      payload: [{ contentString: `Please call ${phone} or write to ${email}` }],
      extension: [{ url: 'http://example.org/private-note', valueString: name }],
    }));
    // Types told only by the element's name: a sig that is only text, choice elements holding a name or a phone.
    lines.push(JSON.stringify({
      resourceType: 'MedicationRequest', id: `med-${i}`, status: 'active', intent: 'order', subject,
      medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '197361' }] },
      dosageInstruction: [{ text: `one daily, as ${given} asked` }],
    }));
    lines.push(JSON.stringify({
      resourceType: 'Task', id: `task-${i}`, status: 'ready', intent: 'order', for: subject,
      input: [{ type: { text: 'caller' }, valueHumanName: { text: name } }, { type: { text: 'callback' }, valueContactPoint: { value: phone } }],
    }));
  }
  return lines.join('\n') + '\n';
}

const PLANTED = [...FIRST, ...FAMILY, ...STREETS, ...CITIES, ...ZIPS, ...PHONES, ...EMAILS, ...MRNS];

function keyFile(dir: string, key = 'a test key of decent length\n'): string {
  const path = join(dir, 'key');
  writeFileSync(path, key);
  return path;
}

describe('hx deid', () => {
  it('safe-harbor leaves none of the planted identifiers in the output bytes, keeps codes and values', async () => {
    const dir = tempDir();
    const input = corpus(60);
    const r = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir), '--as-of', '2025-01-01'], { stdin: input });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    for (const planted of PLANTED) expect(out.includes(planted), planted).toBe(false);
    // nor any patient id of the input
    expect(out).not.toMatch(/patient-\d|obs-\d|enc-\d/);
    for (const code of [...LOINC, ...SNOMED]) expect(out).toContain(`"code":"${code}"`);
    for (let i = 0; i < 60; i++) expect(out).toContain(`"value":${100 + i + 0.25},`);
    expect(parseNdjson(out)).toHaveLength(60 * 10);
  });

  it('safe-harbor on real Synthea Bulk data: no patient name, phone, street or identifier survives, notes included', async () => {
    const dir = join(SHARED, 'data/sample-bulk-fhir-datasets-10-patients');
    const files = ['Patient', 'DocumentReference', 'Encounter', 'Condition', 'Procedure'].map((t) => join(dir, `${t}.000.ndjson`));
    const secrets = new Set<string>();
    for (const line of readFileSync(files[0]!, 'utf8').split('\n').filter(Boolean)) {
      const p = JSON.parse(line);
      for (const n of p.name ?? []) for (const s of [n.family, ...(n.given ?? [])]) secrets.add(s);
      for (const t of p.telecom ?? []) secrets.add(t.value);
      for (const a of p.address ?? []) for (const s of a.line ?? []) secrets.add(s);
      for (const i of p.identifier ?? []) secrets.add(i.value);
    }
    expect(secrets.size).toBeGreaterThan(50);
    const r = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(tempDir()), '--as-of', '2025-01-01', ...files]);
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    for (const secret of secrets) expect(out.includes(secret), secret).toBe(false);
    expect(out).toContain('"code":"44054006"'); // SNOMED diabetes, from Condition
  });

  it('export leaves no planted name, phone, e-mail, street or ZIP of the Patient or RelatedPerson', async () => {
    const r = await hx(['deid'], { stdin: corpus(10) });
    expect(r.code).toBe(0);
    const rows = parseNdjson(r.stdout);
    const people = rows.filter((x) => x.resourceType === 'Patient' || x.resourceType === 'RelatedPerson');
    const peopleText = JSON.stringify(people);
    for (const planted of [...STREETS, ...CITIES, ...ZIPS, ...PHONES, ...EMAILS]) expect(peopleText.includes(planted), planted).toBe(false);
    // the MRN is dropped, the SSN kept (not on the contract's list)
    expect(peopleText).not.toContain('"MRN-Q8812734"');
    const displays: string[] = [];
    JSON.stringify(rows, (key, value) => (key === 'subject' && value.display && displays.push(value.display), value));
    expect(displays).toEqual([]);
    // other resources pass as they are, apart from person displays
    expect(rows.find((x) => x.id === 'obs-0')!.note).toBeDefined();
  });

  it('is deterministic across file splits and chunking: one file, two files, stdin give the same bytes', async () => {
    const dir = tempDir();
    const input = corpus(30);
    const lines = input.split('\n');
    const whole = join(dir, 'whole.ndjson');
    const a = join(dir, 'a.ndjson');
    const b = join(dir, 'b.ndjson');
    writeFileSync(whole, input);
    writeFileSync(a, lines.slice(0, 101).join('\n') + '\n');
    writeFileSync(b, lines.slice(101).join('\n'));
    const key = keyFile(dir);
    const args = ['deid', '--profile', 'safe-harbor', '--key-file', key, '--as-of', '2025-01-01'];
    const [one, two, piped, env, shifted1, shifted2] = await Promise.all([
      hx([...args, whole]),
      hx([...args, a, b]),
      hx(args, { stdin: input }),
      hx(['deid', '--profile', 'safe-harbor', '--as-of', '2025-01-01', whole], { env: { HX_DEID_KEY: 'a test key of decent length' } }),
      hx([...args, '--date-shift', '20', a, b]),
      hx([...args, '--date-shift', '20', whole]),
    ]);
    expect(one.code).toBe(0);
    expect(two.stdout.equals(one.stdout)).toBe(true);
    expect(piped.stdout.equals(one.stdout)).toBe(true);
    expect(env.stdout.equals(one.stdout)).toBe(true);
    expect(shifted1.stdout.equals(shifted2.stdout)).toBe(true);
  });

  it('draws a random key when none is given, and says so (fingerprint only)', async () => {
    const input = '{"resourceType":"Patient","id":"p1"}\n';
    const [first, second] = await Promise.all([
      hx(['deid', '--profile', 'safe-harbor'], { stdin: input, env: { HX_DEID_KEY: '' } }),
      hx(['deid', '--profile', 'safe-harbor'], { stdin: input, env: { HX_DEID_KEY: '' } }),
    ]);
    expect(first.code).toBe(0);
    expect(first.stderr).toMatch(/no key given .*drew a random key for this run \(fingerprint [0-9a-f]{8}\)/);
    expect(parseNdjson(first.stdout)[0]!.id).not.toBe(parseNdjson(second.stdout)[0]!.id);
  });

  it('never prints the key; the account shows its fingerprint and what was done', async () => {
    const dir = tempDir();
    const secret = 'Sup3r-Secret-Key-Material';
    const report = join(dir, 'report.json');
    const r = await hx(['deid', '--profile', 'safe-harbor', '--as-of', '2025-01-01', '-v', '--report', report], {
      stdin: corpus(2),
      env: { HX_DEID_KEY: secret },
    });
    expect(r.code).toBe(0);
    const account = readFileSync(report, 'utf8');
    expect(r.stderr + account).not.toContain(secret);
    expect(r.stderr).toMatch(/profile safe-harbor, key [0-9a-f]{8} \(from env\), ids pseudonymised \(hx\), as-of 2025-01-01/);
    expect(r.stderr).toContain('http://example.org/private-note: 2');
    const deid = JSON.parse(account).stages.deid;
    expect(deid).toMatchObject({ profile: 'safe-harbor', keySource: 'env', asOf: '2025-01-01', resources: 20, changed: 20 });
    expect(deid.removedByKind.HumanName).toBeGreaterThan(0);
    expect(deid.extensionsDropped['http://example.org/private-note']).toBe(2);
    expect(deid.resourcesByRule.pseudonymised).toBe(20);
  });

  it('--id-mode ms-compat gives Microsoft anonymizer ids', async () => {
    const dir = tempDir();
    const input = '{"resourceType":"Patient","id":"abc"}\n{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/abc"}}\n';
    const r = await hx(['deid', '--profile', 'safe-harbor', '--id-mode', 'ms-compat', '--key-file', keyFile(dir, '123')], { stdin: input });
    const vector = '8f16771f9f8851b26f4d460fa17de93e2711c7e51337cb8a608a0f81e1c1b6ae';
    const [patient, obs] = parseNdjson(r.stdout);
    expect(patient!.id).toBe(vector);
    expect((obs!.subject as { reference: string }).reference).toBe(`Patient/${vector}`);
  });

  it('rejects with file:line and element path, never a value', async () => {
    const dir = tempDir();
    const input =
      '{"resourceType":"Patient","id":"ok"}\n' +
      '{"resourceType":"Observation","id":"Zebulon-Vandersloot","modifierExtension":[{"url":"http://x/Zebulon","valueString":"Zebulon Vandersloot"}]}\n';
    const failed = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir)], { stdin: input });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('hx: -:2: Observation: Observation.modifierExtension: unknown modifier extension');
    expect(failed.stderr).not.toContain('Zebulon');
    const rejects = join(dir, 'rejects.ndjson');
    const kept = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir), '--rejects', rejects, '-v'], { stdin: input });
    expect(kept.code).toBe(0);
    expect(parseNdjson(kept.stdout)).toHaveLength(1);
    expect(kept.stderr).not.toContain('Zebulon');
    expect(kept.stderr).toContain('read 2 = written 1 + rejected 1');
    // The reject file holds the line as it came (PHI): readable by its owner only.
    expect(readFileSync(rejects, 'utf8')).toContain('Zebulon');
    expect(statSync(rejects).mode & 0o077).toBe(0);
    // So does a reject file that was there before, readable by all (the mode of a creation does not apply to it).
    const existing = join(dir, 'existing-rejects.ndjson');
    writeFileSync(existing, 'old\n', { mode: 0o644 });
    chmodSync(existing, 0o644);
    const again = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir), '--rejects', existing], { stdin: input });
    expect(again.code).toBe(0);
    expect(again.stderr).toBe('');
    expect(readFileSync(existing, 'utf8')).toMatch(/^\{"source":"-","line":2,.*Zebulon/);
    expect(statSync(existing).mode & 0o777).toBe(0o600);
  });

  it('--explain lists what was done per element path', async () => {
    const dir = tempDir();
    const path = join(dir, 'explain.tsv');
    const r = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir), '--explain', path], { stdin: corpus(3) });
    expect(r.code).toBe(0);
    const explain = readFileSync(path, 'utf8');
    expect(explain.split('\n')[0]).toBe('path\taction\tcount');
    expect(explain).toContain('Patient.name\tmasked\t3\n');
    expect(explain).toContain('Observation.subject.display\tmasked\t3\n');
    expect(explain).toContain('Patient.address.postalCode\tzip3\t3\n');
    // what was kept on a judgement, for the reviewer: a concept text with no display to check it against
    expect(explain).toContain('Patient.identifier.type.text\tkept:concept-text\t3\n');
    for (const planted of PLANTED) expect(explain.includes(planted)).toBe(false);
    const toStderr = await hx(['deid', '--profile', 'export', '--explain', '-'], { stdin: corpus(1) });
    expect(toStderr.stderr).toContain('Observation.subject.display\tdisplay-removed\t1\n');
  });

  it('unpacked Bundle input keeps urn:uuid references resolvable (ids and references map alike)', async () => {
    const dir = tempDir();
    const r = await hx(['deid', '--profile', 'safe-harbor', '--key-file', keyFile(dir), 'examples/dwain-mcglynn.bundle.json']);
    expect(r.code).toBe(0);
    const rows = parseNdjson(r.stdout);
    const ids = new Set(rows.map((x) => x.id));
    const refs: string[] = [];
    JSON.stringify(rows, (key, value) => (key === 'reference' && typeof value === 'string' && value.startsWith('urn:uuid:') && refs.push(value), value));
    expect(refs.length).toBeGreaterThan(50);
    for (const ref of refs) expect(ids.has(ref.slice(9)), ref).toBe(true);
  });

  it('refuses bad options with exit code 2', async () => {
    const results = await Promise.all([
      hx(['deid', '--as-of', '2025-13-01'], { stdin: '' }),
      hx(['deid', '--date-shift', '10'], { stdin: '' }),
      hx(['deid', '--key-file', '/nonexistent/key'], { stdin: '' }),
    ]);
    expect(results.map((r) => r.code)).toEqual([2, 2, 2]);
    expect(results[0]!.stderr).toContain('--as-of must be a date YYYY-MM-DD');
    expect(results[1]!.stderr).toContain('--date-shift applies to --profile safe-harbor only');
  });
});
