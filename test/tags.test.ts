import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { pretagExtension } from '../transforms/pretag.js';
import { hx, parseNdjson } from './support/cli.js';

const EXAMPLES = fileURLToPath(new URL('./fixtures/pretag/contract-examples.ndjson', import.meta.url));
const URL_ = 'https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag';

/** A few tagged resources, one of each interesting shape, as a pretty-printed Bundle document. */
const bundle = JSON.stringify(
  {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { resource: { resourceType: 'Observation', id: 'o1', subject: { reference: 'Patient/a' }, extension: [pretagExtension('h_flag_titer')] } },
      { resource: { resourceType: 'Patient', id: 'a' } },
      {
        resource: {
          resourceType: 'Observation',
          id: 'observation-2',
          subject: { reference: 'Patient/b' },
          extension: [
            { url: 'http://example.org/other', valueString: 'x' },
            pretagExtension('smoking_contradiction'),
            pretagExtension('missing_result'),
          ],
        },
      },
      // Tagged by someone else with a code hx does not make, and no subject, no id.
      { resource: { resourceType: 'Condition', extension: [{ url: URL_, valueCodeableConcept: { coding: [{ code: 'custom_tag' }] } }] } },
      // An extension of another URL with a known code is not a pre-tag.
      { resource: { resourceType: 'Observation', id: 'o4', extension: [{ url: 'http://example.org/x', valueCodeableConcept: { coding: [{ code: 'h_flag_titer' }] } }] } },
    ],
  },
  null,
  2,
);

describe('hx tags', () => {
  it('prints an aligned table of the tagged resources, then the count per tag', async () => {
    const r = await hx(['tags'], { stdin: bundle });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(
      [
        'ID             TYPE         SUBJECT    TAGS',
        'o1             Observation  Patient/a  h_flag_titer',
        'observation-2  Observation  Patient/b  smoking_contradiction,missing_result',
        '-              Condition    -          custom_tag',
        '',
        'smoking_contradiction  1',
        'h_flag_titer           1',
        'missing_result         1',
        'custom_tag             1',
        'tagged resources       3',
        '',
      ].join('\n'),
    );
  });

  it('--json: one object per tagged resource on stdout, the counts on stderr', async () => {
    const r = await hx(['tags', '--json'], { stdin: bundle });
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout)).toEqual([
      { id: 'o1', resourceType: 'Observation', subject: 'Patient/a', tags: ['h_flag_titer'] },
      { id: 'observation-2', resourceType: 'Observation', subject: 'Patient/b', tags: ['smoking_contradiction', 'missing_result'] },
      { id: null, resourceType: 'Condition', subject: null, tags: ['custom_tag'] },
    ]);
    expect(r.stderr).toBe('hx: tags: smoking_contradiction 1, h_flag_titer 1, missing_result 1, custom_tag 1; 3 tagged resources\n');
  });

  it('reviews what hx pretag wrote: every tag it reports added is listed', async () => {
    const tagged = await hx(['pretag', EXAMPLES]);
    const r = await hx(['tags', '--json'], { stdin: tagged.stdout });
    const rows = parseNdjson(r.stdout);
    const expected = JSON.parse(readFileSync(new URL('./fixtures/pretag/expected-tags.json', import.meta.url), 'utf8'));
    expect(Object.fromEntries(rows.map((row) => [row.id, row.tags]))).toEqual(expected);
    expect(r.stderr).toContain('smoking_contradiction 9, h_flag_titer 9, missing_result 4; 20 tagged resources');
  });

  it('fixes column widths on the first 256 rows and streams the rest', async () => {
    const line = (id: string) => JSON.stringify({ resourceType: 'Observation', id, extension: [pretagExtension('missing_result')] }) + '\n';
    const ids = Array.from({ length: 300 }, (_, i) => (i === 280 ? 'a-much-longer-identifier' : `o${i}`));
    const r = await hx(['tags'], { stdin: ids.map(line).join('') });
    const rows = r.stdout.toString().split('\n');
    expect(rows[0]).toBe('ID    TYPE         SUBJECT  TAGS');
    expect(rows[1]).toBe('o0    Observation  -        missing_result');
    expect(rows[281]).toBe('a-much-longer-identifier  Observation  -        missing_result');
    expect(rows[301]).toBe('');
    expect(rows[304]).toBe('missing_result         300');
    expect(rows[305]).toBe('tagged resources       300');
  });

  it('says so when nothing is tagged', async () => {
    const r = await hx(['tags'], { stdin: '{"resourceType":"Patient","id":"p"}\n' });
    expect(r.stdout.toString()).toBe(
      'smoking_contradiction  0\nh_flag_titer           0\nmissing_result         0\ntagged resources       0\n',
    );
  });
});
