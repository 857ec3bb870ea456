import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { hx, tempDir } from './support/cli.js';
import { startFhirServer, type FhirServer } from './support/fhirServer.js';
import { startIngestServer, type IngestServer } from './support/ingestServer.js';

const SECRET = 'export-secret-0123456789';
const env = { STEP_UP_SECRET: SECRET, HX_DEID_KEY: 'fixed-key' };
const PRETAG_URL = 'https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag';
/** A tenant with more Observations than one HealthClaw page (200) and no `next` links. */
const TENANT = { Patient: 3, Condition: 7, Observation: 450, Encounter: 5 };

type Json = Record<string, any>;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (closers.length) await closers.pop()!();
});

async function servers(): Promise<{ fhir: FhirServer; ingest: IngestServer }> {
  const fhir = await startFhirServer({ tenants: { 'ev-personal': TENANT }, paging: 'healthclaw', tenantHeader: true, stepUpSecret: SECRET, perInstant: 3 });
  const ingest = await startIngestServer({ stepUpSecret: SECRET });
  closers.push(() => fhir.close(), () => ingest.close());
  return { fhir, ingest };
}

describe('hx export-healthex', () => {
  it('exports every page of every type as a de-identified, pre-tagged transaction Bundle, with the Python console', async () => {
    const { fhir } = await servers();
    const dir = tempDir();
    const output = join(dir, 'out', 'export.json');
    const r = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--output', output], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const console = r.stdout.toString();
    const types = ['Patient', 'Condition', 'Observation', 'AllergyIntolerance', 'Immunization', 'MedicationRequest', 'Procedure', 'DiagnosticReport', 'CarePlan', 'Coverage', 'Encounter'];
    const fetched = types.map((t) => `  ${t}: ${(TENANT as Record<string, number>)[t] ?? 0} (server total ${(TENANT as Record<string, number>)[t] ?? 0})`);
    expect(console).toBe(
      [
        `Exporting tenant 'ev-personal' from ${fhir.base}`,
        `Resource types: ${types.join(', ')}`,
        '',
        ...fetched,
        '',
        'Total resources fetched: 465',
        'De-identification applied (name/address/telecom/EHR identifiers removed)',
        "Curatr pre-tags applied: {'missing_result': 450}",
        '',
        `Written: ${output} (465 entries)`,
        '',
        'Resource counts:',
        '  Condition: 7',
        '  Encounter: 5',
        '  Observation: 450',
        '  Patient: 3',
        '  TOTAL: 465',
        '',
        'Curatr pre-tags:',
        '  missing_result: 450',
        '',
      ].join('\n'),
    );
    const bundle = JSON.parse(readFileSync(output, 'utf8'));
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.type).toBe('transaction');
    expect(bundle.entry).toHaveLength(465);
    expect(new Set(bundle.entry.map((e: Json) => e.request.url)).size).toBe(465);
    expect(bundle.entry.every((e: Json) => e.request.method === 'PUT' && e.request.url === `${e.resource.resourceType}/${e.resource.id}`)).toBe(true);
    // Request order: Patients first, Encounters last.
    expect(bundle.entry[0].resource.resourceType).toBe('Patient');
    expect(bundle.entry.at(-1).resource.resourceType).toBe('Encounter');
    const patient = bundle.entry[0].resource;
    expect(patient.identifier[0]).toMatchObject({ use: 'secondary', system: 'urn:healthclaw:patient' });
    const observation = bundle.entry.find((e: Json) => e.resource.resourceType === 'Observation').resource;
    expect(observation.extension.map((x: Json) => [x.url, x.valueCodeableConcept.coding[0].code])).toEqual([[PRETAG_URL, 'missing_result']]);
    // Reads carried the tenant and a valid step-up token (the server answers 401 otherwise).
    expect(fhir.requests.every((q) => q.status === 200)).toBe(true);
    // Compact by default (--pretty indents like the Python script, see the golden test).
    expect(readFileSync(output, 'utf8').startsWith('{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"')).toBe(true);
    // Same key, same output.
    const again = join(dir, 'again.json');
    await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--output', again], { env });
    expect(readFileSync(again, 'utf8')).toBe(readFileSync(output, 'utf8'));
  });

  it('writes the golden file for a small tenant (same key, same bytes)', async () => {
    const fhir = await startFhirServer({ tenants: { golden: { Patient: 2, Observation: 3, Condition: 2 } }, paging: 'healthclaw', tenantHeader: true });
    closers.push(() => fhir.close());
    const output = join(tempDir(), 'golden.json');
    const r = await hx(['export-healthex', '--tenant-id', 'golden', '--base-url', fhir.base, '-o', output, '--pretty'], { env: { HX_DEID_KEY: 'golden-key', STEP_UP_SECRET: '' } });
    expect(r.code).toBe(0);
    expect(readFileSync(output, 'utf8')).toBe(readFileSync('test/fixtures/ingest/healthex-golden.json', 'utf8'));
  });

  it('--dry-run prints the counts and writes nothing; --no-deidentify --no-pretag pass resources through', async () => {
    const { fhir } = await servers();
    const dir = tempDir();
    const r = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--dry-run', '--types', 'Patient', 'Observation'], { env, cwd: dir });
    expect(r.code).toBe(0);
    const out = r.stdout.toString();
    expect(out).toContain('Total resources fetched: 453');
    expect(out).toContain('\nDry run — not writing output.\n\nResource counts:\n  Observation: 450\n  Patient: 3\n  TOTAL: 453\n');
    expect(out).not.toContain('Written:');
    expect(existsSync(join(dir, 'exports'))).toBe(false);

    const output = join(dir, 'plain.json');
    const plain = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--types', 'Patient', 'Observation', '--no-deidentify', '--no-pretag', '-o', output], { env });
    expect(plain.code).toBe(0);
    expect(plain.stdout.toString()).not.toContain('De-identification applied');
    const bundle = JSON.parse(readFileSync(output, 'utf8'));
    expect(bundle.entry[0].resource.identifier).toBeUndefined();
    expect(bundle.entry.some((e: Json) => e.resource.extension)).toBe(false);
  });

  it('names each resource once when the server repeats some across pages (fetch drops them; the Bundle keeps no second set)', async () => {
    const fhir = await startFhirServer({ tenants: { 'ev-personal': { Patient: 2, Condition: 100 } }, paging: 'offset', overlap: 3, maxCount: 20, tenantHeader: true });
    closers.push(() => fhir.close());
    const dir = tempDir();
    const output = join(dir, 'export.json');
    const r = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--types', 'Patient', 'Condition', '-o', output, '--report', join(dir, 'report.json')], { env });
    expect(r.code).toBe(0);
    const keys = JSON.parse(readFileSync(output, 'utf8')).entry.map((e: Json) => `${e.resource.resourceType}/${e.resource.id}`);
    expect(keys).toHaveLength(102);
    expect(new Set(keys).size).toBe(102);
    const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    expect(report.dropped).toBeGreaterThan(0);
    expect(report.droppedByReason).toEqual({ 'duplicate (type, id) across pages': report.dropped });
    expect(report.balanced).toBe(true);
  });

  it('fails on a 401 instead of exporting nothing', async () => {
    const { fhir } = await servers();
    const r = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '-o', join(tempDir(), 'x.json')], { env: { STEP_UP_SECRET: 'wrong-secret-999' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 401');
    expect(r.stderr).not.toContain('wrong-secret-999');
  });

  it('--import posts the written file into a second tenant: every resource is there', async () => {
    const { fhir, ingest } = await servers();
    const dir = tempDir();
    const output = join(dir, 'export.json');
    const r = await hx(
      ['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--import-base-url', ingest.base, '-o', output, '--import', '--import-tenant', 'ev-archive', '--max-entries', '100'],
      { env },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toContain("Importing into tenant 'ev-archive'");
    expect(r.stdout.toString()).toContain('Resources sent: 465; stored: 465; skipped: 0');
    const bundle = JSON.parse(readFileSync(output, 'utf8'));
    const stored = ingest.stored('ev-archive');
    expect(stored.size).toBe(465);
    for (const { resource } of bundle.entry) {
      const { meta: _a, ...got } = stored.get(`${resource.resourceType}/${resource.id}`)!;
      const { meta: _b, ...want } = resource;
      expect(got).toEqual(want);
    }
    expect(ingest.stored('ev-personal').size).toBe(0);
    expect(ingest.requests.every((q) => q.headers['x-tenant-id'] === 'ev-archive')).toBe(true);
  });

  it('refuses --import without a secret before exporting anything', async () => {
    const { fhir } = await servers();
    const r = await hx(['export-healthex', '--tenant-id', 'ev-personal', '--base-url', fhir.base, '--import', '-o', join(tempDir(), 'x.json')], { env: { STEP_UP_SECRET: '' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('STEP_UP_SECRET is required');
    expect(fhir.requests).toHaveLength(0);
  });
});
