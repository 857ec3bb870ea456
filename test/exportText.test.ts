import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CorpusGenerator, random } from '../bench/generate.js';
import { exportByText } from '../src/deid/exportText.js';
import type { Resource } from '../src/types.js';
import { createDeidentifier } from '../transforms/deidentify.js';

/** The object path: parse, the export profile's walk (what `JSON.parse` of the text path's output must equal). */
function objectPath(line: string): unknown {
  return createDeidentifier({ profile: 'export', key: 'k', asOf: '2025-01-01' }).deidentify(JSON.parse(line) as Resource);
}

/** The text path's answer, checked against the object path whenever it gives one. */
function textPath(line: string): string | undefined {
  const result = exportByText(line);
  if (result === undefined) return undefined;
  const expected = objectPath(line); // throws if the line is not JSON: the text path must not have answered
  expect(JSON.parse(result.text)).toStrictEqual(expected);
  expect(result.resourceType).toBe((expected as Resource).resourceType);
  return result.text;
}

const obs = (members: string) => `{"resourceType":"Observation","id":"o1",${members}}`;

describe('export profile on text', () => {
  it('cuts the display of a reference to a person, first, middle or last, and nothing else', () => {
    expect(textPath(obs('"subject":{"display":"Lin, Derrick","reference":"Patient/p1"}'))).toBe(obs('"subject":{"reference":"Patient/p1"}'));
    expect(textPath(obs('"subject":{"reference":"Patient/p1","display":"Lin, Derrick","type":"Patient"}'))).toBe(
      obs('"subject":{"reference":"Patient/p1","type":"Patient"}'),
    );
    expect(textPath(obs('"subject":{"reference":"Patient/p1","display":"Lin, Derrick"}'))).toBe(obs('"subject":{"reference":"Patient/p1"}'));
    expect(textPath(obs(' "subject" : { "display" : "Lin" , "reference" : "Patient/p1" } '))).toBe(obs(' "subject" : { "reference" : "Patient/p1" } '));
    expect(textPath(obs('"subject":{ "reference":"Patient/p1" , "display":"Lin" }'))).toBe(obs('"subject":{ "reference":"Patient/p1"  }'));
  });

  it('keeps code displays, other targets, and decides by type, urn:uuid, #contained and absent references as the object path does', () => {
    const kept = obs('"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"performer":[{"reference":"Practitioner/d1","display":"Dr Who"}]');
    expect(textPath(kept)).toBe(kept);
    expect(textPath(obs('"performer":[{"reference":"RelatedPerson/r1","display":"Mum"}]'))).toBe(obs('"performer":[{"reference":"RelatedPerson/r1"}]'));
    expect(textPath(obs('"performer":[{"reference":"Practitioner/d1","type":"Patient","display":"x"}]'))).toBe(
      obs('"performer":[{"reference":"Practitioner/d1","type":"Patient"}]'),
    );
    expect(textPath(obs('"performer":[{"reference":"Patient/p1","type":"Practitioner","display":"x"}]'))).toBe(obs('"performer":[{"reference":"Patient/p1","type":"Practitioner","display":"x"}]'));
    for (const ref of ['urn:uuid:0d3f3e3a-1111-4222-8333-444455556666', '#c1', 'Patient?identifier=x', 'https://h.example/fhir/Patient/p1/_history/2']) {
      expect(textPath(obs(`"subject":{"reference":"${ref}","display":"Lin"}`))).toBe(obs(`"subject":{"reference":"${ref}"}`));
    }
    expect(textPath(obs('"subject":{"reference":7,"display":"Lin"}'))).toBe(obs('"subject":{"reference":7}'));
    expect(textPath(obs('"subject":{"reference":"Group/g1","display":"Ward 7"},"code":{"text":"x","display":"y","system":null}'))).toBe(
      obs('"subject":{"reference":"Group/g1","display":"Ward 7"},"code":{"text":"x","display":"y","system":null}'),
    );
    // Cuts in nested objects lying after and before the outer one's.
    const nested = '{"resourceType":"Basic","display":"top","author":{"reference":"Patient/p","display":"a"},"subject":{"display":"b","reference":"Patient/p"}}';
    expect(textPath(nested)).toBe('{"resourceType":"Basic","author":{"reference":"Patient/p"},"subject":{"reference":"Patient/p"}}');
  });

  it('keeps escapes in strings it does not read, checked as JSON.parse checks them', () => {
    const escaped = '"note":[{"text":"line one\\nline \\"two\\" \\\\ \\u00e9 \\ud800 \\/"}]';
    expect(textPath(obs(`${escaped},"subject":{"display":"Lin, \\"D\\"","reference":"Patient/p1"}`))).toBe(obs(`${escaped},"subject":{"reference":"Patient/p1"}`));
    const narrative = '{"resourceType":"CarePlan","id":"c1","text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">Care Plan</div>"},"subject":{"reference":"Patient/p1","display":"Lin"}}';
    expect(textPath(narrative)).toBe(narrative.replace(',"display":"Lin"', ''));
  });

  it('keeps the text as it came elsewhere: a decimal keeps its trailing zero, characters beyond ASCII stay as they are', () => {
    const line = obs('"valueQuantity":{"value":1.50,"unit":"mg"},"subject":{"reference":"Patient/p1","display":"Lin"}');
    expect(textPath(line)).toBe(obs('"valueQuantity":{"value":1.50,"unit":"mg"},"subject":{"reference":"Patient/p1"}'));
    const wide = obs('"note":[{"text":"caf\u00e9 \u2014 \ud83d\ude00"}],"subject":{"display":"\u0141\u00f3d\u017a","reference":"#p"}');
    expect(textPath(wide)).toBe(obs('"note":[{"text":"caf\u00e9 \u2014 \ud83d\ude00"}],"subject":{"reference":"#p"}'));
  });

  it('leaves to the object path what it cannot answer for certain', () => {
    const refused = [
      // A repeated key: JSON.parse keeps the last, the text would keep the first ("Lin" hidden from the profile).
      obs('"subject":{"reference":"Patient/p1","display":"Lin"},"subject":{"reference":"Patient/p1"}'),
      obs('"subject":{"reference":"Patient/p1","display":"Lin","display":"x"}'),
      // A reference that is only a display: the object path removes it whole (no `{}`).
      obs('"subject":{"display":"Lin, Derrick"}'),
      obs('"participant":[{"individual":{"display":"Lin"}}]'),
      // Escapes and control characters.
      obs('"subject":{"reference":"Patient/p1","disp\\u006cay":"Lin"}'),
      obs('"subject":{"reference":"Patient\\/p1","display":"Lin"}'),
      obs('"subject":{"type":"Pati\\u0065nt","display":"Lin"}'),
      '{"resourceType":"Pati\\u0065nt","id":"p1","name":[{"family":"Lin"}]}',
      obs('"note":[{"text":"a\\xb"}]'),
      obs('"note":[{"text":"a\\u12"}]'),
      obs('"note":[{"text":"a\\u12G4"}]'),
      obs('"note":[{"text":"a\\"}]'),
      obs('"note":[{"text":"a\tb"}]'),
      // People, anywhere; Bundles; not resources.
      '{"resourceType":"Patient","id":"p1","name":[{"family":"Lin"}]}',
      obs('"contained":[{"resourceType":"RelatedPerson","id":"c1","name":[{"family":"Lin"}]}]'),
      '{"resourceType":"Bundle","type":"collection","entry":[]}',
      '{"id":"x"}',
      '{"resourceType":"observation"}',
      '{"resourceType":7}',
      ' {"resourceType":"Observation"}',
      // Not JSON.
      obs('"value":01'),
      obs('"value":1.'),
      obs('"value":.5'),
      obs('"value":-'),
      obs('"value":1e'),
      obs('"value":tru'),
      obs('"value":"a'),
      obs('"value":[1,]'),
      obs('"value":{"a":1,}'),
      obs('"value":{,}'),
      obs('"value" 1'),
      obs('"value":1') + 'x',
      obs('"value":1') + '}',
      '{"resourceType":"Observation"',
      obs('"subject":{"reference":"Patient/p1","__proto__":{"display":"Lin"}}'),
      '{' + '"a":{'.repeat(100) + '}'.repeat(100) + '}',
    ];
    for (const line of refused) expect(exportByText(line), line).toBeUndefined();
  });

  it('agrees with the object path on the benchmark corpus', () => {
    const generator = new CorpusGenerator(7);
    let answered = 0;
    let cut = 0;
    for (let p = 0; p < 40; p++) {
      for (const resource of generator.patient()) {
        const line = JSON.stringify(resource);
        const text = textPath(line);
        if (text === undefined) continue;
        answered++;
        if (text !== line) cut++;
        // On canonical input (JSON.stringify's), the text path gives JSON.stringify's bytes.
        expect(text).toBe(JSON.stringify(objectPath(line)));
      }
    }
    expect(answered).toBeGreaterThan(500);
    expect(cut).toBeGreaterThan(300);
  });

  it('never answers for a mangled line but as the object path would', () => {
    const next = random(11);
    const lines = readFileSync(join(import.meta.dirname, 'fixtures/deid/edge-cases.ndjson'), 'utf8').split('\n').filter(Boolean);
    const generator = new CorpusGenerator(3);
    for (let p = 0; p < 10; p++) for (const r of generator.patient()) lines.push(JSON.stringify(r));
    const pieces = ['"', ',', ':', '{', '}', '[', ']', ' ', '0', '-', '.', 'e', 'display', '"display":"x",', 'null', '1', '\\', '\\"', '\\n', '\\u00', '\\u0041'];
    lines.push(obs('"note":[{"text":"a \\"quoted\\" \\\\ word\\nnext \\u00e9"}],"subject":{"reference":"Patient/p1","display":"Lin"}'));
    let answered = 0;
    for (let n = 0; n < 20_000; n++) {
      let line = lines[Math.floor(next() * lines.length)]!;
      for (let edits = 1 + Math.floor(next() * 2); edits > 0; edits--) {
        const at = Math.floor(next() * line.length);
        const cutLength = Math.floor(next() * 3);
        const insert = next() < 0.5 ? pieces[Math.floor(next() * pieces.length)]! : '';
        line = line.slice(0, at) + insert + line.slice(at + cutLength);
      }
      let valid = true;
      try {
        JSON.parse(line);
      } catch {
        valid = false;
      }
      const result = exportByText(line);
      if (!valid) expect(result, line).toBeUndefined();
      else if (result) {
        answered++;
        textPath(line);
      }
    }
    expect(answered).toBeGreaterThan(1000);
  });
});
