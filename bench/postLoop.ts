/**
 * The ingest server's own capacity, for `hx ingest`'s row of the network
 * benchmark: one plain request loop that posts the Bundle files of a folder
 * (as `hx bundle --dir` cut them) one after another, each with a fresh
 * step-up token, and checks every answer. No parsing, retries or
 * concurrency of its own: the server is the only cost worth timing.
 *
 *   node dist/bench/postLoop.js BASE TENANT SECRET DIR
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { mintStepUpToken } from '../src/healthclaw/stepUp.js';

const [base, tenant, secret, dir] = process.argv.slice(2) as [string, string, string, string];
let resources = 0;
for (const name of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const res = await request(`${base}/Bundle/$ingest-context`, {
    method: 'POST',
    headers: {
      'content-type': 'application/fhir+json',
      'x-tenant-id': tenant,
      'x-step-up-token': mintStepUpToken({ secret, tenant }),
      'x-human-confirmed': 'true',
    },
    body: readFileSync(join(dir, name)),
  });
  const answer = (await res.body.json()) as { resource_count?: number };
  if (res.statusCode !== 201) throw new Error(`${name}: HTTP ${res.statusCode}`);
  resources += answer.resource_count ?? 0;
}
process.stdout.write(`${resources}\n`);
