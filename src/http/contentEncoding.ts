/**
 * Compressed response bodies. FHIR JSON shrinks about tenfold under gzip,
 * and over a real network the bytes are the time, so `hx fetch` and `hx bulk
 * download` ask for it (`Accept-Encoding: gzip`) and inflate what comes
 * compressed; a server that ignores the header sends plain bytes as before.
 * A server that sends deflate or brotli unasked is read too; an encoding
 * nobody can read is an error that says so, not a page of garbage.
 */
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { HxError } from '../errors.js';
import { RetryableError, isRetryable } from './retry.js';

export const ACCEPT_GZIP = { 'accept-encoding': 'gzip' } as const;

type Headers = Record<string, string | string[] | undefined>;

const DECODERS: ReadonlyMap<string, () => Transform> = new Map([
  ['gzip', createGunzip],
  ['x-gzip', createGunzip],
  ['deflate', createInflate],
  ['br', createBrotliDecompress],
]);

/** The response's `Content-Encoding`, lower case ('' when none or identity). */
function contentEncoding(headers: Headers): string {
  const value = headers['content-encoding'];
  const text = (Array.isArray(value) ? value.join(',') : (value ?? '')).trim().toLowerCase();
  return text === 'identity' ? '' : text;
}

/**
 * The body as the server meant it, decoded when it came compressed (errors
 * of either stream come out of the result). `what` names the request in the
 * error for an encoding that cannot be read (several at once included).
 */
export function decodedBody(body: Readable, headers: Headers, what: string): Readable {
  const encoding = contentEncoding(headers);
  if (encoding === '') return body;
  const decoder = DECODERS.get(encoding);
  if (!decoder) {
    body.destroy();
    throw new HxError(`${what}: the server sent the body in an encoding hx cannot read (Content-Encoding: ${encoding})`);
  }
  return pipeline(body, decoder(), () => {}) as unknown as Readable;
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
