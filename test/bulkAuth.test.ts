/**
 * SMART Backend Services against the Bulk test server: the token endpoint
 * verifies the client assertion against a JWKS generated here.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair, type JWK } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { hx, parseNdjson, tempDir } from './support/cli.js';
import { startBulkServer, type BulkServer, type BulkServerOptions, type FileSpec } from './support/bulkServer.js';

const FAST = ['--poll-interval', '0.001', '--retry-base-ms', '1'];
const files: FileSpec[] = [
  { name: 'p.ndjson', type: 'Patient', generate: { from: 0, n: 50, pad: 10 } },
  { name: 'o.ndjson', type: 'Observation', generate: { from: 0, n: 400, pad: 100 } },
];

let server: BulkServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function keyPair(alg: 'RS384' | 'ES384', kid: string): Promise<{ privateJwk: JWK; publicJwk: JWK; pem: string }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return {
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg },
    publicJwk: { ...(await exportJWK(publicKey)), kid, alg },
    pem: await exportPKCS8(privateKey),
  };
}

async function serve(options: Omit<BulkServerOptions, 'files'> & { files?: FileSpec[] }): Promise<BulkServer> {
  server = await startBulkServer({ files, ...options });
  return server;
}

function tokensIn(s: BulkServer): string[] {
  return [...new Set(s.requests.map((r) => r.authorization).filter((a): a is string => Boolean(a)).map((a) => a.slice('Bearer '.length)))];
}

describe('SMART Backend Services', () => {
  it('RS384 key from a JWKS: discovery, token, Authorization on every request and on files when required', async () => {
    const rsa = await keyPair('RS384', 'rsa-1');
    const s = await serve({
      smart: { clientId: 'hx-test', jwks: { keys: [rsa.publicJwk] } },
      requiresAccessToken: true,
      polls: 2,
      faults: [{ match: /^POST \/auth\/token$/, fault: { kind: 'status', status: 503 } }],
    });
    const dir = tempDir();
    const keyFile = join(dir, 'key.jwks');
    writeFileSync(keyFile, JSON.stringify({ keys: [rsa.privateJwk] }));
    const report = join(dir, 'report.json');
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--client-id', 'hx-test', '--private-key', keyFile, '--scope', 'system/*.rs', '--report', report, ...FAST]);
    expect(run.stderr).not.toContain('Error');
    expect(run.code).toBe(0);
    expect(parseNdjson(run.stdout)).toHaveLength(450);
    expect(s.tokensIssued).toBe(1);
    const fhirRequests = s.requests.filter((r) => r.url.startsWith('/fhir/') && !r.url.includes('.well-known'));
    expect(fhirRequests.every((r) => r.authorization?.startsWith('Bearer tok-'))).toBe(true);
    // The token request was retried after the 503, with a fresh assertion (a new jti).
    const tokenRequests = s.requests.filter((r) => r.url === '/auth/token').map((r) => new URLSearchParams(r.body));
    expect(tokenRequests).toHaveLength(2);
    expect(tokenRequests[0].get('client_assertion')).not.toBe(tokenRequests[1].get('client_assertion'));
    expect(tokenRequests[1].get('scope')).toBe('system/*.rs');
    expect(JSON.parse(readFileSync(report, 'utf8')).tokensIssued).toBe(1);
    for (const token of tokensIn(s)) {
      expect(run.stderr).not.toContain(token);
      expect(readFileSync(report, 'utf8')).not.toContain(token);
    }
  });

  it('ES384 key from a PEM (kid = thumbprint); a token refused mid-download is renewed once', async () => {
    const ec = await keyPair('ES384', 'unused');
    const kid = await calculateJwkThumbprint({ kty: ec.publicJwk.kty, crv: ec.publicJwk.crv, x: ec.publicJwk.x, y: ec.publicJwk.y } as JWK);
    const s = await serve({
      smart: { clientId: 'hx-ec', jwks: { keys: [{ ...ec.publicJwk, kid }] } },
      requiresAccessToken: true,
      faults: [{ match: /o\.ndjson/, fault: { kind: 'status', status: 401 } }],
    });
    const dir = tempDir();
    writeFileSync(join(dir, 'key.pem'), ec.pem);
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--client-id', 'hx-ec', '--private-key', join(dir, 'key.pem'), '--dir', dir, ...FAST]);
    expect(run.code).toBe(0);
    expect(s.tokensIssued).toBe(2);
    expect(parseNdjson(readFileSync(join(dir, 'Observation.000.ndjson')))).toHaveLength(400);
  });

  it('obtains a new token before the old one expires during a long poll', async () => {
    const rsa = await keyPair('RS384', 'rsa-1');
    const s = await serve({ smart: { clientId: 'hx-test', jwks: { keys: [rsa.publicJwk] }, tokenLifetimeSeconds: 1 }, polls: 3, retryAfter: null });
    const dir = tempDir();
    writeFileSync(join(dir, 'key.jwk'), JSON.stringify(rsa.privateJwk));
    // No Retry-After: waits of 0.3, 0.6 and 1.2 s, longer in all than a token lives.
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--client-id', 'hx-test', '--private-key', join(dir, 'key.jwk'), '--poll-interval', '0.3', '--retry-base-ms', '1']);
    expect(run.code).toBe(0);
    expect(s.tokensIssued).toBeGreaterThanOrEqual(2);
    expect(s.requests.filter((r) => r.url.startsWith('/fhir/status/')).every((r) => r.authorization?.startsWith('Bearer tok-'))).toBe(true);
    expect(parseNdjson(run.stdout)).toHaveLength(450);
  });

  /** `hx bulk export` against a SMART server whose status URL answers 401 `times` times after its first poll. */
  async function exportWithStatus401(times: number) {
    const rsa = await keyPair('RS384', 'rsa-1');
    const s = await serve({
      smart: { clientId: 'hx-test', jwks: { keys: [rsa.publicJwk] } },
      polls: 2,
      faults: [{ match: /^GET \/fhir\/status\//, skip: 1, times, fault: { kind: 'status', status: 401 } }],
    });
    const dir = tempDir();
    writeFileSync(join(dir, 'key.jwk'), JSON.stringify(rsa.privateJwk));
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--client-id', 'hx-test', '--private-key', join(dir, 'key.jwk'), ...FAST]);
    return { s, run };
  }

  it('a token refused during polling is renewed once, and the export goes on', async () => {
    const { s, run } = await exportWithStatus401(1);
    expect(run.code).toBe(0);
    expect(s.tokensIssued).toBe(2);
    expect(parseNdjson(run.stdout)).toHaveLength(450);
  });

  it('a second refusal of a fresh token during polling fails the run, saying why', async () => {
    const { s, run } = await exportWithStatus401(2);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('export status: HTTP 401');
    expect(s.tokensIssued).toBe(2);
  });

  it('a rejected assertion is reported with the error_description, and no secret is printed', async () => {
    const trusted = await keyPair('RS384', 'k1');
    const other = await keyPair('RS384', 'k1');
    const s = await serve({ smart: { clientId: 'hx-test', jwks: { keys: [trusted.publicJwk] } } });
    const dir = tempDir();
    writeFileSync(join(dir, 'key.json'), JSON.stringify(other.privateJwk));
    const run = await hx(['bulk', 'export', '--base-url', s.base, '--client-id', 'hx-test', '--private-key', join(dir, 'key.json'), ...FAST]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('token request: HTTP 401; the server says: invalid_client: client assertion rejected: signature verification failed');
    const assertion = new URLSearchParams(s.requests.find((r) => r.url === '/auth/token')!.body).get('client_assertion')!;
    expect(run.stderr).not.toContain(assertion.split('.')[2]);
    expect(run.stderr).not.toContain(String(other.privateJwk.d));
  });

  it('a bearer token is sent to the FHIR server but not to a file host reached by redirect, and never printed', async () => {
    const secret = 'not-a-real-token-s3cr3t';
    const s = await serve({ redirectFiles: true, requiresAccessToken: true, faults: [{ match: /status/, times: 9, fault: { kind: 'status', status: 403 } }] });
    let run = await hx(['bulk', 'export', '--base-url', s.base, '--bearer', secret, ...FAST]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('HTTP 403');
    expect(run.stderr).not.toContain(secret);
    await s.close();
    const t = await serve({ redirectFiles: true, requiresAccessToken: true });
    run = await hx(['bulk', 'export', '--base-url', t.base, '-v', ...FAST], { env: { HX_BEARER_TOKEN: secret } });
    expect(run.code).toBe(0);
    expect(parseNdjson(run.stdout)).toHaveLength(450);
    const redirects = t.requests.filter((r) => r.url.startsWith('/fhir/redirect-files/'));
    const storage = t.requests.filter((r) => r.url.startsWith('/fhir/files/'));
    expect(redirects).toHaveLength(2);
    expect(redirects.every((r) => r.authorization === `Bearer ${secret}`)).toBe(true);
    expect(storage).toHaveLength(2);
    expect(storage.every((r) => r.authorization === undefined && r.port !== redirects[0].port)).toBe(true);
    expect(run.stderr).not.toContain(secret);
  });
});
