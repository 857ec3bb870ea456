/**
 * `hx bulk` end to end against the Bulk test server: the built CLI, real
 * HTTP on loopback, real bytes on disk and stdout. Waits are milliseconds
 * (`--poll-interval`, `--retry-base-ms`).
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, truncateSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { HX, SHARED, hx, parseNdjson, tempDir } from './support/cli.js';
import { HttpClient } from '../src/http/client.js';
import { noAuth } from '../src/bulk/auth.js';
import { FileFetcher } from '../src/bulk/fileRequest.js';
import { runExport, type BulkSession } from '../src/bulk/run.js';
import { DEFAULT_POLL } from '../src/bulk/status.js';
import { capturedFiles, startBulkServer, type BulkServer, type BulkServerOptions, type FileSpec } from './support/bulkServer.js';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/bulk');
const fixture = (name: string) => readFileSync(join(FIXTURES, name));
const FAST = ['--poll-interval', '0.001', '--retry-base-ms', '1'];

let server: BulkServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function serve(options: BulkServerOptions): Promise<BulkServer> {
  server = await startBulkServer(options);
  return server;
}

const basicFiles = (): FileSpec[] => [
  { name: '2.Patient.ndjson', type: 'Patient', body: fixture('small-pages-Patient.ndjson') },
  { name: '4.Condition.ndjson', type: 'Condition', body: fixture('small-pages-Condition.ndjson') },
  { name: 'obs-0.ndjson', type: 'Observation', generate: { from: 0, n: 500, pad: 200 } },
  { name: 'obs-1.ndjson', type: 'Observation', generate: { from: 500, n: 300, pad: 200 } },
];

function served(s: BulkServer, files: FileSpec[]): Buffer {
  return Buffer.concat(files.map((f) => (f.body ? f.body : Buffer.from(generatedText(f)))));
}

function generatedText(f: FileSpec): string {
  let text = '';
  const pad = 'x'.repeat(f.generate!.pad);
  for (let i = f.generate!.from; i < f.generate!.from + f.generate!.n; i++) {
    text += `{"resourceType":"${f.type}","id":"${f.type}-${i}","meta":{"versionId":"1"},"text":{"status":"generated","div":"${pad}"}}\n`;
  }
  return text;
}

describe('hx bulk export', () => {
  it('system export: polls with X-Progress, downloads in parallel, writes the files to stdout in manifest order', async () => {
    const files = basicFiles();
    const s = await serve({ files, polls: 3, gzip: true });
    const report = join(tempDir(), 'report.json');
    const log = join(tempDir(), 'log.ndjson');
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--concurrency', '3', '--report', report, '--log', log, ...FAST]);
    expect(run.stderr).toContain('33% complete');
    expect(run.code).toBe(0);
    expect(run.stdout.equals(served(s, files))).toBe(true);
    const kickoff = s.requests.find((r) => r.url.includes('$export'))!;
    expect(kickoff).toMatchObject({ method: 'GET', url: '/fhir/$export', accept: 'application/fhir+json', prefer: 'respond-async' });
    const fileRequests = s.requests.filter((r) => r.url.startsWith('/fhir/files/'));
    expect(fileRequests).toHaveLength(4);
    expect(fileRequests.every((r) => r.acceptEncoding === 'gzip')).toBe(true);
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account).toMatchObject({
      transactionTime: '2026-11-23T09:02:05+00:00',
      polls: 4,
      files: { planned: 4, downloaded: 4, resumed: 0 },
      resources: 3 + 7 + 800,
      resourcesByType: { Condition: 7, Observation: 800, Patient: 3 },
      bytes: served(s, files).length,
      countMismatches: [],
    });
    expect(run.stderr).toContain('transactionTime 2026-11-23T09:02:05+00:00');

    // The event log follows the SMART reference client's (bulk-data-client v1.2.1, log version 2).
    const events = parseNdjson(readFileSync(log));
    const ids = events.map((e) => e.eventId as string);
    expect(ids.filter((id) => !id.startsWith('download_'))).toEqual(['kickoff', 'status_progress', 'status_progress', 'status_progress', 'status_complete', 'manifest_complete', 'export_complete']);
    expect(ids.filter((id) => id === 'download_complete')).toHaveLength(4);
    const reference = parseNdjson(readFileSync(join(SHARED, 'data/bulk-data-client-run/log.ndjson')));
    for (const id of ['kickoff', 'status_complete', 'manifest_complete', 'download_request', 'download_complete', 'export_complete']) {
      const ours = events.find((e) => e.eventId === id)!;
      const theirs = reference.find((e) => e.eventId === id)!;
      expect(Object.keys(ours).sort()).toEqual(Object.keys(theirs).sort());
      // Theirs adds server software details to kickoff; every key we write is one of theirs.
      for (const key of Object.keys(ours.eventDetail as object)) expect(Object.keys(theirs.eventDetail as object)).toContain(key);
    }
    expect(events.at(-1)!.eventDetail).toMatchObject({ files: 4, resources: 810, bytes: served(s, files).length });
  });

  it('patient export with --post sends a Parameters resource', async () => {
    const s = await serve({ files: basicFiles().slice(0, 1) });
    const run = await hx([
      'bulk', 'export', '--patient', '--post', '--base-url', s.base, '--type', 'Patient,Condition', '--since', '2026-01-01T00:00:00Z',
      '--patient-ref', 'Patient/1', '--type-filter', 'Condition?clinical-status=active', ...FAST,
    ]);
    expect(run.code).toBe(0);
    const kickoff = s.requests.find((r) => r.url.includes('$export'))!;
    expect(kickoff.method).toBe('POST');
    expect(kickoff.url).toBe('/fhir/Patient/$export');
    expect(JSON.parse(kickoff.body!)).toEqual({
      resourceType: 'Parameters',
      parameter: [
        { name: '_since', valueInstant: '2026-01-01T00:00:00Z' },
        { name: '_type', valueString: 'Patient,Condition' },
        { name: '_typeFilter', valueString: 'Condition?clinical-status=active' },
        { name: 'patient', valueReference: { reference: 'Patient/1' } },
      ],
    });
    expect(parseNdjson(run.stdout)).toHaveLength(3);
  });

  it('group export to --dir: one file per entry, manifest.json, header lines and a wrong manifest count in the account', async () => {
    const files: FileSpec[] = [
      { name: '2.output.ndjson', body: fixture('organized-by-patient.ndjson'), count: 10 }, // as captured: header lines not counted
      { name: 'p.ndjson', type: 'Patient', body: fixture('small-pages-Patient.ndjson'), count: 99 },
      { name: 'del.ndjson', kind: 'deleted', type: 'Bundle', body: fixture('deleted-2.AllergyIntolerance.ndjson') },
    ];
    const s = await serve({ files, manifestExtra: { outputOrganizedBy: 'Patient' } });
    const dir = join(tempDir(), 'not', 'yet');
    const report = join(tempDir(), 'report.json');
    const run = await hx([
      'bulk', 'export', '--group', 'FallonHealth', '--base-url', s.base, '--dir', dir, '--type', 'Patient', '--elements', 'id,meta',
      '--param', 'organizeOutputBy=Patient', '--report', report, ...FAST,
    ]);
    expect(run.code).toBe(0);
    expect(s.requests.find((r) => r.url.includes('$export'))!.url).toBe(
      '/fhir/Group/FallonHealth/$export?_type=Patient&_elements=id%2Cmeta&organizeOutputBy=Patient',
    );
    expect(readdirSync(dir).sort()).toEqual(['.hx-bulk-state.json', 'Patient.000.ndjson', 'deleted.Bundle.000.ndjson', 'manifest.json', 'output.000.ndjson']);
    expect(readFileSync(join(dir, 'output.000.ndjson')).equals(fixture('organized-by-patient.ndjson'))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')).outputOrganizedBy).toBe('Patient');
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account.headerLines).toBe(3);
    expect(account.deletedEntries).toBe(4);
    expect(account.resourcesByType).toEqual({ Condition: 7, Patient: 6 });
    expect(account.countMismatches).toEqual([{ file: 'Patient.000.ndjson', manifestCount: 99, found: 3 }]);
    expect(run.stderr).toContain('the manifest says 99 resources, the file has 3');
  });
});

/** The same flows in-process (no CLI start-up): the library entry `runExport` with a collecting stdout. */
describe('runExport in-process', () => {
  async function runLib(s: BulkServer, options: { dir?: string; concurrency?: number; allowErrors?: boolean; retries?: number; counting?: boolean; progressMs?: number } = {}) {
    const client = new HttpClient({ trustedOrigin: s.base, retry: { baseMs: 1, retries: options.retries ?? 6 } });
    const parts: Buffer[] = [];
    let bytes = 0;
    const logs: string[] = [];
    const session: BulkSession = {
      client,
      fetcher: new FileFetcher(client),
      auth: noAuth,
      poll: { ...DEFAULT_POLL, baseMs: 1 },
      concurrency: options.concurrency ?? 4,
      dir: options.dir,
      allowErrors: options.allowErrors,
      progressMs: options.progressMs,
      log: (m) => logs.push(m),
      stdout: new Writable({ write: (c: Buffer, _e, done) => ((bytes += c.length), options.counting || parts.push(c), done()) }),
    };
    let error: Error | undefined;
    try {
      await runExport({ baseUrl: s.base, level: { kind: 'system' }, params: {} }, session);
    } catch (err) {
      error = err as Error;
    } finally {
      await Promise.all([client.close(), session.fetcher.close()]);
    }
    return { stdout: Buffer.concat(parts), bytes, logs: logs.join('\n'), error, account: session.account! };
  }

  it('survives the faults of real servers: epoch Retry-After, transient 500, resets mid-file, 503 on a file', async () => {
    const files = basicFiles();
    const s = await serve({
      files,
      polls: 1,
      gzip: true,
      faults: [
        { match: /^GET \/fhir\/status\//, times: 1, fault: { kind: 'status', status: 429, retryAfter: String(Date.now() + 300_000) } },
        { match: /^GET \/fhir\/status\//, skip: 1, times: 2, fault: { kind: 'status', status: 500, body: fixture('transient-500.json').toString() } },
        { match: /obs-0/, times: 2, fault: { kind: 'reset', afterBytes: 20_000 } },
        { match: /2\.Patient/, times: 1, fault: { kind: 'status', status: 503, retryAfter: '0' } },
      ],
    });
    const run = await runLib(s);
    expect(run.error).toBeUndefined();
    expect(run.stdout.equals(served(s, files))).toBe(true);
    expect(run.account.retries).toBe(6);
    expect(run.account.resources).toBe(810);
  });

  it('a file streaming straight to stdout that breaks off is fetched again without repeating what stdout has', async () => {
    const files = basicFiles();
    const s = await serve({ files, faults: [{ match: /obs-0/, times: 2, fault: { kind: 'reset', afterBytes: 30_000 } }] });
    const run = await runLib(s, { concurrency: 1 });
    expect(run.error).toBeUndefined();
    expect(run.stdout.equals(served(s, files))).toBe(true);
    expect(s.requests.filter((r) => r.url === '/fhir/files/obs-0.ndjson')).toHaveLength(3);
  });

  it('reports a failed kick-off and an expired file with the server diagnostics', async () => {
    let s = await serve({ files: basicFiles(), faults: [{ match: /\$export/, times: 9, fault: { kind: 'status', status: 500, body: fixture('kickoff-failed-500.json').toString() } }] });
    let run = await runLib(s, { retries: 1 });
    expect(run.error?.message).toBe('export kick-off: HTTP 500; the server says: File generation failed (gave up after 2 attempts)');
    await s.close();
    s = await serve({ files: basicFiles(), faults: [{ match: /obs-1/, fault: { kind: 'status', status: 410, body: fixture('expired-410.json').toString() } }] });
    run = await runLib(s);
    expect(run.error?.message).toMatch(/^Observation\.001\.ndjson \(output file\): HTTP 410; the server says: Access to the target resource is no longer available.* — the file has expired; start a new export$/);
  });

  it('error files: summarised, newline added, an error unless allowed', async () => {
    const files: FileSpec[] = [
      { name: 'p.ndjson', type: 'Patient', body: fixture('small-pages-Patient.ndjson') },
      { name: 'e.ndjson', kind: 'error', type: 'OperationOutcome', body: fixture('error-2.AllergyIntolerance.ndjson') },
    ];
    const s = await serve({ files });
    let run = await runLib(s);
    expect(run.error?.message).toContain('the export reported 1 errors in 1 error files (summarised above); --allow-errors accepts them');
    expect(run.logs).toContain('error file error.OperationOutcome.000.ndjson: 1 OperationOutcome: Failed to export 2.AllergyIntolerance.ndjson');
    expect(run.stdout.equals(fixture('small-pages-Patient.ndjson'))).toBe(true); // the data is still delivered, without the errors
    const dir = tempDir();
    run = await runLib(s, { dir, allowErrors: true });
    expect(run.error).toBeUndefined();
    const saved = readFileSync(join(dir, 'error.OperationOutcome.000.ndjson'));
    expect(saved.equals(Buffer.concat([fixture('error-2.AllergyIntolerance.ndjson'), Buffer.from('\n')]))).toBe(true);
  });

  it('the captured reference export: the same files, resources and bytes as the SMART reference client reported', async () => {
    const s = await serve({ files: capturedFiles(join(SHARED, 'data/bulk-data-server/export-system')) });
    const run = await runLib(s, { counting: true, progressMs: 20 });
    expect(run.error).toBeUndefined();
    const reference = parseNdjson(readFileSync(join(SHARED, 'data/bulk-data-client-run/log.ndjson'))).find((e) => e.eventId === 'export_complete')!;
    expect(reference.eventDetail).toMatchObject({ files: 20, resources: 38483, bytes: 49310246 });
    expect(run.account.toJSON()).toMatchObject({ files: { downloaded: 20 }, resources: 38483, bytes: 49310246, countMismatches: [] });
    expect(run.bytes).toBe(49310246);
    expect(run.account.resourcesByType.get('Observation')).toBe(16315);
    expect(run.logs).toMatch(/downloading: \d+\/20 files done, [\d.]+ MB received/);
  });

  it('stdout: a file without a final newline is separated from the next', async () => {
    const noNewline = Buffer.from('{"resourceType":"Patient","id":"a"}\n{"resourceType":"Patient","id":"b"}');
    const s = await serve({ files: [{ name: 'a', type: 'Patient', body: noNewline }, ...basicFiles().slice(1, 2)] });
    const run = await runLib(s);
    expect(run.error).toBeUndefined();
    expect(run.account.newlinesAdded).toBe(1);
    expect(parseNdjson(run.stdout).map((r) => r.id)).toEqual(['a', 'b', ...parseNdjson(fixture('small-pages-Condition.ndjson')).map((r) => r.id)]);
  });
});

describe('resume, status, cancel', () => {
  it('a rerun after a kill mid-download fetches only what is missing; nothing duplicated, nothing missing', async () => {
    const files: FileSpec[] = [
      { name: 'a.ndjson', type: 'Patient', generate: { from: 0, n: 200, pad: 100 } },
      { name: 'b.ndjson', type: 'Patient', generate: { from: 200, n: 200, pad: 100 } },
      { name: 'c.ndjson', type: 'Observation', generate: { from: 0, n: 2000, pad: 100 } },
      { name: 'd.ndjson', type: 'Observation', generate: { from: 2000, n: 100, pad: 100 } },
    ];
    const s = await serve({ files, faults: [{ match: /c\.ndjson/, fault: { kind: 'stall', afterBytes: 50_000 } }] });
    const dir = tempDir();
    const args = ['bulk', 'export', '--base-url', s.base, '--dir', dir, '--concurrency', '1', ...FAST];
    const child = spawn(process.execPath, [HX, ...args], { stdio: 'ignore' });
    const partial = join(dir, '.Observation.000.ndjson.partial');
    await waitFor(() => existsSync(partial) && readFileSync(partial).length >= 50_000);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    expect(existsSync(join(dir, 'Observation.000.ndjson'))).toBe(false);

    // A completed file damaged since is fetched again too.
    truncateSync(join(dir, 'Patient.001.ndjson'), 100);
    const run = await hx(args);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('resuming the export');
    const kickoffs = s.requests.filter((r) => r.url.includes('$export'));
    expect(kickoffs).toHaveLength(1);
    const fetched = (name: string) => s.requests.filter((r) => r.url === `/fhir/files/${name}`).length;
    expect([fetched('a.ndjson'), fetched('b.ndjson'), fetched('c.ndjson'), fetched('d.ndjson')]).toEqual([1, 2, 2, 1]);
    const onDisk = ['Patient.000', 'Patient.001', 'Observation.000', 'Observation.001'].flatMap((n) => parseNdjson(readFileSync(join(dir, `${n}.ndjson`))));
    const ids = onDisk.map((r) => r.id);
    expect(ids).toHaveLength(2500);
    expect(new Set(ids).size).toBe(2500);
    expect(readdirSync(dir).filter((n) => n.includes('partial'))).toEqual([]);
    expect(run.stderr).toContain('4 files (1 complete from before), 2500 resources');
    // `download --dir` alone resumes from what the folder holds: nothing left to fetch.
    const again = await hx(['bulk', 'download', '--dir', dir, ...FAST]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('4 files (4 complete from before), 2500 resources');
    expect(s.requests.filter((r) => r.url.startsWith('/fhir/files/'))).toHaveLength(6);
    // Once complete, the same export command starts a new export.
    const next = await hx(args);
    expect(next.code).toBe(0);
    expect(s.requests.filter((r) => r.url.includes('$export'))).toHaveLength(2);
    expect(next.stderr).toContain('removing 4 files of an earlier export');
    expect(next.stderr).toContain('4 files, 2500 resources');
  });

  it('status, download from a status URL, cancel', async () => {
    const files = basicFiles().slice(0, 2);
    const s = await serve({ files, polls: 1, retryAfter: '120' });
    const kick = await fetch(`${s.base}/$export`, { headers: { accept: 'application/fhir+json', prefer: 'respond-async' } });
    const statusUrl = kick.headers.get('content-location')!;
    let run = await hx(['bulk', 'status', statusUrl]);
    expect(run.code).toBe(75);
    expect(run.stderr).toContain('in progress: 0% complete, Please wait...; check again in 120 s');
    run = await hx(['bulk', 'status', statusUrl]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout.toString()).output).toHaveLength(2);
    run = await hx(['bulk', 'download', statusUrl, ...FAST]);
    expect(run.code).toBe(0);
    expect(run.stdout.equals(served(s, files))).toBe(true);
    run = await hx(['bulk', 'cancel', statusUrl]);
    expect(run.code).toBe(0);
    expect(s.requests.at(-1)).toMatchObject({ method: 'DELETE' });
    run = await hx(['bulk', 'status', statusUrl]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('HTTP 404');
    expect(run.stderr).toContain('The export was not found');
  });

  it('a reader that stops early (| head) ends the run quietly with exit 0', async () => {
    const files: FileSpec[] = [0, 1, 2, 3].map((i) => ({ name: `o${i}`, type: 'Observation', generate: { from: i * 20_000, n: 20_000, pad: 500 } }));
    const s = await serve({ files });
    const child = spawn(process.execPath, [HX, 'bulk', 'export', '--base-url', s.base], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise((r) => child.once('close', r));
    expect(stderr).not.toContain('internal error');
    expect(code).toBe(0);
    // A pipe cannot resume, so the export is released on the server as with Ctrl-C.
    expect(s.requests.filter((r) => r.method === 'DELETE')).toHaveLength(1);
  });

  it('Ctrl-C while the export runs sends DELETE to the status URL', async () => {
    const s = await serve({ files: basicFiles(), polls: 1000, retryAfter: '1' });
    const child = spawn(process.execPath, [HX, 'bulk', 'export', '--base-url', s.base], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    await waitFor(() => s.requests.some((r) => r.url.startsWith('/fhir/status/')));
    child.kill('SIGINT');
    const code = await new Promise((r) => child.once('close', r));
    expect(code).toBe(130);
    expect(s.requests.at(-1)).toMatchObject({ method: 'DELETE' });
    expect(stderr).toContain('the export was cancelled on the server');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}
