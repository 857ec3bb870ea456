/**
 * Authorization for Bulk Data: none, a fixed bearer token, or SMART Backend
 * Services (client_credentials with a signed JWT client assertion,
 * RS384 or ES384). Tokens are cached and renewed before they expire, so a
 * long poll or download never sends a stale one; a 401 on a status poll or a download
 * forces a renewal (`invalidate`).
 */
import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { JWK } from 'jose';
import { HxError, UsageError } from '../errors.js';
import { RETRYABLE_STATUS, RetryableError, parseRetryAfter } from '../http/retry.js';
import { request } from '../http/undici.js';
import type { HttpClient } from '../http/client.js';
import type { Redactor } from '../http/redact.js';

export interface Auth {
  /** Makes sure `headers()` holds a token valid for a while; a no-op without SMART. */
  ready(): Promise<void>;
  /** Authorization headers for a request to the FHIR server (empty for an open server). */
  headers(): Record<string, string>;
  /** The server refused the token: get a new one next time (when that is possible). */
  invalidate(): boolean;
}

export const noAuth: Auth = { ready: async () => {}, headers: () => ({}), invalidate: () => false };

export function bearerAuth(token: string, redactor: Redactor): Auth {
  redactor.add(token);
  return { ready: async () => {}, headers: () => ({ authorization: `Bearer ${token}` }), invalidate: () => false };
}

export type SigningAlg = 'RS384' | 'ES384';

export interface SigningKey {
  key: KeyObject | CryptoKey | Uint8Array;
  alg: SigningAlg;
  kid: string;
}

/**
 * Reads a private key: a JWK, a JWKS (the first private RS384/ES384 key, or
 * the one whose `kid` is asked for), or a PKCS#8 / PKCS#1 / SEC1 PEM. The
 * algorithm follows the key type (RSA → RS384, EC P-384 → ES384).
 */
export async function loadSigningKey(path: string, kid?: string): Promise<SigningKey> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`--private-key ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
  });
  if (text.trimStart().startsWith('-----BEGIN')) {
    let key: KeyObject;
    try {
      key = createPrivateKey(text);
    } catch {
      throw new UsageError(`--private-key ${path}: not a private key PEM`);
    }
    const alg = algOfKeyObject(key, path);
    const { calculateJwkThumbprint, exportJWK } = await jose();
    const publicJwk = await exportJWK(key);
    delete publicJwk.d;
    return { key, alg, kid: kid ?? (await calculateJwkThumbprint(publicJwk)) };
  }
  let value: { keys?: JWK[] } & JWK;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UsageError(`--private-key ${path}: neither a PEM nor JSON (JWK or JWKS)`);
  }
  const candidates = Array.isArray(value.keys) ? value.keys : [value];
  const jwk = candidates.find((k) => k.d !== undefined && algOfJwk(k) !== undefined && (kid === undefined || k.kid === kid));
  if (!jwk) throw new UsageError(`--private-key ${path}: no private RS384 or ES384 key${kid ? ` with kid ${kid}` : ''}`);
  const alg = algOfJwk(jwk)!;
  const keyId = kid ?? jwk.kid;
  if (!keyId) throw new UsageError(`--private-key ${path}: the key has no kid; give one with --kid`);
  return { key: await (await jose()).importJWK(jwk, alg), alg, kid: keyId };
}

/** Loaded on first use: most runs need no signing, and every `hx` start would pay for it. */
function jose(): Promise<typeof import('jose')> {
  return import('jose');
}

function algOfJwk(jwk: JWK): SigningAlg | undefined {
  if (jwk.alg === 'RS384' || jwk.alg === 'ES384') return jwk.alg as SigningAlg;
  if (jwk.alg) return undefined;
  if (jwk.kty === 'RSA') return 'RS384';
  if (jwk.kty === 'EC' && jwk.crv === 'P-384') return 'ES384';
  return undefined;
}

function algOfKeyObject(key: KeyObject, path: string): SigningAlg {
  if (key.asymmetricKeyType === 'rsa') return 'RS384';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'secp384r1') return 'ES384';
  throw new UsageError(`--private-key ${path}: SMART Backend Services needs an RSA or EC P-384 key`);
}

/** The signed client assertion: iss = sub = client id, aud = token endpoint, 5 minutes, unique jti. */
export async function clientAssertion(clientId: string, tokenUrl: string, key: SigningKey, now = Date.now()): Promise<string> {
  const seconds = Math.floor(now / 1000);
  const { SignJWT } = await jose();
  return new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setIssuedAt(seconds)
    .setExpirationTime(seconds + 300)
    .sign(key.key);
}

export interface SmartOptions {
  client: HttpClient;
  baseUrl: string;
  clientId: string;
  key: SigningKey;
  scope: string;
  /** Skips discovery when given. */
  tokenUrl?: string;
  /** Renew when less than this is left (default 60 s, or a third of a short lifetime). */
  marginMs?: number;
}

interface TokenResponse {
  access_token?: string;
  expires_in?: number;
  token_type?: string;
}

export class SmartAuth implements Auth {
  private token: string | undefined;
  private expiresAt = 0;
  private tokenUrl: string | undefined;
  private pending: Promise<void> | undefined;
  /** Tokens obtained, for the account. */
  tokensIssued = 0;

  constructor(private readonly options: SmartOptions) {
    this.tokenUrl = options.tokenUrl;
  }

  ready(): Promise<void> {
    if (this.token && Date.now() < this.expiresAt) return Promise.resolve();
    // One request at a time, however many downloads ask together.
    this.pending ??= this.obtain().finally(() => (this.pending = undefined));
    return this.pending;
  }

  headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  invalidate(): boolean {
    this.expiresAt = 0;
    return true;
  }

  private async obtain(): Promise<void> {
    const { client, clientId, key, scope } = this.options;
    const tokenUrl = (this.tokenUrl ??= await discoverTokenUrl(client, this.options.baseUrl));
    // A fresh assertion per attempt: a server may refuse a jti it has seen.
    const body = async () => {
      const assertion = await clientAssertion(clientId, tokenUrl, key);
      client.redactor.add(assertion);
      return new URLSearchParams({
        grant_type: 'client_credentials',
        scope,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString();
    };
    const value = await requestToken(client, tokenUrl, body);
    if (typeof value?.access_token !== 'string' || !value.access_token) throw new HxError('token request: the response has no access_token');
    client.redactor.add(value.access_token);
    const lifetimeMs = (typeof value.expires_in === 'number' && value.expires_in > 0 ? value.expires_in : 300) * 1000;
    const margin = Math.min(this.options.marginMs ?? 60_000, lifetimeMs / 3);
    this.token = value.access_token;
    this.expiresAt = Date.now() + lifetimeMs - margin;
    this.tokensIssued++;
  }
}

/** `token_endpoint` from `{base}/.well-known/smart-configuration`. */
export async function discoverTokenUrl(client: HttpClient, baseUrl: string): Promise<string> {
  const url = `${baseUrl.replace(/\/+$/, '')}/.well-known/smart-configuration`;
  const { value } = await client.json<{ token_endpoint?: unknown }>({ url, what: 'SMART configuration' });
  if (typeof value?.token_endpoint !== 'string') {
    throw new HxError(`SMART configuration at ${url} names no token_endpoint; give it with --token-url`);
  }
  return new URL(value.token_endpoint, url).toString();
}

/**
 * POSTs the token request. Done here rather than with `client.json` because
 * the token endpoint answers errors as OAuth JSON (`error`,
 * `error_description`), which a user needs to see; 429 and 5xx are retried.
 */
async function requestToken(client: HttpClient, tokenUrl: string, body: () => Promise<string>): Promise<TokenResponse> {
  return client.retrying('token request', async () => {
    client.stats.requests++;
    const res = await request(tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: await body(),
    });
    const text = await res.body.text();
    if (res.statusCode >= 200 && res.statusCode < 300) {
      try {
        return JSON.parse(text) as TokenResponse;
      } catch {
        throw new HxError('token request: the response is not JSON');
      }
    }
    const said = client.redactor.text(oauthError(text));
    if (RETRYABLE_STATUS.has(res.statusCode)) {
      throw new RetryableError(`token request: HTTP ${res.statusCode}${said}`, parseRetryAfter(res.headers['retry-after'], Date.now(), client.retryPolicy.maxRetryAfterMs), res.statusCode);
    }
    throw new HxError(`token request: HTTP ${res.statusCode}${said} (check --client-id, --private-key, --kid and --scope)`);
  });
}

function oauthError(text: string): string {
  try {
    const value = JSON.parse(text) as { error?: unknown; error_description?: unknown };
    const parts = [value.error, value.error_description].filter((p) => typeof p === 'string' && p);
    if (parts.length) return `; the server says: ${parts.join(': ').slice(0, 300)}`;
  } catch {
    // not JSON: fall through
  }
  const plain = text.trim().replace(/\s+/g, ' ');
  return plain && !plain.startsWith('<') ? `; the server says: ${plain.slice(0, 300)}` : '';
}
