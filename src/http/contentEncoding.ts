/**
 * Compressed response bodies. FHIR JSON shrinks about tenfold under gzip,
 * and over a real network the bytes are the time, so `hx fetch` and `hx bulk
 * download` ask for it (`Accept-Encoding: gzip`) and inflate what comes
 * compressed; a server that ignores the header sends plain bytes as before.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { RetryableError, isRetryable } from './retry.js';

export const ACCEPT_GZIP = { 'accept-encoding': 'gzip' } as const;

/** Whether the response's `Content-Encoding` is gzip. */
export function isGzipped(headers: Record<string, string | string[] | undefined>): boolean {
  const value = headers['content-encoding'];
  return /\bgzip\b/i.test(Array.isArray(value) ? value.join(',') : (value ?? ''));
}

/** The body as the server meant it: inflated when it came gzipped (errors of either stream come out of the result). */
export function decodedBody(body: Readable, headers: Record<string, string | string[] | undefined>): Readable {
  if (!isGzipped(headers)) return body;
  return pipeline(body, createGunzip(), () => {}) as unknown as Readable;
}

/**
 * A failure while reading a body, as a RetryableError when fetching it again
 * may cure it: the connection broke off, or the compressed stream was cut
 * short or garbled on the way (zlib's `Z_…` codes). A local failure (a full
 * disk) stays what it is.
 */
export function brokenBody(err: unknown, what: string): unknown {
  if ((err as Error)?.name === 'AbortError' || isRetryable(err)) return err;
  const code = (err as NodeJS.ErrnoException)?.code ?? '';
  if (code.startsWith('Z_') || code.startsWith('UND_ERR') || code === 'ERR_STREAM_PREMATURE_CLOSE') {
    return new RetryableError(`${what}: the response body broke off (${code})`);
  }
  return err;
}
