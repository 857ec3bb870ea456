/**
 * The Bulk Data flows the `hx bulk` commands run: export (kick-off, poll,
 * download), download of an export started earlier (status URL, manifest
 * file, or the resume state of a `--dir`), status, cancel.
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HxError } from '../errors.js';
import type { HttpClient } from '../http/client.js';
import { BulkAccount } from './account.js';
import type { Auth } from './auth.js';
import { DirDestination, StdoutDestination, type Destination } from './destination.js';
import { downloadFiles } from './download.js';
import type { EventLog } from './eventLog.js';
import type { FileFetcher } from './fileRequest.js';
import { exportUrl, kickOff, parameterPairs, type KickoffRequest } from './kickoff.js';
import { parseManifest, planFiles, type Manifest } from './manifest.js';
import { STATE_FILE, StateFile, writeAtomic } from './state.js';
import { cancelExport, pollStatus, type PollPolicy } from './status.js';

export interface BulkSession {
  client: HttpClient;
  fetcher: FileFetcher;
  auth: Auth;
  poll: PollPolicy;
  concurrency: number;
  /** Write one file per manifest entry here (resumable); stdout when absent. */
  dir?: string;
  /** Exit 0 even when the manifest lists error files. */
  allowErrors?: boolean;
  /** Put `deleted[]` files on stdout after the output files (a `--dir` always keeps them). */
  includeDeleted?: boolean;
  log: (message: string) => void;
  /** Aborted by Ctrl-C. */
  signal?: AbortSignal;
  account?: BulkAccount;
  /** `--log`: events in the SMART reference client's format. */
  events?: EventLog;
  /** Log download progress this often (0 or absent: never). */
  progressMs?: number;
  /** Where the NDJSON goes without `dir` (process.stdout by default). */
  stdout?: NodeJS.WritableStream;
}

export const MANIFEST_FILE = 'manifest.json';

/** Exit code of a run stopped by Ctrl-C (128 + SIGINT), like a shell. */
export const INTERRUPTED_EXIT = 130;

export async function runExport(req: KickoffRequest, session: BulkSession): Promise<BulkAccount> {
  const account = (session.account ??= new BulkAccount());
  const state = session.dir ? await StateFile.open(session.dir) : undefined;
  const requestKey = JSON.stringify({ url: exportUrl(req.baseUrl, req.level), params: parameterPairs(req.params), post: Boolean(req.post) });
  let statusUrl: string;
  // Same request, same folder, not finished: the user is resuming. A finished one is repeated.
  if (state?.state.request === requestKey && state.state.statusUrl && !state.state.complete) {
    statusUrl = state.state.statusUrl;
    session.log(`resuming the export started earlier in ${session.dir} (remove ${join(session.dir!, STATE_FILE)} to start a new one)`);
    if (state.state.transactionTime && existsSync(join(session.dir!, MANIFEST_FILE))) {
      account.statusUrl = statusUrl;
      return finish(await readManifestFile(join(session.dir!, MANIFEST_FILE)), session, state);
    }
  } else {
    const exportUrlText = session.events?.url(exportUrl(req.baseUrl, req.level));
    const requestParameters = Object.fromEntries(parameterPairs(req.params));
    try {
      statusUrl = await kickOff(session.client, session.auth, req, session.signal);
    } catch (err) {
      session.events?.event('kickoff', { exportUrl: exportUrlText, errorCode: (err as { status?: number }).status ?? null, errorBody: (err as Error).message, requestParameters });
      if (session.signal?.aborted) throw new HxError('interrupted before the export started', INTERRUPTED_EXIT);
      throw err;
    }
    session.events?.event('kickoff', { exportUrl: exportUrlText, errorCode: null, errorBody: null, requestParameters });
    await forgetFiles(state, session);
    await state?.update((s) => {
      s.request = requestKey;
      s.statusUrl = statusUrl;
      s.transactionTime = undefined;
      s.complete = false;
    });
    session.log(`export started; status URL ${session.client.redactor.url(statusUrl)}`);
  }
  account.statusUrl = statusUrl;
  return finish(await waitForManifest(statusUrl, session), session, state);
}

/** `hx bulk download SOURCE`: a status URL, a manifest file, or nothing (the `--dir` state says). */
export async function runDownload(source: string | undefined, session: BulkSession): Promise<BulkAccount> {
  const account = (session.account ??= new BulkAccount());
  const state = session.dir ? await StateFile.open(session.dir) : undefined;
  let manifest: Manifest;
  if (source && /^https?:\/\//i.test(source)) {
    account.statusUrl = source;
    if (state && state.state.statusUrl !== source) await forgetFiles(state, session);
    await state?.update((s) => {
      s.statusUrl = source;
    });
    manifest = await waitForManifest(source, session);
  } else if (source) {
    manifest = await readManifestFile(source);
  } else if (state && existsSync(join(state.dir, MANIFEST_FILE))) {
    manifest = await readManifestFile(join(state.dir, MANIFEST_FILE));
  } else if (state?.state.statusUrl) {
    account.statusUrl = state.state.statusUrl;
    manifest = await waitForManifest(state.state.statusUrl, session);
  } else {
    throw new HxError('name a status URL or a manifest file, or a --dir that holds an earlier export');
  }
  return finish(manifest, session, state);
}

async function waitForManifest(statusUrl: string, session: BulkSession): Promise<Manifest> {
  const account = session.account!;
  try {
    const { manifest, expires, polls } = await pollStatus(
      session.client,
      session.auth,
      statusUrl,
      session.poll,
      (progress, waitMs) => {
        account.polls++;
        session.events?.event('status_progress', { body: null, xProgress: progress ?? null, retryAfter: String(Math.round(waitMs / 1000)) });
        session.log(`export in progress${progress ? `: ${progress}` : ''} (next check in ${(waitMs / 1000).toFixed(1)} s)`);
      },
      session.signal,
    );
    account.polls = polls;
    session.events?.event('status_complete', { transactionTime: manifest.transactionTime });
    if (expires) session.log(`the files are available until ${expires}`);
    return manifest;
  } catch (err) {
    session.events?.event('status_error', { body: null, code: (err as { status?: number }).status ?? null, message: (err as Error).message });
    if (session.signal?.aborted) {
      await cancelExport(session.client, session.auth, statusUrl).catch(() => undefined);
      throw new HxError('interrupted: the export was cancelled on the server (DELETE sent to its status URL)', INTERRUPTED_EXIT);
    }
    throw err;
  }
}

async function finish(manifest: Manifest, session: BulkSession, state: StateFile | undefined): Promise<BulkAccount> {
  const account = session.account!;
  account.transactionTime = manifest.transactionTime;
  const files = planFiles(manifest);
  const count = (kind: string) => files.filter((f) => f.kind === kind).length;
  session.events?.event('manifest_complete', {
    transactionTime: manifest.transactionTime,
    totalOutputFileCount: count('output'),
    totalDeletedFileCount: count('deleted'),
    totalErrorFileCount: count('error'),
    totalManifests: 1,
  });
  let destination: Destination;
  if (session.dir && state) {
    await writeAtomic(join(session.dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    if (state.state.transactionTime !== manifest.transactionTime) await forgetFiles(state, session);
    await state.update((s) => {
      s.transactionTime = manifest.transactionTime;
    });
    destination = new DirDestination(session.dir, state);
  } else {
    const emitted = files.filter((f) => f.kind === 'output' || (f.kind === 'deleted' && session.includeDeleted));
    const deleted = files.filter((f) => f.kind === 'deleted').length;
    if (deleted && !session.includeDeleted) session.log(`${deleted} deleted[] files are counted but not written to stdout (use --include-deleted or --dir)`);
    destination = new StdoutDestination(emitted, session.stdout);
  }
  try {
    await downloadFiles(manifest, files, { ...session, account, destination });
  } catch (err) {
    if (session.signal?.aborted) {
      // A --dir download can be resumed, so the server keeps its files; a pipe cannot.
      if (session.dir) throw new HxError('interrupted during the download; rerun with the same --dir to resume', INTERRUPTED_EXIT);
      if (account.statusUrl) await cancelExport(session.client, session.auth, account.statusUrl).catch(() => undefined);
      throw new HxError('interrupted during the download; the export was released on the server (DELETE sent to its status URL)', INTERRUPTED_EXIT);
    }
    throw err;
  } finally {
    account.requests = session.client.stats.requests;
    account.retries = session.client.stats.retries;
  }
  await state?.update((s) => {
    s.complete = true;
  });
  session.events?.event('export_complete', {
    files: account.filesDownloaded + account.filesResumed,
    resources: account.resources,
    bytes: account.bytes,
    attachments: null,
    duration: Math.round(account.elapsedSeconds * 1000),
  });
  if (account.errorFiles > 0 && !session.allowErrors) {
    throw new HxError(`the export reported ${account.errorOutcomes} errors in ${account.errorFiles} error files (summarised above); --allow-errors accepts them`);
  }
  return account;
}

/** A new export in a --dir that holds another one: its files go, so the folder never mixes two exports. */
async function forgetFiles(state: StateFile | undefined, session: BulkSession): Promise<void> {
  // Only names hx gives (a state file edited by hand must not reach outside the folder).
  const names = Object.keys(state?.state.files ?? {}).filter((name) => /^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(name));
  if (!state || names.length === 0) return;
  session.log(`removing ${names.length} files of an earlier export from ${state.dir}`);
  await Promise.all(names.map((name) => rm(join(state.dir, name), { force: true })));
  await state.update((s) => {
    s.files = {};
  });
}

async function readManifestFile(path: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new HxError(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  try {
    return parseManifest(JSON.parse(text), path);
  } catch (err) {
    if (err instanceof HxError) throw err;
    throw new HxError(`${path}: not JSON`);
  }
}
