/**
 * The network rows of the benchmark: each test server runs in its own process
 * on loopback, and hx is timed against plain curl fetching the same bytes.
 *
 *   npm run bench:network                # fetch: 200 MB tenant; bulk: 1 GB export; export-healthex: 200 MB
 *                                        # and 2 GB tenants, and 200 MB at HealthClaw's rate limit (about
 *                                        # 8 minutes: a thousand requests at 120 a minute); ingest: 1 GB
 *   npm run bench:network -- --scale 0.1 # a tenth of each, for a quick look
 *   npm run bench:network -- --no-rate-limit  # without the rate-limited export
 *   npm run bench:network -- --only fetch,bulk --runs 5  # some sections (fetch, bulk, export, ingest), 5 runs each
 *
 * Each pair runs three times (or --runs), curl and hx in turn, and the best of each is
 * kept: on a shared 2-core VM one run of a server-bound download can take
 * twice as long as the next.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { writeCorpus } from './generate.js';
import { requireNullDevice } from './nullDevice.js';

requireNullDevice();
const scale = Number(process.argv[process.argv.indexOf('--scale') + 1] || 1) || 1;
const option = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const RUNS = Number(option('--runs') ?? 3);
const RATE_LIMITED = !process.argv.includes('--no-rate-limit');
const ONLY = option('--only')?.split(',');
const wanted = (section: 'fetch' | 'bulk' | 'export' | 'ingest') => !ONLY || ONLY.includes(section);
const HX = 'bin/hx.js';

interface Timing {
  seconds: number;
  /** User and system CPU seconds of the command (all its threads and processes). */
  cpu: number;
  peakMb: number;
}

/** Runs a bash command under /usr/bin/time; the largest process's peak RSS. */
function time(command: string): Timing {
  const run = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', 'bash', '-c', command], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`failed: ${command}\n${run.stderr}`);
  const [seconds, user, system, kb] = run.stderr.trim().split('\n').at(-1)!.split(' ').map(Number) as [number, number, number, number];
  return { seconds, cpu: user + system, peakMb: kb / 1024 };
}

const NOT_RUN: Timing = { seconds: Infinity, cpu: Infinity, peakMb: 0 };

/** The best of RUNS runs of each command, taken in turn; `before` runs ahead of every run (cleaning up). */
function bestOf(commands: string[], before = ''): Timing[] {
  const best = commands.map(() => NOT_RUN);
  for (let run = 0; run < RUNS; run++) {
    commands.forEach((command, i) => {
      if (before) spawnSync('bash', ['-c', before]);
      best[i] = faster(best[i]!, time(command));
    });
  }
  return best;
}

/** The faster of two timings, with the larger peak RSS of the two. */
function faster(a: Timing, b: Timing): Timing {
  const fastest = b.seconds < a.seconds ? b : a;
  return { ...fastest, peakMb: Math.max(a.peakMb, b.peakMb) };
}

/**
 * As `bestOf`, with a fresh server for every run: a server that keeps what it
 * is sent grows from run to run, and the later runs would pay for its heap.
 */
async function bestOfFresh(commands: ((base: string) => string)[], script: string, args: string[]): Promise<Timing[]> {
  const best = commands.map(() => NOT_RUN);
  for (let run = 0; run < RUNS; run++) {
    for (const [i, command] of commands.entries()) {
      const { base, child } = await startServer(script, args);
      try {
        best[i] = faster(best[i]!, time(command(base)));
      } finally {
        child.kill();
      }
    }
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
if (wanted('fetch')) {
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
if (wanted('bulk')) {
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

// hx export-healthex: every page of the eleven types → deid → pretag → one Bundle file, from the test server
// (pages of 200, as HealthClaw's). Its time in hx itself is its CPU time over its wall time; the server alone is
// curl fetching the same pages one after another. The 2 GB tenant is run once, for the flatness of memory. The
// last run plays HealthClaw as the contract describes it: no next links (hx pages by _lastUpdated keyset) and its
// rate limit of 120 requests per 60 s, which hx keeps to by its X-RateLimit headers.
const exportRows: string[] = [];
const exportRuns: { count: number; runs: number; healthclaw?: boolean }[] = !wanted('export')
  ? []
  : [
      { count: Math.round(200_000 * scale), runs: RUNS },
      { count: Math.round(2_000_000 * scale), runs: 1 },
      ...(RATE_LIMITED ? [{ count: Math.round(200_000 * scale), runs: 1, healthclaw: true }] : []),
    ];
for (const { count, runs, healthclaw } of exportRuns) {
  const serverArgs = ['--types', `Patient=1000,Observation=${count}`, '--pad', '900', '--tenant', 'desktop-demo', '--port', '0'];
  if (healthclaw) serverArgs.push('--paging', 'healthclaw', '--max-count', '200', '--rate-limit', '120/60');
  const { base, child } = await startServer('dist/test/support/fhirServer.js', serverArgs);
  try {
    const out = join(work, 'export.json');
    const hxCommand = `${HX} export-healthex --base-url ${base} --tenant-id desktop-demo -o ${out} > /dev/null`;
    let hx: Timing;
    let server = '';
    if (runs > 1) {
      const urls = [`${base}/Patient?_count=200`, ...Array.from({ length: Math.ceil(count / 200) }, (_, i) => `${base}/Observation?_count=200&_offset=${i * 200}`)];
      writeFileSync(join(work, 'export-urls.txt'), urls.join('\n') + '\n');
      const [curl, timed] = bestOf([`xargs curl -s -H 'X-Tenant-ID: desktop-demo' < ${join(work, 'export-urls.txt')} > /dev/null`, hxCommand]) as [Timing, Timing];
      hx = timed;
      server = curl.seconds.toFixed(2);
    } else {
      hx = time(hxCommand);
    }
    const mb = statSync(out).size / 1e6;
    exportRows.push(
      `| hx export-healthex, ${count + 1000} resources (${mb.toFixed(0)} MB Bundle)${healthclaw ? ", HealthClaw's paging and rate limit (120 requests / 60 s)" : ''} | ` +
        `${hx.seconds.toFixed(2)} | ${(mb / hx.seconds).toFixed(0)} | ` +
        `${hx.peakMb.toFixed(0)} MB | ${hx.cpu.toFixed(2)} | ${Math.round((hx.cpu / hx.seconds) * 100)}% | ${server} |`,
    );
    rmSync(out, { force: true });
  } finally {
    child.kill();
  }
}

// hx ingest: the NDJSON corpus posted to the ingest test server (step-up tokens, sha256 of every resource, as
// HealthClaw answers) with its defaults, against the server's own capacity: one plain loop posting the same
// Bundles, cut beforehand by `hx bundle --dir` with ingest's budgets. A fresh server for each run.
const ingestRows: string[] = [];
if (wanted('ingest')) {
  const mb = Math.round(1000 * scale);
  const corpus = `bench/data/corpus-${mb}.ndjson`;
  if (!existsSync(corpus)) {
    const file = createWriteStream(corpus);
    await writeCorpus(file, mb * 1e6);
    file.end();
    await once(file, 'close');
  }
  const secret = 'bench-secret';
  const chunks = join(work, 'chunks');
  time(`${HX} bundle ${corpus} --max-bytes 8MiB --max-entries 5000 --dir ${chunks}`);
  const [loop, hx] = (await bestOfFresh(
    [
      (base) => `node dist/bench/postLoop.js ${base} bench ${secret} ${chunks} > /dev/null`,
      (base) => `STEP_UP_SECRET=${secret} ${HX} ingest ${corpus} --base-url ${base} --tenant-id bench > /dev/null`,
    ],
    'dist/test/support/ingestServer.js',
    ['--secret', secret, '--meta-only', '--port', '0'],
  )) as [Timing, Timing];
  const inputMb = statSync(corpus).size / 1e6;
  ingestRows.push(
    `| hx ingest, ${inputMb.toFixed(0)} MB NDJSON (defaults: 8 MiB / 5000 entries, 2 in flight) | ${hx.seconds.toFixed(2)} | ` +
      `${(inputMb / hx.seconds).toFixed(0)} | ${hx.peakMb.toFixed(0)} MB | ${loop.seconds.toFixed(2)} | ${Math.round((loop.seconds / hx.seconds) * 100)}% |`,
  );
}

rmSync(work, { recursive: true, force: true });
/** A Markdown table of the rows a section gave, or nothing when it was not run. */
const table = (header: string, numbers: number, body: string[]) =>
  body.length ? [header, `|---|${'---:|'.repeat(numbers)}`, ...body, ''] : [];
process.stdout.write(
  [
    ...table('| command | s | MB/s | peak RSS | curl s | hx vs curl |', 5, rows),
    ...table('| command | s | MB/s | peak RSS | hx CPU s | hx CPU / wall | server alone (curl) s |', 6, exportRows),
    ...table('| command | s | MB/s in | peak RSS | plain loop s | hx vs loop |', 5, ingestRows),
  ].join('\n'),
);
