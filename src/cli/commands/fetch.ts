import { PassThrough } from 'node:stream';
import type { CommandModule } from 'yargs';
import { UsageError } from '../../errors.js';
import { checkTenant, StepUpTokens } from '../../healthclaw/stepUp.js';
import { HttpClient, type RetryNotice } from '../../http/client.js';
import { rateLimitNotice } from '../../http/rateLimit.js';
import { Redactor } from '../../http/redact.js';
import {
  EXPORT_TYPES,
  everythingSearch,
  fetchNdjson,
  fetchStage,
  trimBase,
  typeSearches,
  type Search,
} from '../../../transforms/fetchPages.js';
import { runRecords, withOutputOptions, withRunOptions, type OutputArgs, type RunArgs } from '../common.js';
import { RESOURCE_TYPE_NAME } from '../../util/fhirSyntax.js';

export const DEFAULT_BASE_URL = 'http://localhost:5000/r6/fhir';
export const BEARER_ENV = 'HX_BEARER_TOKEN';
export const STEP_UP_ENV = 'STEP_UP_SECRET';

interface FetchArgs extends RunArgs, OutputArgs {
  url?: string;
  'base-url'?: string;
  types?: string[];
  everything?: string;
  type?: string[];
  since?: string;
  count?: number;
  'tenant-id'?: string;
  bearer?: string;
  'step-up-secret'?: string;
  'agent-id': string;
  'allow-cross-host': boolean;
  'allow-partial': boolean;
  concurrency: number;
  retries: number;
  'retry-base-ms': number;
  'retry-max-ms': number;
  'connect-timeout': number;
  'first-byte-timeout': number;
  'idle-timeout': number;
}

const EVERYTHING_REF = /^(Person|Patient)\/[A-Za-z0-9\-.]{1,64}$/;

/** What to do about a status that retrying cannot cure, for the servers hx meets (HealthEx, HealthClaw). */
const ADVICE: Record<number, string> = {
  400: 'the server refused the request as invalid (a malformed --since date, an unsupported parameter or tenant id?)',
  401:
    `the token is missing, invalid or expired: pass a fresh one with --bearer or ${BEARER_ENV} (HealthEx: a JWT), ` +
    `or --step-up-secret / ${STEP_UP_ENV} with --tenant-id for a HealthClaw tenant; nothing was taken as "no resources"`,
  403:
    'not allowed: for HealthEx, the patient has not consented to share their data with your organization, ' +
    'or has withdrawn consent; for HealthClaw, the token is not bound to this tenant',
  404: 'not found: check --base-url, the resource type and the patient id',
};

export const fetchCommand: CommandModule<object, FetchArgs> = {
  command: 'fetch [url]',
  describe: 'Fetch every page of FHIR searches (types, $everything, or a search URL) and write the resources as NDJSON',
  builder: (yargs) =>
    withOutputOptions(withRunOptions(yargs))
      .positional('url', { describe: 'A search URL to follow to its last page (instead of --types / --everything)', type: 'string' })
      .option('base-url', { describe: `FHIR base URL; credentials go to its host only [default: ${DEFAULT_BASE_URL}]`, type: 'string' })
      .option('types', { describe: `Types to search [default: the export's ${EXPORT_TYPES.length}, in its order]`, type: 'string', array: true })
      .option('everything', { describe: 'Person/ID or Patient/ID: fetch GET …/$everything', type: 'string', requiresArg: true })
      .option('type', { describe: 'With --everything: only these types (_type)', type: 'string', array: true })
      .option('since', { describe: 'With --everything: only resources updated since this instant (_since)', type: 'string' })
      .option('count', { describe: 'Page size (_count); type searches: 200; --everything: none, so the server may stream one Bundle', type: 'number' })
      .option('tenant-id', { describe: 'Send X-Tenant-ID (HealthClaw); checked against ^[a-zA-Z0-9_-]{1,64}$ before any request', type: 'string' })
      .option('bearer', { describe: `Bearer token (prefer the ${BEARER_ENV} environment variable: arguments show in ps)`, type: 'string' })
      .option('step-up-secret', { describe: `HealthClaw secret to mint read tokens with (prefer ${STEP_UP_ENV})`, type: 'string' })
      .option('agent-id', { describe: 'Agent id (sub) in minted step-up tokens', type: 'string', default: 'hx' })
      .option('allow-cross-host', { describe: 'Follow next links to another host, without credentials', type: 'boolean', default: false })
      .option('allow-partial', { describe: "Warn instead of failing when a search ends short of the server's total", type: 'boolean', default: false })
      .option('concurrency', { describe: 'Searches fetched at once (one page in flight each); output stays in search order', type: 'number', default: 4 })
      .option('retries', { describe: 'Retries of a request on 429, 5xx, resets and timeouts', type: 'number', default: 6 })
      .option('retry-base-ms', { describe: 'First backoff delay, doubled per retry (with jitter) unless Retry-After says', type: 'number', default: 500 })
      .option('retry-max-ms', { describe: 'Longest backoff delay', type: 'number', default: 30_000 })
      .option('connect-timeout', { describe: 'Seconds to connect', type: 'number', default: 30 })
      .option('first-byte-timeout', { describe: 'Seconds to wait for response headers', type: 'number', default: 300 })
      .option('idle-timeout', { describe: 'Seconds of silence in a body before the page is fetched again', type: 'number', default: 120 })
      .example(`${STEP_UP_ENV}=… hx fetch --tenant-id ev-personal -o tenant.ndjson -v`, 'every export type of a HealthClaw tenant, pages counted against total')
      .example(`${BEARER_ENV}=… hx fetch --base-url https://api.healthex.io/FHIR/R4 --everything Person/19cff418-7d80 --since 2026-02-27T12:00:00Z`, 'a HealthEx patient record, updated since a date')
      .example("hx fetch 'http://localhost:8080/fhir/Observation?code=72166-2&_count=500' | hx count", 'any search URL, every page'),
  handler: async (argv) => {
    const redactor = new Redactor();
    const searches = buildSearches(argv, redactor);
    const trusted = argv['base-url'] ?? (argv.url ? new URL(argv.url).origin : DEFAULT_BASE_URL);
    const client = new HttpClient({
      trustedOrigin: trusted,
      credentials: credentials(argv, redactor),
      headers: { 'user-agent': 'hx-fhir' },
      timeouts: {
        connectMs: seconds(argv['connect-timeout'], 'connect-timeout'),
        firstByteMs: seconds(argv['first-byte-timeout'], 'first-byte-timeout'),
        idleMs: seconds(argv['idle-timeout'], 'idle-timeout'),
      },
      retry: { retries: atLeast(argv.retries, 0, 'retries'), baseMs: atLeast(argv['retry-base-ms'], 0, 'retry-base-ms'), maxMs: argv['retry-max-ms'] },
      redactor,
      advice: ADVICE,
      onRetry: (notice) => process.stderr.write(`hx: ${retryLine(notice, argv.retries)}\n`),
      onRateLimit: (ms) => process.stderr.write(`hx: ${rateLimitNotice(ms)}\n`),
    });
    try {
      const account = await runRecords({
        input: argv,
        output: argv,
        // The resources come as NDJSON bytes, as the server sent them.
        serializer: () => new PassThrough(),
        source: (ctx, onBytes) =>
          fetchNdjson(
            {
              client,
              searches,
              concurrency: atLeast(argv.concurrency, 1, 'concurrency'),
              allowPartial: argv['allow-partial'],
              allowCrossHost: argv['allow-cross-host'],
              maxEntryBytes: argv['max-line-bytes'],
              onBytes,
            },
            ctx,
          ),
      });
      if (argv.verbose) process.stderr.write(searchTable(fetchStage(account)));
    } finally {
      await client.close();
    }
  },
};

function buildSearches(argv: FetchArgs, redactor: Redactor): Search[] {
  const sources = [argv.url !== undefined, argv.everything !== undefined, argv.types !== undefined].filter(Boolean).length;
  if (sources > 1) throw new UsageError('give one of: a search URL, --everything, --types');
  if ((argv.type || argv.since) && !argv.everything) throw new UsageError('--type and --since go with --everything');
  if (argv.count !== undefined && !(Number.isInteger(argv.count) && argv.count >= 1)) throw new UsageError('--count must be a whole number of at least 1');
  if (argv['tenant-id'] !== undefined) checkTenant(argv['tenant-id']);
  const base = trimBase(argv['base-url'] ?? DEFAULT_BASE_URL);
  checkUrl(base, '--base-url');
  if (argv.url !== undefined) {
    checkUrl(argv.url, 'the search URL');
    return [{ label: redactor.url(argv.url), url: argv.url }];
  }
  if (argv.everything !== undefined) {
    if (!EVERYTHING_REF.test(argv.everything)) throw new UsageError('--everything takes Person/ID or Patient/ID');
    const types = (argv.type ?? []).flatMap((t) => t.split(',')).filter(Boolean);
    for (const type of types) if (!RESOURCE_TYPE_NAME.test(type)) throw new UsageError(`--type: not a FHIR type name: ${type}`);
    if (argv.since !== undefined && Number.isNaN(Date.parse(argv.since))) throw new UsageError('--since takes an instant such as 2026-02-27T12:00:00Z');
    return [everythingSearch(base, argv.everything, { types, since: argv.since, count: argv.count })];
  }
  const types = (argv.types ?? EXPORT_TYPES).flatMap((t) => t.split(',')).filter(Boolean);
  for (const type of types) if (!RESOURCE_TYPE_NAME.test(type)) throw new UsageError(`--types: not a FHIR type name: ${type}`);
  if (new Set(types).size !== types.length) throw new UsageError('--types names a type twice');
  return typeSearches(base, types, argv.count ?? 200);
}

/** The headers that authenticate a read; tokens are registered with the redactor before any use. */
function credentials(argv: FetchArgs, redactor: Redactor): () => Record<string, string> {
  const tenant = argv['tenant-id'];
  const bearer = argv.bearer ?? process.env[BEARER_ENV] ?? undefined;
  const secret = argv['step-up-secret'] ?? process.env[STEP_UP_ENV] ?? undefined;
  redactor.add(bearer);
  redactor.add(secret);
  if (secret && !tenant) throw new UsageError('a step-up secret mints tokens for one tenant: give --tenant-id');
  const stepUp = secret && tenant ? new StepUpTokens({ secret, tenant, subject: argv['agent-id'] }, (token) => redactor.add(token)) : undefined;
  return () => {
    const headers: Record<string, string> = {};
    if (tenant) headers['x-tenant-id'] = tenant;
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    if (stepUp) headers['x-step-up-token'] = stepUp.current();
    return headers;
  };
}

function checkUrl(url: string, what: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`${what} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError(`${what} must be http or https`);
}

function seconds(value: number, name: string): number {
  if (!(value > 0)) throw new UsageError(`--${name} must be a number of seconds above 0`);
  return Math.round(value * 1000);
}

function atLeast(value: number, min: number, name: string): number {
  if (!(Number.isInteger(value) && value >= min)) throw new UsageError(`--${name} must be a whole number of at least ${min}`);
  return value;
}

function retryLine(notice: RetryNotice, retries: number): string {
  const wait = notice.delayMs >= 1000 ? `${(notice.delayMs / 1000).toFixed(1)} s` : `${notice.delayMs} ms`;
  const reason = notice.reason.startsWith(notice.what) ? notice.reason.slice(notice.what.length + 2) : notice.reason;
  return `${notice.what}: ${reason}; retry ${notice.attempt} of ${retries} in ${wait}`;
}

/** Per search: fetched of total, pages. */
function searchTable(stage: ReturnType<typeof fetchStage>): string {
  const rows = Object.entries(stage.searches);
  const width = Math.max(0, ...rows.map(([label]) => label.length));
  return rows
    .map(([label, s]) => {
      const total = s.total === undefined ? '(no total)' : `of ${s.total}`;
      const keyset = s.keysetPages ? `, ${s.keysetPages} by _lastUpdated keyset` : '';
      const dups = s.duplicates ? `, ${s.duplicates} duplicates dropped` : '';
      return `hx: ${label.padEnd(width)}  ${s.fetched} ${total}  (${s.pages} pages${keyset}${dups})${s.shortfall ? ' SHORT' : ''}\n`;
    })
    .join('');
}
