/**
 * Downloads the files of a manifest with bounded parallelism (p-limit).
 * Each file is one retried unit: request (with the token when the manifest
 * says `requiresAccessToken`), inflate when the server compressed, count
 * lines, write to the destination. A failure mid-file (reset, 5xx, an
 * expired token) fetches the file again from its start.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pLimit from 'p-limit';
import type { HttpClient } from '../http/client.js';
import { ACCEPT_GZIP, brokenBody, decodedBody } from '../http/contentEncoding.js';
import { RetryableError } from '../http/retry.js';
import type { BulkAccount } from './account.js';
import type { Auth } from './auth.js';
import type { Destination } from './destination.js';
import type { EventLog } from './eventLog.js';
import { FileFetcher, Unauthorized } from './fileRequest.js';
import { LineCounter, type LineCounts } from './lineCounter.js';
import type { Manifest, PlannedFile } from './manifest.js';
import { YoungCollection } from '../util/youngCollection.js';

export interface DownloadOptions {
  client: HttpClient;
  fetcher: FileFetcher;
  auth: Auth;
  account: BulkAccount;
  destination: Destination;
  concurrency: number;
  /** Messages for stderr. */
  log: (message: string) => void;
  signal?: AbortSignal;
  events?: EventLog;
  /** Log a progress line this often (0 or absent: never). */
  progressMs?: number;
}

/** How much of each error file is kept to summarise it. */
const ERROR_SUMMARY_BYTES = 256 * 1024;

export async function downloadFiles(manifest: Manifest, files: PlannedFile[], options: DownloadOptions): Promise<void> {
  const limit = pLimit(Math.max(1, options.concurrency));
  const progress = options.progressMs ? setInterval(() => options.log(options.account.progress()), options.progressMs) : undefined;
  progress?.unref();
  options.account.filesPlanned += files.length;
  // After the first failure no new file starts; those under way finish (or fail), so none is left half-written.
  let failure: { error: unknown } | undefined;
  const young = new YoungCollection();
  await Promise.all(
    files.map((file) =>
      limit(async () => {
        if (failure) return;
        try {
          await downloadOne(manifest, file, options, young);
        } catch (error) {
          failure ??= { error };
        }
      }),
    ),
  );
  clearInterval(progress);
  if (failure) {
    await options.destination.abort();
    throw failure.error;
  }
  await options.destination.close();
}

async function downloadOne(manifest: Manifest, file: PlannedFile, options: DownloadOptions, young: YoungCollection): Promise<void> {
  const { account, destination, log } = options;
  options.signal?.throwIfAborted();
  const before = await destination.complete(file);
  if (before) {
    const types = before.types ? new Map(Object.entries(before.types)) : undefined;
    account.addFile(file, { bytes: before.bytes, lines: before.lines, headerLines: before.headerLines ?? 0, types, addedNewline: false }, true);
    return;
  }
  const target = destination.target(file);
  const capture = file.kind === 'error' ? new Capture(ERROR_SUMMARY_BYTES) : undefined;
  const fileUrl = options.events?.url(file.entry.url);
  options.events?.event('download_request', { fileUrl, itemType: file.kind, resourceType: file.entry.type ?? null });
  let counts: LineCounts;
  try {
    counts = await fetchFile(manifest, file, target.open.bind(target), capture, young, options);
    await target.commit(counts);
  } catch (err) {
    options.events?.event('download_error', { fileUrl, body: null, code: (err as { status?: number }).status ?? null, message: (err as Error).message });
    await target.abort();
    throw err;
  }
  options.events?.event('download_complete', { fileUrl, fileSize: counts.bytes, resourceCount: counts.lines - counts.headerLines });
  const mismatch = account.addFile(file, counts, false);
  if (mismatch) log(`${file.name}: the manifest says ${mismatch.manifestCount} resources, the file has ${mismatch.found}`);
  if (capture) log(summariseErrors(file.name, capture.text(), counts.lines));
}

async function fetchFile(
  manifest: Manifest,
  file: PlannedFile,
  open: () => NodeJS.WritableStream,
  capture: Capture | undefined,
  young: YoungCollection,
  { client, fetcher, auth, signal, account }: DownloadOptions,
): Promise<LineCounts> {
  const what = `${file.name} (${file.kind} file)`;
  const headers = { accept: 'application/fhir+ndjson', ...ACCEPT_GZIP };
  let renewedToken = false;
  return client.retrying(
    `download ${file.name}`,
    async () => {
      if (manifest.requiresAccessToken) await auth.ready();
      let res;
      try {
        res = await fetcher.attempt(file.entry.url, headers, manifest.requiresAccessToken ? auth.headers() : {}, what, signal);
      } catch (err) {
        // A token that expired mid-download: renew it once and go again.
        if (err instanceof Unauthorized && manifest.requiresAccessToken && !renewedToken && auth.invalidate()) {
          renewedToken = true;
          throw new RetryableError(err.message);
        }
        throw err;
      }
      const counter = new LineCounter(file.kind === 'output' && !file.entry.type, (n) => {
        account.bytesSeen += n;
        young.passed(n);
      });
      capture?.reset();
      const stages: (NodeJS.ReadableStream | NodeJS.WritableStream)[] = [decodedBody(res.body, res.headers, what)];
      if (capture) stages.push(capture);
      stages.push(counter, open());
      try {
        await pipeline(stages as never, { signal });
      } catch (err) {
        throw brokenBody(err, what);
      }
      return counter.counts;
    },
    signal,
  );
}

/** Keeps the first bytes that pass (the start of an error file, to summarise it). */
class Capture extends Transform {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(private readonly limit: number) {
    super();
  }

  reset(): void {
    this.parts = [];
    this.size = 0;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (this.size < this.limit) {
      this.parts.push(chunk.subarray(0, this.limit - this.size));
      this.size += Math.min(chunk.length, this.limit - this.size);
    }
    done(null, chunk);
  }

  /** The complete lines kept (a line cut by the limit is left out). */
  text(): string {
    const text = Buffer.concat(this.parts).toString('utf8');
    return this.size < this.limit ? text : text.slice(0, text.lastIndexOf('\n') + 1);
  }
}

/**
 * One stderr line per error file: how many OperationOutcomes (`total`,
 * counted over the whole file), and the distinct diagnostics (up to 5) of
 * those in `text`, the start of the file. Diagnostics are the server's
 * words about the export, not record content; they are clipped.
 */
export function summariseErrors(name: string, text: string, total: number): string {
  const messages = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let said: string;
    try {
      const oo = JSON.parse(line) as { issue?: { diagnostics?: string; details?: { text?: string }; code?: string }[] };
      said = (oo.issue ?? []).map((i) => i?.diagnostics ?? i?.details?.text ?? i?.code).filter(Boolean).join('; ') || 'no diagnostics';
    } catch {
      said = 'a line that is not JSON';
    }
    messages.set(said, (messages.get(said) ?? 0) + 1);
  }
  const shown = [...messages].slice(0, 5).map(([m, n]) => `${n > 1 ? `${n}× ` : ''}${m.length > 200 ? `${m.slice(0, 200)}…` : m}`);
  const more = messages.size > 5 ? `; and ${messages.size - 5} other messages` : '';
  return `error file ${name}: ${total} OperationOutcome${total === 1 ? '' : 's'}: ${shown.join(' | ')}${more}`;
}
