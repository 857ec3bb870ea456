/**
 * The network rows of the benchmark: each test server runs in its own process
 * on loopback, and hx is timed against plain curl fetching the same bytes.
 *
 *   npm run bench:network                # fetch: 200 MB tenant; bulk: 1 GB export
 *   npm run bench:network -- --scale 0.1 # a tenth of each, for a quick look
 *
 * Each pair runs three times, curl and hx in turn, and the best of each is
 * kept: on a shared 2-core VM one run of a server-bound download can take
 * twice as long as the next.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const scale = Number(process.argv[process.argv.indexOf('--scale') + 1] || 1) || 1;
const RUNS = 3;
const HX = 'bin/hx.js';

interface Timing {
  seconds: number;
  peakMb: number;
}

/** Runs a bash command under /usr/bin/time; the largest process's peak RSS. */
function time(command: string, env: NodeJS.ProcessEnv = {}): Timing {
  const run = spawnSync('/usr/bin/time', ['-f', '%e %M', 'bash', '-c', command], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`failed: ${command}\n${run.stderr}`);
  const [seconds, kb] = run.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) as [number, number];
  return { seconds, peakMb: kb / 1024 };
}

/** The best of RUNS runs of each command, taken in turn; `before` runs ahead of every run (cleaning up). */
function bestOf(commands: string[], before = ''): Timing[] {
  const best: Timing[] = commands.map(() => ({ seconds: Infinity, peakMb: 0 }));
  for (let run = 0; run < RUNS; run++) {
    commands.forEach((command, i) => {
      if (before) spawnSync('bash', ['-c', before]);
      const t = time(command);
      best[i] = { seconds: Math.min(best[i]!.seconds, t.seconds), peakMb: Math.max(best[i]!.peakMb, t.peakMb) };
    });
  }
  return best;
}

/** Starts a test server script; resolves with its base URL (its first line of output). */
function startServer(script: string, args: string[]): Promise<{ base: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    createInterface({ input: child.stdout! }).once('line', (base) => resolve({ base: base.trim(), child }));
  });
}

const rows: string[] = [];
const row = (name: string, hx: Timing, curl: Timing, mb: number) =>
  rows.push(
    `| ${name} | ${hx.seconds.toFixed(2)} | ${(mb / hx.seconds).toFixed(0)} | ${hx.peakMb.toFixed(0)} MB | ` +
      `${curl.seconds.toFixed(2)} | ${Math.round((curl.seconds / hx.seconds) * 100)}% |`,
  );
const work = mkdtempSync(join(tmpdir(), 'hx-bench-net-'));

// hx fetch: a tenant of Observations, pages of 1000, `next` links, vs curl fetching the same pages in order.
{
  const count = Math.round(200_000 * scale);
  const { base, child } = await startServer('dist/test/support/fhirServer.js', ['--types', `Observation=${count}`, '--pad', '900', '--port', '0']);
  try {
    const urls = Array.from({ length: Math.ceil(count / 1000) }, (_, i) => `${base}/Observation?_count=1000&_sort=-_lastUpdated&_offset=${i * 1000}`);
    writeFileSync(join(work, 'urls.txt'), urls.join('\n') + '\n');
    const [curl, hx] = bestOf([
      `xargs curl -s < ${join(work, 'urls.txt')} > ${join(work, 'pages')}`,
      `${HX} fetch --base-url ${base} --types Observation --count 1000 > /dev/null`,
    ]) as [Timing, Timing];
    const mb = Number(readFileSync(join(work, 'pages')).length) / 1e6;
    row(`hx fetch, ${mb.toFixed(0)} MB tenant (${urls.length} pages)`, hx, curl, mb);
  } finally {
    child.kill();
  }
}

// hx bulk download: 4 files, --concurrency 4, vs curl -P 4 on the same manifest.
{
  const count = Math.round(1_000_000 * scale);
  const { base, child } = await startServer('dist/test/support/bulkServer.js', ['--types', `Observation=${count}`, '--per-file', String(Math.ceil(count / 4)), '--pad', '900', '--port', '0']);
  try {
    const kickoff = spawnSync('curl', ['-s', '-D', '-', '-o', '/dev/null', '-H', 'Accept: application/fhir+json', '-H', 'Prefer: respond-async', `${base}/$export`], { encoding: 'utf8' });
    const status = /content-location:\s*(\S+)/i.exec(kickoff.stdout)![1]!;
    const manifest = join(work, 'manifest.json');
    spawnSync('bash', ['-c', `curl -s '${status}' > ${manifest}`]);
    const urls = (JSON.parse(readFileSync(manifest, 'utf8')).output as { url: string }[]).map((o) => o.url);
    writeFileSync(join(work, 'files.txt'), urls.join('\n') + '\n');
    const curlDir = join(work, 'curl');
    const hxDir = join(work, 'hx');
    const [curl, hx] = bestOf(
      [
        `mkdir -p ${curlDir} && cd ${curlDir} && xargs -P 4 -n 1 curl -s -O < ${join(work, 'files.txt')}`,
        `${HX} bulk download ${manifest} --concurrency 4 --dir ${hxDir}`,
      ],
      `rm -rf ${curlDir} ${hxDir}`,
    ) as [Timing, Timing];
    const mb = Number(spawnSync('bash', ['-c', `cat ${hxDir}/*.ndjson | wc -c`], { encoding: 'utf8' }).stdout.trim()) / 1e6;
    row(`hx bulk download, ${mb.toFixed(0)} MB in ${urls.length} files, --concurrency 4 (curl -P 4)`, hx, curl, mb);
  } finally {
    child.kill();
  }
}

rmSync(work, { recursive: true, force: true });
process.stdout.write(
  ['| command | s | MB/s | peak RSS | curl s | hx vs curl |', '|---|---:|---:|---:|---:|---:|', ...rows].join('\n') + '\n',
);
