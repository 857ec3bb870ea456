/**
 * A resource that no stage changed is written as it was read (`Batch.texts`):
 * its line's bytes, with the decimal precision and escapes a JSON round trip
 * would lose. A resource that a stage changed is serialised afresh, except
 * where the change is spliced into its text (pretag's tags, when the resource
 * had no extension) or cut out of it (deid's export profile: see
 * src/deid/exportText.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hx, parseNdjson, tempDir } from './support/cli.js';

/** Lines whose bytes differ from JSON.stringify(JSON.parse(line)). */
const PATIENT = '{"resourceType":"Patient","id":"p1","name":[{"family":"Lin","given":["Derrick"]}],"extension":[{"url":"x","valueDecimal":70.50}]}';
const UNTAGGED = '{"resourceType":"Observation","id":"o1","status":"final","subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50,"unit":"caf\\u00e9"}}';
/** No value: pretag's missing_result tags it. */
const TAGGED = '{"resourceType":"Observation","id":"o2","status":"final","subject":{"reference":"Patient/p1"},"referenceRange":[{"low":{"value":3.0}}]}';
/** Has an extension already: tagged, it is serialised. */
const EXTENDED = '{"resourceType":"Observation","id":"o3","extension":[{"url":"x","valueDecimal":2.0}]}';
const MISSING_RESULT_TAG =
  '{"url":"https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag","valueCodeableConcept":{"coding":[{"system":' +
  '"https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag","code":"missing_result","display":"Observation has no ' +
  'result value \u2014 may indicate pending or cancelled result"}],"text":"Observation has no result value \u2014 may indicate ' +
  'pending or cancelled result"}}';
const SPACED = '{"resourceType": "Condition", "id": "c1", "onsetAge": {"value": 4.0}}';
const roundTrip = (line: string) => JSON.stringify(JSON.parse(line));

function input(lines: string[]): string {
  const path = join(tempDir(), 'in.ndjson');
  writeFileSync(path, lines.join('\r\n') + '\n');
  return path;
}

describe('resources written as they were read', () => {
  it('hx cat writes each line as it came (CRLF and surrounding blanks aside), with one worker or two', async () => {
    const path = input([PATIENT, UNTAGGED, SPACED, `  ${UNTAGGED}`]);
    for (const workers of ['1', '2']) {
      const r = await hx(['cat', path, '--workers', workers]);
      expect(r.stderr).toBe('');
      // A line with blanks around its object is written from its parsed value.
      expect(r.stdout.toString()).toBe([PATIENT, UNTAGGED, SPACED, roundTrip(UNTAGGED)].join('\n') + '\n');
    }
  });

  it('hx split writes each line as it came, into its type\'s file', async () => {
    const dir = join(tempDir(), 'out');
    const r = await hx(['split', '--dir', dir, input([PATIENT, UNTAGGED, SPACED])]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(dir, 'Observation.ndjson'), 'utf8')).toBe(UNTAGGED + '\n');
    expect(readFileSync(join(dir, 'Condition.ndjson'), 'utf8')).toBe(SPACED + '\n');
  });

  it('hx cat writes the resources of a one-line Bundle document as they came, and re-serialises the others', async () => {
    const bundle = `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"x","resource":${UNTAGGED}},{"resource":${SPACED}}]}`;
    expect((await hx(['cat', input([bundle])])).stdout.toString()).toBe(`${UNTAGGED}\n${SPACED}\n`);
    const pretty = JSON.stringify(JSON.parse(bundle), null, 2);
    expect((await hx(['cat', input([pretty])])).stdout.toString()).toBe(`${roundTrip(UNTAGGED)}\n${roundTrip(SPACED)}\n`);
    // A Bundle on an NDJSON line is unpacked from its parsed value.
    expect((await hx(['cat', input([PATIENT, bundle])])).stdout.toString()).toBe(`${PATIENT}\n${roundTrip(UNTAGGED)}\n${roundTrip(SPACED)}\n`);
  });

  it('hx pretag keeps the lines it does not tag, splices its tags into those without extensions, serialises the rest: file, pipe and workers alike', async () => {
    const path = input([PATIENT, UNTAGGED, TAGGED, EXTENDED]);
    const smoking = (id: string, code: string) =>
      `{"resourceType":"Observation","id":"${id}","subject":{"reference":"Patient/p1"},"code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}]},` +
      `"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"${code}"}]},"referenceRange":[{"low":{"value":1.50}}]}`;
    // A smoking-status Observation with no contradiction is held by the pipe's spool, and still written as it came.
    const pipe = await hx(['pretag'], { stdin: [UNTAGGED, smoking('s1', '8517006'), PATIENT].join('\n') + '\n' });
    expect(pipe.stdout.toString()).toBe([UNTAGGED, PATIENT, smoking('s1', '8517006')].join('\n') + '\n');
    const runs = [
      await hx(['pretag', path]),
      await hx(['pretag'], { stdin: [PATIENT, UNTAGGED, TAGGED, EXTENDED].join('\n') + '\n' }),
      await hx(['pretag', path, '--workers', '2']),
      await hx(['run', 'pretag', path, '--workers', '2']),
    ];
    for (const r of runs) {
      expect(r.stderr).toBe('');
      const [patient, untagged, tagged, extended, ...rest] = r.stdout.toString().split('\n');
      expect(rest).toEqual(['']);
      expect(patient).toBe(PATIENT);
      expect(untagged).toBe(UNTAGGED);
      // No extension before: its line (3.0 kept) with the tag as a new last member.
      expect(tagged).toBe(`${TAGGED.slice(0, -1)},"extension":[${MISSING_RESULT_TAG}]}`);
      // An extension already: serialised from the tagged resource (2.0 becomes 2).
      expect(extended).toBe(roundTrip(EXTENDED).replace('2.0', '2').slice(0, -2) + `,${MISSING_RESULT_TAG}]}`);
    }
    // A one-line Bundle document's entries keep their bytes, tagged or not.
    const bundle = `{"resourceType":"Bundle","type":"collection","entry":[{"resource":${UNTAGGED}},{"resource":${TAGGED}}]}`;
    const fromBundle = await hx(['pretag', input([bundle])]);
    expect(fromBundle.stdout.toString()).toBe(`${UNTAGGED}\n${TAGGED.slice(0, -1)},"extension":[${MISSING_RESULT_TAG}]}\n`);
    // Smoking-status Observations tagged from the spool are spliced too.
    const contradictory = await hx(['pretag'], { stdin: [smoking('s1', '8517006'), smoking('s2', '266919005')].join('\n') + '\n' });
    const lines = contradictory.stdout.toString().split('\n');
    expect(lines[0]).toMatch(/^\{"resourceType":"Observation","id":"s1",.*"low":\{"value":1\.50\}\}\],"extension":\[\{"url":/);
    expect(parseNdjson(contradictory.stdout.toString()).map((o) => (o.extension as unknown[]).length)).toEqual([1, 1]);
  });

  it('hx bundle puts each line in its entry as it came; a resource without an id (named by a hash of it) is serialised', async () => {
    const idless = '{"resourceType":"Basic","extension":[{"url":"u","valueDecimal":1.50}]}';
    const path = input([UNTAGGED, SPACED, idless]);
    const outputs = [];
    for (const workers of ['1', '2']) {
      const r = await hx(['bundle', path, '--workers', workers]);
      expect(r.code).toBe(0);
      outputs.push(r.stdout.toString());
    }
    expect(outputs[1]).toBe(outputs[0]);
    const text = outputs[0]!;
    expect(text).toContain(`{"resource":${UNTAGGED},"request":{"method":"PUT","url":"Observation/o1"}}`);
    expect(text).toContain(`{"resource":${SPACED},"request":{"method":"PUT","url":"Condition/c1"}}`);
    expect(text).toContain(`"resource":${roundTrip(idless)},"request":{"method":"POST","url":"Basic"}}`);
  });

  it('hx run "pretag | bundle" puts tagged lines in their entries as the pipe does, spliced tags and all', async () => {
    const path = input([PATIENT, UNTAGGED, TAGGED, EXTENDED]);
    const tagged = (await hx(['pretag', path])).stdout;
    for (const options of ['', ' --workers 2', ' --pretty', ' --type collection --full-url http://x/fhir']) {
      const bundle = options.replace(' --workers 2', '');
      const pipe = await hx(['bundle', ...bundle.split(' ').filter(Boolean)], { stdin: tagged });
      const run = await hx(['run', `pretag | bundle${bundle}`, path, ...(options === bundle ? [] : ['--workers', '2'])]);
      expect(run.stderr).toBe('');
      expect(run.stdout.toString()).toBe(pipe.stdout.toString());
      if (options === '') expect(pipe.stdout.toString()).toContain(`{"resource":${TAGGED.slice(0, -1)},"extension":[${MISSING_RESULT_TAG}]},"request":`);
      if (options.includes('full-url')) expect(pipe.stdout.toString()).toContain(`{"fullUrl":"http://x/fhir/Observation/o2","resource":${TAGGED.slice(0, -1)},`);
    }
  });

  it('hx deid writes the text of a record it can edit as text, less the displays it removes, and serialises the others', async () => {
    const spacedRef = '{"resourceType": "Observation", "id": "o5", "subject": {"reference": "Patient/p1", "display": "Lin, Derrick"}, "valueQuantity": {"value": 1.50}}';
    // JSON.parse keeps the second subject only; the line's first one names the patient.
    const repeated = '{"resourceType":"Observation","id":"o9","subject":{"reference":"Patient/p1","display":"Lin, Derrick"},"subject":{"reference":"Patient/p1"}}';
    const path = input([PATIENT, UNTAGGED, SPACED, spacedRef, repeated]);
    for (const args of [['deid', path], ['deid', path, '--workers', '2'], ['run', 'deid', path], ['deid', '--explain', '-', path]]) {
      const r = await hx(args, { env: { HX_DEID_KEY: 'test key' } });
      const lines = r.stdout.toString().trim().split('\n');
      expect(lines).toHaveLength(5);
      // A person and a repeated key: parsed, de-identified, serialised.
      expect(lines[0]).toBe(roundTrip(lines[0]!));
      expect(lines[4]).toBe('{"resourceType":"Observation","id":"o9","subject":{"reference":"Patient/p1"}}');
      expect(r.stdout.toString()).not.toContain('Derrick');
      if (args.includes('--explain')) {
        // --explain counts per element path, which takes the object walk: everything is serialised.
        expect(lines[1]).toBe(roundTrip(UNTAGGED));
        expect(lines[2]).toBe(roundTrip(SPACED));
        expect(lines[3]).toBe('{"resourceType":"Observation","id":"o5","subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.5}}');
      } else {
        expect(r.stderr).toBe('');
        // An escape (caf\u00e9) is kept as it came.
        expect(lines[1]).toBe(UNTAGGED);
        expect(lines[2]).toBe(SPACED);
        expect(lines[3]).toBe('{"resourceType": "Observation", "id": "o5", "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 1.50}}');
      }
    }
    // A line near --max-line-bytes is edited as text too, on either path (one thread, or the first batch of a
    // worker run, which the main thread reads into objects).
    const long = `{"resourceType":"Observation","id":"o6","note":[{"text":"${'x'.repeat(150)}"}],"subject":{"reference":"Patient/p1","display":"Lin"},"valueQuantity":{"value":1.50}}`;
    const longPath = input([long, long.replace('"o6"', '"o7"')]);
    for (const workers of ['1', '2']) {
      const r = await hx(['deid', longPath, '--max-line-bytes', '300', '--workers', workers], { env: { HX_DEID_KEY: 'test key' } });
      expect(r.stdout.toString()).toBe([long, long.replace('"o6"', '"o7"')].map((l) => l.replace(',"display":"Lin"', '') + '\n').join(''));
    }
    // Through pretag first, one process or two: the same bytes.
    const pretagged = (await hx(['pretag', path])).stdout;
    const pipe = await hx(['deid', '-'], { stdin: pretagged, env: { HX_DEID_KEY: 'test key' } });
    const run = await hx(['run', 'pretag | deid', path], { env: { HX_DEID_KEY: 'test key' } });
    expect(run.stdout.toString()).toBe(pipe.stdout.toString());
    expect(run.stdout.toString()).toContain('"valueQuantity": {"value": 1.50}');
  });
});
