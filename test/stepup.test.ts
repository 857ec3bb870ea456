import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/errors.js';
import { checkTenant, mintStepUpToken, signStepUpToken, StepUpTokens, TENANT_PATTERN } from '../src/healthclaw/stepUp.js';
import { verifyStepUpToken } from './support/fhirServer.js';

// Golden tokens made by Python, the way the HealthClaw server (and its scripts) build them:
//   payload = base64.urlsafe_b64encode(json.dumps({...}, separators=(",", ":")).encode()).decode()
//   token = payload + "." + hmac.new(secret.encode("utf-8"), payload.encode(), hashlib.sha256).hexdigest()
const GOLDEN = [
  {
    claims: { exp: 1767225900, tid: 'ev-personal', sub: 'hx', nonce: '00112233445566778899aabbccddeeff' },
    secret: 's3cret-ünïcode',
    token:
      'eyJleHAiOjE3NjcyMjU5MDAsInRpZCI6ImV2LXBlcnNvbmFsIiwic3ViIjoiaHgiLCJub25jZSI6IjAwMTEyMjMzNDQ1NTY2Nzc4ODk5YWFiYmNjZGRlZWZmIn0=' +
      '.caa3a32ac2f56134adfa97c66f73c696e6fd289bea963a0298783d55ccf5d182',
  },
  {
    // Non-ASCII, DEL and an astral character are escaped as Python's ensure_ascii does (\u00e9, \u007f, \ud83d\ude00).
    claims: { exp: 1767225900, tid: 't1', sub: 'agent-é\x7f😀', nonce: '0123456789abcdef0123456789abcdef' },
    secret: 'k',
    token:
      'eyJleHAiOjE3NjcyMjU5MDAsInRpZCI6InQxIiwic3ViIjoiYWdlbnQtXHUwMGU5XHUwMDdmXHVkODNkXHVkZTAwIiwibm9uY2UiOiIwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiJ9' +
      '.0aa1b8444d8122e0d726428f26497c1e3a1c75c4a8cb4586439e5201950cd9cb',
  },
  {
    // Two padding characters kept.
    claims: { exp: 1767225901, tid: 'ab', sub: 'x', nonce: '0123456789abcdef0123456789abcdef' },
    secret: 'k',
    token:
      'eyJleHAiOjE3NjcyMjU5MDEsInRpZCI6ImFiIiwic3ViIjoieCIsIm5vbmNlIjoiMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYifQ==' +
      '.ab38351e7824d31b4f4a00489524c31c5962da544e334f92a97517b5859d51da',
  },
  {
    // The URL-safe alphabet: "-" where standard base64 has "+".
    claims: { exp: 1767225900, tid: 't1', sub: 'hx>>>', nonce: '0123456789abcdef0123456789abcdef' },
    secret: 'k',
    token:
      'eyJleHAiOjE3NjcyMjU5MDAsInRpZCI6InQxIiwic3ViIjoiaHg-Pj4iLCJub25jZSI6IjAxMjM0NTY3ODlhYmNkZWYwMTIzNDU2Nzg5YWJjZGVmIn0=' +
      '.558cab8797832723714ab075ea431291fdd1cb985b5fc389fc2c320a92ab68a2',
  },
];

describe('HealthClaw step-up tokens', () => {
  it.each(GOLDEN)('signs byte for byte as the Python server expects ($claims.sub)', ({ claims, secret, token }) => {
    expect(signStepUpToken(claims, secret)).toBe(token);
  });

  it('mints a token the server accepts: padded payload, exp five minutes ahead, random nonce', () => {
    const now = Date.parse('2026-03-01T10:00:00Z');
    const token = mintStepUpToken({ secret: 'the-secret', tenant: 'ev-personal', now });
    const [payload, signature] = [token.slice(0, token.lastIndexOf('.')), token.slice(token.lastIndexOf('.') + 1)];
    expect(payload.length % 4).toBe(0);
    expect(signature).toMatch(/^[0-9a-f]{64}$/);
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    expect(Object.keys(claims)).toEqual(['exp', 'tid', 'sub', 'nonce']);
    expect(claims).toMatchObject({ exp: now / 1000 + 300, tid: 'ev-personal', sub: 'hx' });
    expect(claims.nonce).toMatch(/^[0-9a-f]{32}$/);
    expect(mintStepUpToken({ secret: 'the-secret', tenant: 'ev-personal', now })).not.toBe(token);
    expect(verifyStepUpToken(token, 'the-secret', 'ev-personal', now)).toBe(true);
    expect(verifyStepUpToken(token, 'the-secret', 'ev-personal', now + 301_000)).toBe(false);
    expect(verifyStepUpToken(token, 'the-secret', 'other-tenant', now)).toBe(false);
    expect(verifyStepUpToken(token, 'wrong-secret', 'ev-personal', now)).toBe(false);
    expect(verifyStepUpToken(token.replace(/=+\./, '.'), 'the-secret', 'ev-personal', now)).toBe(false);
  });

  it('mints a fresh token before the current one expires, and reports each one minted', () => {
    let now = Date.parse('2026-03-01T10:00:00Z');
    const minted: string[] = [];
    const tokens = new StepUpTokens({ secret: 'the-secret', tenant: 't' }, (t) => minted.push(t), () => now);
    const first = tokens.current();
    now += 200_000;
    expect(tokens.current()).toBe(first);
    now += 50_000; // 250 s: under a minute left
    expect(tokens.current()).not.toBe(first);
    expect(minted).toHaveLength(2);
  });
});

describe('tenant ids', () => {
  it('accepts exactly ^[a-zA-Z0-9_-]{1,64}$', () => {
    for (const ok of ['ev-personal', 'desktop-demo', 'A_b-9', 'x'.repeat(64)]) expect(checkTenant(ok)).toBe(ok);
    for (const bad of ['', 'x'.repeat(65), 'a b', 'a/b', 'é', 'ev-personal\n', '../x']) {
      expect(() => checkTenant(bad)).toThrow(UsageError);
      expect(TENANT_PATTERN.test(bad)).toBe(false);
    }
  });
  it('refuses to mint for a malformed tenant', () => {
    expect(() => mintStepUpToken({ secret: 's', tenant: 'a b' })).toThrow(UsageError);
  });
});
