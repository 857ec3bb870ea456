import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The built CLI: `npm test` runs `tsc` first. */
export const HX = join(root, 'dist/src/cli/main.js');
export const SHARED = resolve(root, '../shared');

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs `hx args…` with `stdin` piped in; resolves with everything it printed. */
export function hx(args: string[], options: { stdin?: string | Buffer; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [HX, ...args], {
      cwd: options.cwd ?? root,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.on('error', () => {});
    child.stdin.end(options.stdin ?? '');
  });
}

/** A fresh temporary folder for one test. */
export function tempDir(prefix = 'hx-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Parses NDJSON output into objects. */
export function parseNdjson(bytes: Buffer | string): Record<string, unknown>[] {
  return bytes
    .toString()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line));
}
