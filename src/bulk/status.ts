/**
 * Status polling (IG 2.0.0 "Bulk Data Status Request"): 202 while the export
 * runs (with `X-Progress` and, ideally, `Retry-After`), 200 with the
 * manifest when done, 4xx/5xx with an OperationOutcome when it failed. The
 * shared client retries 429/5xx (a `transient` 500 included); this loop
 * paces the 202s. `DELETE` on the status URL cancels (or releases) an export.
 */
import { HxError } from '../errors.js';
import { HttpError, type HttpClient } from '../http/client.js';
import { parseRetryAfter, sleep } from '../http/retry.js';
import type { Auth } from './auth.js';
import { header } from './kickoff.js';
import { parseManifest, type Manifest } from './manifest.js';

export interface PollPolicy {
  /** First wait when the server gives no usable Retry-After; doubles up to `maxMs`. */
  baseMs: number;
  maxMs: number;
  /** Longest Retry-After honoured; longer or absurd ones (an epoch) count as absent. */
  maxRetryAfterMs: number;
  /** Give up after this long in all (0: never). */
  timeLimitMs: number;
}

export const DEFAULT_POLL: PollPolicy = { baseMs: 1000, maxMs: 60_000, maxRetryAfterMs: 10 * 60_000, timeLimitMs: 0 };

export type StatusAnswer =
  | { done: false; progress?: string; retryAfterMs?: number }
  | { done: true; manifest: Manifest; expires?: string };

/** One status request. */
export async function checkStatus(client: HttpClient, auth: Auth, statusUrl: string, policy: PollPolicy, signal?: AbortSignal): Promise<StatusAnswer> {
  const request = async () => {
    await auth.ready();
    return client.fetch({ url: statusUrl, headers: { accept: 'application/json' }, what: 'export status', signal });
  };
  let res;
  try {
    res = await request();
  } catch (err) {
    // A token the server stopped accepting before it expired: renew it once and ask again.
    if (!(err instanceof HttpError && err.status === 401 && auth.invalidate())) throw err;
    res = await request();
  }
  const text = await (res.body as unknown as { text(): Promise<string> }).text();
  if (res.status === 202) {
    return {
      done: false,
      progress: header(res.headers['x-progress']),
      retryAfterMs: parseRetryAfter(res.headers['retry-after'], Date.now(), policy.maxRetryAfterMs),
    };
  }
  if (res.status !== 200) throw new HxError(`export status: unexpected HTTP ${res.status}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HxError('export status: the manifest is not JSON');
  }
  return { done: true, manifest: parseManifest(value, 'export status'), expires: header(res.headers['expires']) };
}

/** Polls until the manifest is ready; `onProgress` hears each 202. */
export async function pollStatus(
  client: HttpClient,
  auth: Auth,
  statusUrl: string,
  policy: PollPolicy,
  onProgress: (progress: string | undefined, waitMs: number) => void,
  signal?: AbortSignal,
): Promise<{ manifest: Manifest; expires?: string; polls: number }> {
  const deadline = policy.timeLimitMs > 0 ? Date.now() + policy.timeLimitMs : Infinity;
  let backoff = policy.baseMs;
  for (let polls = 1; ; polls++) {
    const answer = await checkStatus(client, auth, statusUrl, policy, signal);
    if (answer.done) return { ...answer, polls };
    let wait = answer.retryAfterMs;
    if (wait === undefined) {
      wait = backoff;
      backoff = Math.min(backoff * 2, policy.maxMs);
    }
    if (Date.now() + wait > deadline) {
      throw new HxError(`export not complete after ${Math.round(policy.timeLimitMs / 1000)} s (--time-limit); resume later with \`hx bulk download ${statusUrl}\` or cancel with \`hx bulk cancel\``);
    }
    onProgress(answer.progress, wait);
    await sleep(wait, signal);
  }
}

/** `DELETE` on the status URL: the server stops the export and may delete its files. */
export async function cancelExport(client: HttpClient, auth: Auth, statusUrl: string): Promise<number> {
  await auth.ready();
  const res = await client.fetch({ url: statusUrl, method: 'DELETE', headers: { accept: 'application/fhir+json' }, what: 'export cancel' });
  res.body.resume();
  return res.status;
}
