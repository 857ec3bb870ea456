/** The pieces of `hx bulk` on their own: manifest planning, line counting, kick-off parameters, error summaries, assertions. */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { clientAssertion } from '../src/bulk/auth.js';
import { StdoutDestination } from '../src/bulk/destination.js';
import { summariseErrors } from '../src/bulk/download.js';
import { exportUrl, parameterPairs, parametersResource } from '../src/bulk/kickoff.js';
import { LineCounter } from '../src/bulk/lineCounter.js';
import { parseManifest, planFiles } from '../src/bulk/manifest.js';
import { YoungCollection } from '../src/util/youngCollection.js';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/bulk');
const fixture = (name: string) => readFileSync(join(FIXTURES, name));

async function count(bytes: Buffer, chunkSize: number, readTypes: boolean) {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkSize) chunks.push(bytes.subarray(i, i + chunkSize));
  const counter = new LineCounter(readTypes);
  const out: Buffer[] = [];
  await pipeline(Readable.from(chunks), counter, new Writable({ write: (c, _e, done) => (out.push(c), done()) }));
  return { counts: counter.counts, out: Buffer.concat(out) };
}

describe('manifest', () => {
  it('plans local names per type in manifest order and keeps continuesInFile as information only', () => {
    const manifest = parseManifest(JSON.parse(fixture('manifest-export-system.json').toString()), 'test');
    const names = planFiles(manifest).map((f) => f.name);
    expect(names).toHaveLength(20);
    expect(names.slice(0, 2)).toEqual(['AllergyIntolerance.000.ndjson', 'CarePlan.000.ndjson']);
    expect(names.filter((n) => n.startsWith('Observation'))).toEqual(['Observation.000.ndjson', 'Observation.001.ndjson']);
    expect(manifest.output.find((e) => e.continuesInFile)?.continuesInFile).toBe('31.Observation.ndjson');
  });

  it('names error files apart from output; rejects a manifest without output', () => {
    const manifest = parseManifest(JSON.parse(fixture('manifest-some-files-failed.json').toString()), 'test');
    expect(planFiles(manifest).map((f) => `${f.kind}:${f.name}`)).toEqual([
      'output:Patient.000.ndjson',
      'error:error.OperationOutcome.000.ndjson',
      'error:error.OperationOutcome.001.ndjson',
    ]);
    expect(() => parseManifest({ transactionTime: 'x' }, 'status')).toThrow('status: the manifest has no output array');
  });
});

describe('LineCounter', () => {
  it('counts lines, Parameters header lines and types the same under any chunking', async () => {
    const bytes = fixture('organized-by-patient.ndjson');
    for (const size of [1, 7, 95, 4096, 1 << 20]) {
      const { counts, out } = await count(bytes, size, true);
      expect(counts).toMatchObject({ bytes: bytes.length, lines: 13, headerLines: 3, addedNewline: false });
      expect(Object.fromEntries(counts.types!)).toEqual({ Patient: 3, Condition: 7 });
      expect(out.equals(bytes)).toBe(true);
    }
  });

  it('adds a final newline when missing and skips blank lines', async () => {
    const bytes = Buffer.concat([Buffer.from('\r\n  \n'), fixture('error-2.AllergyIntolerance.ndjson')]);
    const { counts, out } = await count(bytes, 100, false);
    expect(counts).toMatchObject({ lines: 1, addedNewline: true, bytes: bytes.length + 1 });
    expect(out.at(-1)).toBe(0x0a);
  });
});

describe('YoungCollection', () => {
  it('asks for a young collection once per the given number of bytes passed, whatever the chunk sizes', () => {
    const asked: unknown[] = [];
    const young = new YoungCollection((options) => asked.push(options), 100);
    for (const size of [30, 30, 30]) young.passed(size);
    expect(asked).toEqual([]);
    young.passed(10);
    expect(asked).toEqual([{ type: 'minor' }]);
    young.passed(250);
    young.passed(99);
    expect(asked).toHaveLength(2);
    young.passed(1);
    expect(asked).toHaveLength(3);
  });

  it('does nothing when Node gives no gc (hx used as a library)', () => {
    expect(() => new YoungCollection(undefined, 1).passed(10)).not.toThrow();
  });
});

describe('kick-off parameters', () => {
  it('builds the URL of each level and the Parameters body', () => {
    expect(exportUrl('https://x/fhir/', { kind: 'group', id: 'a b' })).toBe('https://x/fhir/Group/a%20b/$export');
    const params = { _type: ['Patient', 'Observation'], _typeFilter: ['Observation?code=72166-2'], patient: ['Patient/1'], other: [['includeAssociatedData', 'LatestProvenanceResources']] as [string, string][] };
    expect(parameterPairs(params)).toEqual([
      ['_type', 'Patient,Observation'],
      ['_typeFilter', 'Observation?code=72166-2'],
      ['patient', 'Patient/1'],
      ['includeAssociatedData', 'LatestProvenanceResources'],
    ]);
    expect(parametersResource(params).parameter).toContainEqual({ name: 'patient', valueReference: { reference: 'Patient/1' } });
  });
});

describe('error summary', () => {
  it('names the file, counts OperationOutcomes and quotes distinct diagnostics', () => {
    const text = `${fixture('error-2.AllergyIntolerance.ndjson')}\n${fixture('error-2.AllergyIntolerance.ndjson')}`;
    expect(summariseErrors('error.OperationOutcome.000.ndjson', text, 2)).toBe(
      'error file error.OperationOutcome.000.ndjson: 2 OperationOutcomes: 2× Failed to export 2.AllergyIntolerance.ndjson',
    );
  });
});

describe('client assertion', () => {
  for (const alg of ['RS384', 'ES384'] as const) {
    it(`${alg}: iss = sub = client id, aud = token URL, exp within 5 minutes, unique jti`, async () => {
      const { privateKey, publicKey } = await generateKeyPair(alg);
      const jwks = createLocalJWKSet({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg }] });
      const a = await clientAssertion('client', 'https://auth/token', { key: privateKey, alg, kid: 'k' });
      const b = await clientAssertion('client', 'https://auth/token', { key: privateKey, alg, kid: 'k' });
      const { payload, protectedHeader } = await jwtVerify(a, jwks, { issuer: 'client', subject: 'client', audience: 'https://auth/token' });
      expect(protectedHeader).toEqual({ alg, kid: 'k', typ: 'JWT' });
      expect(payload.exp! - payload.iat!).toBe(300);
      const { payload: other } = await jwtVerify(b, jwks);
      expect(other.jti).not.toBe(payload.jti);
    });
  }
});

describe('StdoutDestination', () => {
  const planned = (index: number) => ({ kind: 'output' as const, index, name: `P.${index}`, entry: { url: `http://x/${index}` } });
  const collect = () => {
    const parts: Buffer[] = [];
    const out = new Writable({ write: (c, _e, done) => (parts.push(c), done()) });
    return { out, text: () => Buffer.concat(parts).toString() };
  };
  const write = async (stream: Writable, ...chunks: string[]) => {
    await pipeline(Readable.from(chunks.map((c) => Buffer.from(c))), stream);
  };

  it('keeps manifest order when later files finish first, and a retried head file is not repeated', async () => {
    const { out, text } = collect();
    const dest = new StdoutDestination([planned(0), planned(1)], out);
    const head = dest.target(planned(0));
    const second = dest.target(planned(1));
    await write(head.open(), 'a1\na2'); // broke off after these bytes
    await write(second.open(), 'b1\n');
    await second.commit({} as never); // done first: waits in the spool
    expect(text()).toBe('a1\na2');
    await write(head.open(), 'a1\n', 'a2\na3\n'); // the retry from the start
    await head.commit({} as never);
    await dest.close();
    expect(text()).toBe('a1\na2\na3\nb1\n');
  });

  it('fails when a retried head file differs from what stdout already has', async () => {
    const { out } = collect();
    const dest = new StdoutDestination([planned(0)], out);
    const head = dest.target(planned(0));
    await write(head.open(), 'a1\na2');
    await expect(write(head.open(), 'a1\nXX\na3\n')).rejects.toThrow('P.0 changed between download attempts');
  });
});
