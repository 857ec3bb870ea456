import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Writable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Account } from '../src/account.js';
import { readInputs } from '../src/io/input.js';
import { Rejects } from '../src/rejects.js';
import { HX, SHARED, hx, parseNdjson, tempDir } from './support/cli.js';

const exportDir = join(SHARED, 'data/bulk-data-server/export-system');
const P = (id: string) => `{"resourceType":"Patient","id":"${id}"}`;
const O = (id: string) => `{"resourceType":"Observation","id":"${id}"}`;

describe('hx cat', () => {
  it('decompresses gzip by its magic bytes, file after file', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'a.data'), gzipSync(`${P('1')}\n${P('2')}\n`));
    writeFileSync(join(dir, 'b.ndjson'), `${O('3')}\n`);
    const r = await hx(['cat', join(dir, 'a.data'), join(dir, 'b.ndjson')]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`${P('1')}\n${P('2')}\n${O('3')}\n`);
  });

  it('reads a real Bulk Data export (gzip NDJSON) exactly', async () => {
    const files = readdirSync(exportDir).filter((f) => f.endsWith('.gz')).sort().map((f) => join(exportDir, f));
    const report = join(tempDir(), 'report.json');
    const r = await hx(['cat', ...files, '--report', report]);
    const expected = files.flatMap((f) => gunzipSync(readFileSync(f)).toString().trim().split('\n')).map((l) => JSON.stringify(JSON.parse(l)));
    expect(r.stdout.toString()).toBe(expected.join('\n') + '\n');
    const account = JSON.parse(readFileSync(report, 'utf8'));
    expect(account).toMatchObject({ read: 38483, written: 38483, rejected: 0, balanced: true });
    expect(account.writtenByType.Observation).toBe(16315);
  });

  it('names file and line of a bad record, prints no content, and exits 1', async () => {
    const r = await hx(['cat', '-'], { stdin: `${P('1')}\n{"resourceType":"Patient","name":"Lin, Derrick"\n` });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('hx: -:2: invalid JSON (column 48)\n');
    expect(r.stdout.toString()).not.toContain('Derrick');
  });

  it('sets bad lines aside with --rejects and prints the account with -v', async () => {
    const dir = tempDir();
    const r = await hx(['cat', '--rejects', join(dir, 'rej.ndjson'), '-v'], { stdin: `${P('1')}\n\nnope\n${P('2')}\n` });
    expect(r.code).toBe(0);
    expect(parseNdjson(r.stdout).map((x) => x.id)).toEqual(['1', '2']);
    expect(r.stderr).toBe('hx: read 3 = written 2 + rejected 1; 1 blank lines skipped\n');
    expect(JSON.parse(readFileSync(join(dir, 'rej.ndjson'), 'utf8'))).toEqual({ source: '-', line: 3, reason: 'invalid JSON', text: 'nope' });
  });

  it('writes -o atomically: a failed run leaves no file that looks complete', async () => {
    const dir = tempDir();
    const out = join(dir, 'out.ndjson');
    const bad = await hx(['cat', '-o', out], { stdin: `${P('1')}\n${P('2')}\n{bad\n` });
    expect(bad.code).toBe(1);
    expect(readdirSync(dir)).toEqual([]);
    const good = await hx(['cat', '-o', out, '--gzip'], { stdin: `${P('1')}\n` });
    expect(good.code).toBe(0);
    expect(gunzipSync(readFileSync(out)).toString()).toBe(`${P('1')}\n`);
    expect(readdirSync(dir)).toEqual(['out.ndjson']);
  });

  it('streams a Bundle document from stdin', async () => {
    const bundle = readFileSync(join(SHARED, 'data/bulk-data-server/synthea-bundles/Fannie_Waelchi_8666cd40-7af9-48c6-a1a6-86a161195542.json'));
    const r = await hx(['cat'], { stdin: bundle });
    expect(parseNdjson(r.stdout)).toEqual(JSON.parse(bundle.toString()).entry.map((e: { resource: unknown }) => e.resource));
  });

  it('says clearly when a file is missing, is a directory or gzip is corrupt', async () => {
    const dir = tempDir();
    expect((await hx(['cat', join(dir, 'nope.ndjson')])).stderr).toBe(`hx: ${join(dir, 'nope.ndjson')}: no such file\n`);
    expect(await hx(['cat', dir])).toMatchObject({ code: 1, stderr: `hx: ${dir}: is a directory\n` });
    writeFileSync(join(dir, 'cut.gz'), gzipSync(`${P('1')}\n`.repeat(1000)).subarray(0, 40));
    const r = await hx(['cat', join(dir, 'cut.gz')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cut\.gz: gzip data is corrupt or truncated/);
  });

  it('ends quietly with exit 0 when stdout is closed (| head)', async () => {
    const child = spawn(process.execPath, [HX, 'cat', join(exportDir, '30.Observation.ndjson.gz')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(stderr).toBe('');
  });

  it('shows progress on stderr only when asked (or on a terminal)', async () => {
    const r = await hx(['cat', '--progress', join(exportDir, '36.Patient.ndjson.gz')]);
    expect(r.stderr).toMatch(/100 records, [\d.]+ MB, [\d.]+ MB\/s, 100\.0%, ETA 0 s\n$/);
    expect(parseNdjson(r.stdout)).toHaveLength(100);
  });

  it('rejects unknown options before reading, with exit 2', async () => {
    const r = await hx(['cat', '--frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Unknown argument: frobnicate');
  });

  it('names an output path that cannot be written, exit 1, no stack; a bad report or reject path before any output', async () => {
    const dir = tempDir();
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    const stdin = `${P('1')}\n`;
    const cases: [string[], string][] = [
      [['cat', '-o', join(file, 'out.ndjson')], `hx: ${file}: exists and is not a directory\n`],
      [['cat', '--report', join(file, 'report.json')], `hx: ${file}: exists and is not a directory\n`],
      [['cat', '--rejects', join(file, 'rejects.ndjson')], `hx: ${file}: exists and is not a directory\n`],
      [['cat', '--report', dir], `hx: ${dir}: is a directory\n`],
      [['split', '--dir', file], `hx: ${file}: exists and is not a directory\n`],
      [['bundle', '--max-entries', '1', '--dir', file], `hx: ${file}: exists and is not a directory\n`],
    ];
    for (const [args, message] of cases) {
      const r = await hx(args, { stdin });
      expect([r.code, r.stderr, r.stdout.toString()], args.join(' ')).toEqual([1, message, '']);
    }
  });

  it('has examples in --help', async () => {
    for (const command of ['cat', 'count', 'split']) {
      const r = await hx([command, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toContain('Examples:');
    }
  });
});

describe('backpressure', () => {
  it('a consumer that stops reading stops the reading of the input', async () => {
    const dir = tempDir();
    const file = join(dir, 'big.ndjson');
    writeFileSync(file, `${P('x'.repeat(200))}\n`.repeat(200_000)); // ~46 MB
    const account = new Account();
    let bytes = 0;
    const source = readInputs([file], { account, rejects: new Rejects(account), onBytes: (b) => (bytes = b) });
    const stuck = new Writable({ objectMode: true, highWaterMark: 1, write() {} }); // never calls back
    source.pipe(stuck);
    await new Promise((r) => setTimeout(r, 500));
    expect(bytes).toBeGreaterThan(0);
    expect(bytes).toBeLessThan(4 << 20);
    source.destroy();
  });
});

describe('UTF-16 input', () => {
  it('reads UTF-16 (LE or BE, with its byte order mark) as the same records as UTF-8, whatever the read size', async () => {
    const dir = tempDir();
    const text = `${P('1')}\r\n{"resourceType":"Observation","id":"2","note":[{"text":"caf\u00e9 \u2014 \ud83d\ude00"}]}\r\n${P('3')}`;
    const utf8 = await hx(['cat'], { stdin: text });
    expect(utf8.code).toBe(0);
    const le = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]);
    const be = Buffer.from(le).swap16();
    for (const [name, bytes] of [['le', le], ['be', be]] as const) {
      const file = join(dir, `${name}.ndjson`);
      writeFileSync(file, bytes);
      const r = await hx(['cat', file]);
      expect([r.code, r.stderr], name).toEqual([0, '']);
      expect(r.stdout.equals(utf8.stdout), name).toBe(true);
      // Reads of an odd size split code units and the emoji's surrogate pair.
      const account = new Account();
      const ids: string[] = [];
      for await (const batch of readInputs([file], { account, rejects: new Rejects(account), chunkBytes: 7 })) ids.push(...batch.resources.map((r: { id: string }) => r.id));
      expect(ids, name).toEqual(['1', '2', '3']);
    }
  });
});

describe('hx count', () => {
  it('counts by type as a table and as JSON', async () => {
    const stdin = `${P('1')}\n${O('2')}\n${O('3')}\n`;
    expect((await hx(['count'], { stdin })).stdout.toString()).toBe('Observation  2\nPatient      1\ntotal        3\n');
    expect(JSON.parse((await hx(['count', '--json'], { stdin })).stdout.toString())).toEqual({ Observation: 2, Patient: 1, total: 3 });
  });
});

describe('hx split', () => {
  it('writes one file per type, within the open-file bound, gzip members included', async () => {
    const dir = tempDir();
    const stdin = [P('1'), O('2'), P('3'), O('4'), '{"resourceType":"Condition","id":"5"}', P('6')].join('\n') + '\n';
    for (const gzip of [false, true]) {
      const out = join(dir, String(gzip));
      const r = await hx(['split', '--dir', out, '--max-open', '1', ...(gzip ? ['--gzip'] : [])], { stdin });
      expect(r.code).toBe(0);
      const ext = gzip ? '.ndjson.gz' : '.ndjson';
      expect(readdirSync(out).sort()).toEqual(['Condition', 'Observation', 'Patient'].map((t) => t + ext));
      const read = (t: string) => {
        const bytes = readFileSync(join(out, t + ext));
        return (gzip ? gunzipSync(bytes) : bytes).toString();
      };
      expect(read('Patient')).toBe(`${P('1')}\n${P('3')}\n${P('6')}\n`);
      expect(read('Observation')).toBe(`${O('2')}\n${O('4')}\n`);
    }
  });

  it('keeps each type\'s lines in order across many batches, types coming and going', async () => {
    // Blocks of one type, each larger than a read: most batches hold one type, some two.
    const types = ['Patient', 'Observation', 'Patient', 'Condition', 'Observation', 'Patient'];
    const lines = types.flatMap((type, b) =>
      Array.from({ length: 700 }, (_, i) => `{"resourceType":"${type}","id":"${b}-${i}","note":"${'x'.repeat(i % 97)}"}`),
    );
    const dir = join(tempDir(), 'blocks');
    const r = await hx(['split', '--dir', dir], { stdin: lines.join('\n') + '\n' });
    expect(r.code).toBe(0);
    for (const type of ['Patient', 'Observation', 'Condition']) {
      const expected = lines.filter((line) => line.includes(`"${type}"`)).join('\n') + '\n';
      expect(readFileSync(join(dir, `${type}.ndjson`), 'utf8')).toBe(expected);
    }
  });

  it('leaves no partial files when the run fails', async () => {
    const dir = tempDir();
    const r = await hx(['split', '--dir', dir], { stdin: `${P('1')}\nbad\n` });
    expect(r.code).toBe(1);
    expect(existsSync(join(dir, 'Patient.ndjson'))).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('the hx launcher (bin/hx.js)', () => {
  it('runs through sh and a symlink (as npm links it) with its heap settings', async () => {
    const dir = tempDir('hx launcher ');
    const link = join(dir, 'hx');
    symlinkSync(join(dirname(HX), '../../../bin/hx.js'), link);
    const input = join(dir, 'a file.ndjson');
    writeFileSync(input, `${P('1')}\n`);
    // Prints the Node flags of every thread as it starts.
    const printer = join(dir, 'flags.mjs');
    writeFileSync(printer, 'process.stderr.write(`flags: ${JSON.stringify(process.execArgv)}\\n`);\n');
    const child = spawn(link, ['cat', '--workers', '1', input], { env: { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(printer).href}` } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c));
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(err).toBe('flags: ["--max-semi-space-size=8","--heap-growing-percent=10","--expose-gc","--liftoff-only"]\n');
    expect(code).toBe(0);
    expect(Buffer.concat(out).toString()).toBe(`${P('1')}\n`);
  });

  it('runs --workers 2 with gc exposed and writes every line as it came', async () => {
    const input = join(tempDir('hx launcher '), 'in.ndjson');
    // 17 MB: the main thread looks at the bytes it holds from the workers (every 8 MB written) twice.
    const lines = Array.from({ length: 40_000 }, (_, i) =>
      JSON.stringify({ resourceType: 'Observation', id: `o${i}`, status: 'final', note: [{ text: `${i} `.repeat(60) }] }),
    );
    writeFileSync(input, lines.join('\n') + '\n');
    const child = spawn(join(dirname(HX), '../../../bin/hx.js'), ['cat', '--workers', '2', input]);
    const out: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(Buffer.concat(out).equals(readFileSync(input))).toBe(true);
  });
});
