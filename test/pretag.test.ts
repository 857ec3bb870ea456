import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { RecordRejected } from '../src/errors.js';
import { PatientStates } from '../src/pretag/patientStates.js';
import { Spool } from '../src/pretag/spool.js';
import { Rejects } from '../src/rejects.js';
import type { Batch, Resource } from '../src/types.js';
import {
  addTags,
  hFlagTiter,
  mayBeSmokingStatus,
  missingResult,
  pretagCodesOf,
  pretagRecord,
  pretagStage,
  smokingStatus,
  spliceTags,
  type PretagOptions,
  type PretagStats,
} from '../transforms/pretag.js';

const FIXTURE = new URL('./fixtures/pretag/contract-examples.ndjson', import.meta.url);
const examples: Resource[] = readFileSync(FIXTURE, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => JSON.parse(line));

/** The tags each example must get, from the contract's rules (ids not listed: none). */
const EXPECTED_TAGS: Record<string, string[]> = JSON.parse(
  readFileSync(new URL('./fixtures/pretag/expected-tags.json', import.meta.url), 'utf8'),
);

/** The extension exactly as the contract spells it, typed out by hand (note the em dashes). */
const H_FLAG_EXTENSION =
  '{"url":"https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag","valueCodeableConcept":' +
  '{"coding":[{"system":"https://healthclaw.example.org/fhir/StructureDefinition/curatr-pretag","code":"h_flag_titer",' +
  '"display":"High-value flag present — clinical review recommended"}],"text":"High-value flag present — clinical review recommended"}}';

function byId(id: string): Resource {
  return examples.find((r) => r.id === id)!;
}

function ctx() {
  const account = new Account();
  return { account, rejects: new Rejects(account) };
}

/** Runs the stage over `batches` and returns what comes out, as batches. */
async function runStage(batches: Batch[], options: PretagOptions = {}, context = ctx()): Promise<{ out: Batch[]; stats: PretagStats }> {
  const out: Batch[] = [];
  await pipeline(
    Readable.from(structuredClone(batches), { objectMode: true }),
    pretagStage(options, context),
    new Writable({
      objectMode: true,
      write(batch: Batch, _e, cb) {
        out.push(batch);
        cb();
      },
    }),
  );
  return { out, stats: context.account.stages.pretag as PretagStats };
}

/** `resources` cut into batches of `size`, lines numbered from 1. */
function batchesOf(resources: Resource[], size: number, source = 'in.ndjson'): Batch[] {
  const batches: Batch[] = [];
  for (let i = 0; i < resources.length; i += size) {
    const slice = resources.slice(i, i + size);
    batches.push({ source, lines: slice.map((_, j) => i + j + 1), resources: slice });
  }
  return batches;
}

const flat = (batches: Batch[]) => batches.flatMap((b) => b.resources);
const tagsById = (resources: Resource[]) => Object.fromEntries(resources.map((r) => [r.id, pretagCodesOf(r)]));
const expectedTags = () => Object.fromEntries(examples.map((r) => [r.id, EXPECTED_TAGS[r.id!] ?? []]));

describe('per-record cores', () => {
  it('smokingStatus: first SNOMED coding, never codes, any other SNOMED code is ever, case-insensitive system', () => {
    expect(smokingStatus(byId('never-current-1'))).toBe('never');
    expect(smokingStatus(byId('never-never-2'))).toBe('never'); // 221000119102
    expect(smokingStatus(byId('current-ex-2'))).toBe('ever'); // ex-smoker 8517006
    expect(smokingStatus(byId('upper-snomed-2'))).toBe('ever'); // HTTP://SNOMED.INFO/SCT
    expect(smokingStatus(byId('never-nonsnomed-2'))).toBe('unknown');
    expect(smokingStatus(byId('no-value-2'))).toBe('unknown');
    expect(smokingStatus(byId('first-snomed-counts-1'))).toBe('never');
    expect(smokingStatus(byId('interp-H'))).toBeUndefined();
    expect(smokingStatus({ resourceType: 'Condition', code: { coding: [{ code: '72166-2' }] } })).toBeUndefined();
  });

  it('hFlagTiter: H, HH, HU; valueString "High", "Hemolyzed", ">>>" but not "high"', () => {
    for (const id of ['interp-H', 'interp-HH', 'interp-HU', 'string-High', 'string-Hemolyzed', 'string-spaced-High', 'string-titer']) {
      expect(hFlagTiter(byId(id)), id).toBe(true);
    }
    for (const id of ['interp-L', 'interp-h', 'string-high', 'string-normal', 'quantity', 'condition-no-value']) {
      expect(hFlagTiter(byId(id)), id).toBe(false);
    }
  });

  it('missingResult: no top-level value[x]; valueBoolean false is a value; only Observations', () => {
    expect(missingResult(byId('component-only'))).toBe(true);
    expect(missingResult(byId('absent-only'))).toBe(true);
    expect(missingResult(byId('boolean-false'))).toBe(false);
    expect(missingResult(byId('quantity'))).toBe(false);
    expect(missingResult(byId('condition-no-value'))).toBe(false);
    expect(missingResult(byId('labs'))).toBe(false);
  });

  it('addTags writes the contract extension byte for byte, after existing extensions, without touching the input', () => {
    const input = byId('kept-extension');
    const before = JSON.stringify(input);
    const tagged = addTags(input, ['h_flag_titer']);
    expect(JSON.stringify(input)).toBe(before);
    expect(tagged).not.toBe(input);
    const ext = tagged.extension as unknown[];
    expect(ext[0]).toEqual((input.extension as unknown[])[0]);
    expect(JSON.stringify(ext[1])).toBe(H_FLAG_EXTENSION);
  });

  it('addTags is idempotent, keeps the contract order and returns the same object when nothing is added', () => {
    const input = byId('h-and-missing');
    const once = addTags(input, ['missing_result', 'h_flag_titer', 'smoking_contradiction']);
    expect(pretagCodesOf(once)).toEqual(['smoking_contradiction', 'h_flag_titer', 'missing_result']);
    expect(addTags(once, ['h_flag_titer', 'missing_result'])).toBe(once);
    const more = addTags(addTags(input, ['missing_result']), ['h_flag_titer', 'missing_result']);
    expect(pretagCodesOf(more)).toEqual(['missing_result', 'h_flag_titer']);
  });

  it('spliceTags says in text what addTags does to the object, for a resource without extensions', () => {
    const text = '{"resourceType":"Observation","id":"o1", "status":"final","valueString":"High"}';
    const codes = ['smoking_contradiction', 'h_flag_titer'] as const;
    const spliced = String(spliceTags(text, codes));
    expect(spliceTags(text, codes).tail).toBe(spliceTags('{"id":"other"}', codes).tail); // encoded once
    expect(spliced.startsWith(text.slice(0, -1) + ',"extension":[')).toBe(true);
    expect(JSON.parse(spliced)).toEqual(addTags(JSON.parse(text), [...codes]));
    expect(JSON.stringify(JSON.parse(spliced))).toBe(JSON.stringify(addTags(JSON.parse(text), [...codes])));
  });

  it('addTags rejects an extension that is not an array, naming the element only', () => {
    const bad = { resourceType: 'Observation', extension: { url: 'secret' } } as Resource;
    expect(() => addTags(bad, ['missing_result'])).toThrow(RecordRejected);
    expect(() => addTags(bad, ['missing_result'])).toThrow(/^extension is not an array/);
    expect(addTags(bad, [])).toBe(bad);
  });

  it('pretagRecord applies the per-record rules only', () => {
    const core = pretagRecord();
    expect(pretagCodesOf(core(byId('no-value-2'), { source: '-', line: 1 })!)).toEqual(['missing_result']);
    expect(core(byId('never-current-1'), { source: '-', line: 1 })).toBe(byId('never-current-1'));
  });

  it('mayBeSmokingStatus passes every text that can hold the code, literal or escaped', () => {
    expect(mayBeSmokingStatus('{"code":"72166-2"}')).toBe(true);
    const escaped = '{"code":"72166\\u002d2"}';
    expect(JSON.parse(escaped).code).toBe('72166-2');
    expect(mayBeSmokingStatus(escaped)).toBe(true);
    expect(mayBeSmokingStatus('{"code":"2339-0","valueString":"72166"}')).toBe(false);
  });
});

describe('PatientStates', () => {
  it('keeps bits per reference across growth, and tells unknown references apart', () => {
    const states = new PatientStates(16);
    for (let i = 0; i < 5000; i++) states.mark(`Patient/${i}`, i % 3 === 0 ? 1 : 2);
    for (let i = 0; i < 5000; i += 2) states.mark(`Patient/${i}`, 1);
    expect(states.size).toBe(5000);
    for (let i = 0; i < 5000; i++) {
      const want = (i % 3 === 0 ? 1 : 2) | (i % 2 === 0 ? 1 : 0);
      expect(states.get(`Patient/${i}`)).toBe(want);
    }
    expect(states.get('Patient/5000')).toBe(0);
    expect(states.get('')).toBe(0);
    expect(states.count(3)).toBe([...Array(5000).keys()].filter((i) => i % 2 === 0 && i % 3 !== 0).length);
    expect(states.bytes).toBeLessThanOrEqual(5000 * 36);
  });

  it('gives 300,000 references of three shapes a place each (a shared key would merge two patients)', () => {
    const states = new PatientStates();
    const shapes = [(i: number) => `Patient/${i}`, (i: number) => `urn:uuid:${randomUUID()}`, (i: number) => `Patient/p${String(i).padStart(12, '0')}`];
    for (const shape of shapes) for (let i = 0; i < 100_000; i++) states.mark(shape(i), 1 + (i % 2));
    expect(states.size).toBe(300_000);
    expect(states.count(1) + states.count(2)).toBe(300_000);
  });
});

describe('pretagStage', () => {
  const rescanOf = (batches: Batch[]) => () => Readable.from(structuredClone(batches), { objectMode: true });

  it('two passes: every contract example tagged as expected, in input order', async () => {
    const batches = batchesOf(examples, 5);
    const { out, stats } = await runStage(batches, { rescan: rescanOf(batches) });
    const resources = flat(out);
    expect(resources.map((r) => r.id)).toEqual(examples.map((r) => r.id));
    expect(tagsById(resources)).toEqual(expectedTags());
    expect(stats).toMatchObject({
      mode: 'two-pass',
      examined: examples.length,
      tagsAdded: { smoking_contradiction: 9, h_flag_titer: 9, missing_result: 4 },
      peakPatients: 8,
      contradictoryPatients: 4,
      spoolBytes: 0,
    });
    // Lines travel with their resources.
    expect(out.flatMap((b) => b.lines)).toEqual(examples.map((_, i) => i + 1));
  });

  it('spool: the same tags; other resources in order first, then the smoking-status ones in order', async () => {
    const { out, stats } = await runStage(batchesOf(examples, 4));
    const resources = flat(out);
    const smoking = examples.filter((r) => smokingStatus(r) !== undefined).map((r) => r.id);
    const others = examples.filter((r) => smokingStatus(r) === undefined).map((r) => r.id);
    expect(resources.map((r) => r.id)).toEqual([...others, ...smoking]);
    expect(tagsById(resources)).toEqual(expectedTags());
    expect(stats.mode).toBe('spool');
    expect(stats.spoolBytes).toBeGreaterThan(0);
    const lines = new Map(out.flatMap((b) => b.resources.map((r, i) => [r.id, b.lines[i]])));
    examples.forEach((r, i) => expect(lines.get(r.id)).toBe(i + 1));
  });

  it('gives the same bytes whatever the batching', async () => {
    const outputs = new Set<string>();
    for (const size of [1, 3, 7, 100]) {
      const batches = batchesOf(examples, size);
      for (const options of [{ rescan: rescanOf(batches) }, {}]) {
        const { out } = await runStage(batches, options);
        outputs.add(`${'rescan' in options}:${flat(out).map((r) => JSON.stringify(r)).join('\n')}`);
      }
    }
    expect(outputs.size).toBe(2);
  });

  it('judges patients apart: one contradictory, one not', async () => {
    const pick = ['never-current-1', 'current-ex-1', 'never-current-2', 'current-ex-2'].map(byId);
    const { out } = await runStage(batchesOf(pick, 1));
    expect(tagsById(flat(out))).toEqual({
      'never-current-1': ['smoking_contradiction'],
      'never-current-2': ['smoking_contradiction'],
      'current-ex-1': [],
      'current-ex-2': [],
    });
  });

  it('tagging a tagged stream adds nothing', async () => {
    const batches = batchesOf(examples, 6);
    const once = flat((await runStage(batches)).out);
    const again = await runStage(batchesOf(once, 6));
    expect(flat(again.out).map((r) => JSON.stringify(r))).toEqual(once.map((r) => JSON.stringify(r)));
    expect(again.stats.tagsAdded).toEqual({ smoking_contradiction: 0, h_flag_titer: 0, missing_result: 0 });
  });

  it('applies only the selected rules', async () => {
    const batches = batchesOf(examples, 10);
    const { out, stats } = await runStage(batches, { rules: new Set(['missing_result']) });
    expect(stats.mode).toBe('per-record');
    expect(flat(out).map((r) => r.id)).toEqual(examples.map((r) => r.id));
    const tagged = Object.entries(tagsById(flat(out))).filter(([, tags]) => tags.length > 0);
    expect(tagged).toEqual([
      ['no-value-2', ['missing_result']],
      ['component-only', ['missing_result']],
      ['absent-only', ['missing_result']],
      ['h-and-missing', ['missing_result']],
    ]);
  });

  it('routes a record that cannot be tagged to the reject policy, without its content in the reason', async () => {
    const bad = { resourceType: 'Observation', id: 'bad', extension: 'PHI', valueString: 'High' } as Resource;
    const context = ctx();
    await expect(runStage(batchesOf([byId('quantity'), bad], 2), {}, context)).rejects.toThrow(
      'in.ndjson:2: Observation: extension is not an array (cannot add a pre-tag)',
    );
  });
});

describe('Spool', () => {
  it('gives back every line in the order written, across gathered writes, with the exact byte count', async () => {
    const spool = await Spool.open();
    const written: string[] = [];
    try {
      // About 3 MB in lines of varied length (some multi-byte), so writes happen before, at and after the gathering limit.
      for (let i = 0; i < 3000; i++) {
        const lines = Array.from({ length: 1 + (i % 3) }, (_, j) => `${i}.${j} ${'é—x'.repeat((i * 7 + j) % 400)}`);
        written.push(...lines);
        await spool.write(lines.map((line) => line + '\n').join(''));
      }
      const read: string[] = [];
      for await (const lines of spool.lines(4096)) read.push(...lines);
      expect(read).toEqual(written);
      expect(spool.bytes).toBe(Buffer.byteLength(written.join('\n') + '\n'));
    } finally {
      await spool.close();
    }
  });

  it('refuses a write while the previous one is on its way to the disk', async () => {
    const spool = await Spool.open();
    try {
      const big = 'x'.repeat(1 << 20) + '\n';
      const first = spool.write(big); // reaches the limit: written now
      await expect(spool.write('y\n')).rejects.toThrow('the previous write is not done');
      await first;
    } finally {
      await spool.close();
    }
  });
});
