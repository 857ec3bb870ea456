import { createWriteStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { pretagCodesOf } from '../transforms/pretag.js';
import type { Resource } from '../src/types.js';
import { hx, parseNdjson, SHARED, tempDir } from './support/cli.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/pretag/', import.meta.url));
const EXAMPLES = join(FIXTURES, 'contract-examples.ndjson');
const SMOKING = join(SHARED, 'data/bulk-data-server/smoking-status-72166-2.ndjson');
const EXPORT = join(SHARED, 'data/bulk-data-server/export-system');
const NEVER = ['266919005', '221000119102'];
/** The tags each contract example must get (ids not listed: none). */
const EXPECTED_TAGS: Record<string, string[]> = JSON.parse(readFileSync(join(FIXTURES, 'expected-tags.json'), 'utf8'));

const ids = (rs: Record<string, unknown>[]) => rs.map((r) => r.id as string);
const tagsOf = (rs: Record<string, unknown>[]) => Object.fromEntries(rs.map((r) => [r.id, pretagCodesOf(r as Resource)]));
const isSmoking = (r: Record<string, unknown>) =>
  ((r.code as { coding?: { code?: string }[] } | undefined)?.coding ?? []).some((c) => c.code === '72166-2');

/** An independent reading of the contract for real data: patients with a never and an ever SNOMED code. */
function contradictoryPatients(resources: Record<string, unknown>[]): Set<string> {
  const seen = new Map<string, Set<string>>();
  for (const r of resources.filter(isSmoking)) {
    const coding = (r.valueCodeableConcept as { coding?: { system?: string; code?: string }[] } | undefined)?.coding ?? [];
    const snomed = coding.find((c) => (c.system ?? '').toLowerCase().includes('snomed'));
    if (!snomed?.code) continue;
    const subject = (r.subject as { reference?: string } | undefined)?.reference ?? '';
    if (!seen.has(subject)) seen.set(subject, new Set());
    seen.get(subject)!.add(NEVER.includes(snomed.code) ? 'never' : 'ever');
  }
  return new Set([...seen].filter(([, kinds]) => kinds.size === 2).map(([subject]) => subject));
}

describe('hx pretag', () => {
  const examples = parseNdjson(readFileSync(EXAMPLES));
  const expected = Object.fromEntries(examples.map((r) => [r.id, EXPECTED_TAGS[r.id as string] ?? []]));

  it('tags the contract examples; a file keeps input order; the account counts tags and patients', async () => {
    const dir = tempDir();
    const r = await hx(['pretag', EXAMPLES, '--report', join(dir, 'report.json')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = parseNdjson(r.stdout);
    expect(ids(out)).toEqual(ids(examples));
    expect(tagsOf(out)).toEqual(expected);
    // Nothing but the extensions changed.
    out.forEach((resource, i) => {
      const { extension, ...rest } = resource;
      const { extension: before, ...restBefore } = examples[i]!;
      expect(rest).toEqual(restBefore);
      expect((extension as unknown[] | undefined)?.slice(0, (before as unknown[] | undefined)?.length ?? 0)).toEqual(before ?? (extension ? [] : undefined));
    });
    const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    expect(report).toMatchObject({ read: 37, written: 37, balanced: true });
    expect(report.stages.pretag).toMatchObject({
      mode: 'two-pass',
      examined: 37,
      tagsAdded: { smoking_contradiction: 9, h_flag_titer: 9, missing_result: 4 },
      peakPatients: 8,
    });
  });

  it('from a pipe: the same tags, smoking-status Observations last in input order', async () => {
    const r = await hx(['pretag'], { stdin: readFileSync(EXAMPLES) });
    expect(r.code).toBe(0);
    const out = parseNdjson(r.stdout);
    expect(ids(out)).toEqual([...ids(examples.filter((x) => !isSmoking(x))), ...ids(examples.filter(isSmoking))]);
    expect(tagsOf(out)).toEqual(expected);
  });

  it('leaves nothing in the spool folder, and says when it cannot make one', async () => {
    const dir = tempDir();
    const r = await hx(['pretag', '--temp-dir', dir, '--report', join(dir, '..', `${basename(dir)}.json`)], { stdin: readFileSync(EXAMPLES) });
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, '..', `${basename(dir)}.json`), 'utf8')).stages.pretag.spoolBytes).toBeGreaterThan(0);
    expect(readdirSync(dir)).toEqual([]);
    const missing = await hx(['pretag', '--temp-dir', join(dir, 'nope')], { stdin: readFileSync(EXAMPLES) });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`hx: cannot create a temporary file in ${join(dir, 'nope')} (ENOENT)\n`);
  });

  it('finds contradictions split across two files, and across a pipe', async () => {
    const dir = tempDir();
    const [never, ever, other] = ['never-current-1', 'never-current-2', 'quantity'].map((id) => examples.find((x) => x.id === id)!);
    writeFileSync(join(dir, 'a.ndjson'), JSON.stringify(never) + '\n' + JSON.stringify(other) + '\n');
    writeFileSync(join(dir, 'b.ndjson'), JSON.stringify(ever) + '\n');
    const files = await hx(['pretag', join(dir, 'a.ndjson'), join(dir, 'b.ndjson')]);
    const fromFiles = parseNdjson(files.stdout);
    expect(ids(fromFiles)).toEqual(['never-current-1', 'quantity', 'never-current-2']);
    expect(tagsOf(fromFiles)).toEqual({ 'never-current-1': ['smoking_contradiction'], quantity: [], 'never-current-2': ['smoking_contradiction'] });

    const piped = await hx(['pretag'], { stdin: readFileSync(join(dir, 'a.ndjson')) + readFileSync(join(dir, 'b.ndjson'), 'utf8') });
    const fromPipe = parseNdjson(piped.stdout);
    expect(ids(fromPipe)).toEqual(['quantity', 'never-current-1', 'never-current-2']);
    expect(tagsOf(fromPipe)).toEqual(tagsOf(fromFiles));
  });

  it('is idempotent: pretag of its own output gives the same bytes (file and pipe)', async () => {
    const dir = tempDir();
    const once = await hx(['pretag', EXAMPLES, '-o', join(dir, 'once.ndjson')]);
    expect(once.code, once.stderr).toBe(0);
    const twice = await hx(['pretag', join(dir, 'once.ndjson'), '--report', join(dir, 'r.json')]);
    expect(twice.stdout.equals(readFileSync(join(dir, 'once.ndjson')))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8')).stages.pretag.resourcesTagged).toBe(0);
    const piped = await hx(['pretag'], { stdin: readFileSync(EXAMPLES) });
    const pipedTwice = await hx(['pretag'], { stdin: piped.stdout });
    expect(pipedTwice.stdout.equals(piped.stdout)).toBe(true);
  });

  it('tags the real smoking-status Observations of the patients that contradict themselves', async () => {
    const input = parseNdjson(readFileSync(SMOKING));
    const patients = contradictoryPatients(input);
    expect(patients.size).toBeGreaterThan(0);
    const r = await hx(['pretag', SMOKING]);
    const out = parseNdjson(r.stdout);
    expect(ids(out)).toEqual(ids(input));
    const tagged = out.filter((x) => pretagCodesOf(x as Resource).length > 0);
    const want = input.filter((x) => patients.has((x.subject as { reference: string }).reference));
    expect(ids(tagged)).toEqual(ids(want));
    for (const x of tagged) expect(pretagCodesOf(x as Resource)).toEqual(['smoking_contradiction']);
  });

  it('reads a gzip Bulk export: files and pipe give the same resources and tags', async () => {
    const files = ['32.Observation.ndjson.gz', '36.Patient.ndjson.gz'].map((f) => join(EXPORT, f));
    const twoPass = await hx(['pretag', ...files]);
    const cat = await hx(['cat', ...files]);
    const piped = await hx(['pretag'], { stdin: cat.stdout });
    expect(twoPass.code).toBe(0);
    expect(piped.code).toBe(0);
    const a = parseNdjson(twoPass.stdout);
    const b = parseNdjson(piped.stdout);
    expect(ids(a)).toEqual(ids(parseNdjson(cat.stdout)));
    expect(ids(b)).toEqual([...ids(a.filter((x) => !isSmoking(x))), ...ids(a.filter(isSmoking))]);
    expect(tagsOf(b)).toEqual(tagsOf(a));
    const patients = contradictoryPatients(a);
    for (const x of a.filter(isSmoking)) {
      const contradictory = patients.has((x.subject as { reference: string }).reference);
      expect(pretagCodesOf(x as Resource).includes('smoking_contradiction')).toBe(contradictory);
    }
  });

  it('--rules selects, --no-<rule> skips (snake or kebab case), unknown rules are usage errors', async () => {
    const count = (stdout: Buffer) => {
      const counts: Record<string, number> = {};
      for (const r of parseNdjson(stdout)) for (const t of pretagCodesOf(r as Resource)) counts[t] = (counts[t] ?? 0) + 1;
      return counts;
    };
    expect(count((await hx(['pretag', EXAMPLES, '--rules', 'h_flag_titer'])).stdout)).toEqual({ h_flag_titer: 9 });
    expect(count((await hx(['pretag', EXAMPLES, '--rules', 'smoking-contradiction,missing_result'])).stdout)).toEqual({
      smoking_contradiction: 9,
      missing_result: 4,
    });
    expect(count((await hx(['pretag', EXAMPLES, '--no-missing_result', '--no-h-flag-titer'])).stdout)).toEqual({ smoking_contradiction: 9 });
    const bad = await hx(['pretag', EXAMPLES, '--rules', 'h_flag']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown rule "h_flag"');
    const none = await hx(['pretag', EXAMPLES, '--rules', 'missing_result', '--no-missing_result']);
    expect(none.code).toBe(2);
  });

  it('rejects an Observation whose extension is not an array, by place and rule, never by content', async () => {
    const dir = tempDir();
    const input = '{"resourceType":"Observation","id":"x","extension":"SECRET","valueString":"High"}\n{"resourceType":"Patient","id":"p"}\n';
    const fail = await hx(['pretag'], { stdin: input });
    expect(fail.code).toBe(1);
    expect(fail.stderr).toBe('hx: -:1: Observation: extension is not an array (cannot add a pre-tag)\n');
    const kept = await hx(['pretag', '--rejects', join(dir, 'rejects.ndjson'), '--report', join(dir, 'r.json')], { stdin: input });
    expect(kept.code).toBe(0);
    expect(ids(parseNdjson(kept.stdout))).toEqual(['p']);
    expect(parseNdjson(readFileSync(join(dir, 'rejects.ndjson')))[0]).toMatchObject({ source: '-', line: 1 });
    expect(JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8'))).toMatchObject({ read: 2, written: 1, rejected: 1, balanced: true });
  });
});

describe('hx pretag on 100,000 interleaved patients', () => {
  const PATIENTS = 100_000;
  let dir: string;
  let input: string;

  /** Two rounds of smoking-status Observations, a Condition between each: even patients contradict themselves. */
  beforeAll(async () => {
    dir = tempDir();
    input = join(dir, 'big.ndjson');
    const out = createWriteStream(input);
    const smoking = (id: string, p: number, code: string) =>
      `{"resourceType":"Observation","id":"${id}","code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}]},` +
      `"subject":{"reference":"Patient/${p}"},"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"${code}"}]}}\n`;
    for (let round = 0; round < 2; round++) {
      let text = '';
      for (let p = 0; p < PATIENTS; p++) {
        const code = round === 0 || p % 2 === 1 ? '266919005' : '8517006';
        text += smoking(`s${round}-${p}`, p, code);
        if (round === 0) text += `{"resourceType":"Condition","id":"c${p}","subject":{"reference":"Patient/${p}"}}\n`;
        if (text.length > 1 << 20) {
          if (!out.write(text)) await once(out, 'drain');
          text = '';
        }
      }
      out.write(text);
    }
    out.end();
    await once(out, 'finish');
  });

  const MAX_RSS = join(FIXTURES, 'report-max-rss.mjs');
  const maxRssMb = (stderr: string) => Number(/hx-test-max-rss-kb=(\d+)/.exec(stderr)![1]) / 1024;

  for (const mode of ['file', 'pipe'] as const) {
    it(`${mode}: tags exactly the contradictory patients' records, memory flat, records on disk not in memory`, async () => {
      const report = join(dir, `${mode}.json`);
      const args = ['pretag', '--report', report, '-o', join(dir, `${mode}.out.ndjson`)];
      const r = await hx(mode === 'file' ? [...args, input] : args, {
        stdin: mode === 'pipe' ? readFileSync(input) : undefined,
        env: { NODE_OPTIONS: `--import=${MAX_RSS}` },
      });
      expect(r.code, r.stderr).toBe(0);
      const stats = JSON.parse(readFileSync(report, 'utf8')).stages.pretag;
      expect(stats).toMatchObject({
        examined: 3 * PATIENTS,
        smokingObservations: 2 * PATIENTS,
        tagsAdded: { smoking_contradiction: PATIENTS, h_flag_titer: 0, missing_result: 0 },
        peakPatients: PATIENTS,
        contradictoryPatients: PATIENTS / 2,
      });
      expect(stats.patientStateBytes).toBeLessThanOrEqual(36 * PATIENTS);
      if (mode === 'pipe') expect(stats.spoolBytes).toBeGreaterThan(200 * 2 * PATIENTS);
      // 57 MB of input. `hx cat` of it peaks near 120 MB (small records: many objects per batch); holding its
      // 200,000 smoking-status records in memory would add about 120 MB more.
      expect(maxRssMb(r.stderr)).toBeLessThan(200);
      const out = readFileSync(join(dir, `${mode}.out.ndjson`), 'utf8').split('\n');
      const tagged = out.filter((line) => line.includes('smoking_contradiction'));
      expect(tagged.length).toBe(PATIENTS);
      expect(tagged.every((line) => /"reference":"Patient\/\d*[02468]"/.test(line))).toBe(true);
      if (mode === 'file') expect(out[1]).toContain('"id":"c0"');
      else expect(out[0]).toContain('"id":"c0"');
    });
  }
});
