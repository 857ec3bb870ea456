import { writeFileSync } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { UsageError, asUserError } from '../../errors.js';
import { HttpClient } from '../../http/client.js';
import { rateLimitNotice } from '../../http/rateLimit.js';
import { Redactor } from '../../http/redact.js';
import { BulkAccount } from '../../bulk/account.js';
import { SmartAuth, bearerAuth, loadSigningKey, noAuth, type Auth } from '../../bulk/auth.js';
import { EventLog } from '../../bulk/eventLog.js';
import { FileFetcher } from '../../bulk/fileRequest.js';
import type { ExportLevel, ExportParameters } from '../../bulk/kickoff.js';
import { runDownload, runExport, type BulkSession } from '../../bulk/run.js';
import { DEFAULT_POLL, cancelExport, checkStatus, pollStatus } from '../../bulk/status.js';

interface ConnectionArgs {
  'base-url'?: string;
  bearer?: string;
  'client-id'?: string;
  'private-key'?: string;
  kid?: string;
  scope: string;
  'token-url'?: string;
  retries: number;
  'retry-base-ms': number;
}

interface DownloadArgs extends ConnectionArgs {
  dir?: string;
  concurrency: number;
  'allow-errors': boolean;
  'include-deleted': boolean;
  'poll-interval': number;
  'time-limit': number;
  report?: string;
  log?: string;
  progress?: boolean;
  verbose: boolean;
}

interface ExportArgs extends DownloadArgs {
  system: boolean;
  patient: boolean;
  group?: string;
  type: string[];
  since?: string;
  'type-filter': string[];
  elements: string[];
  'patient-ref': string[];
  'output-format'?: string;
  param: string[];
  post: boolean;
}

function withConnection<T>(yargs: Argv<T>): Argv<T & ConnectionArgs> {
  return yargs
    .option('base-url', { describe: 'FHIR base URL of the server (for SMART discovery and the kick-off)', type: 'string', requiresArg: true })
    .option('bearer', { describe: 'Send this access token (default: $HX_BEARER_TOKEN; an open server needs none)', type: 'string', requiresArg: true })
    .option('client-id', { describe: 'SMART Backend Services client id (with --private-key)', type: 'string', requiresArg: true })
    .option('private-key', { describe: 'Private key FILE: JWK, JWKS (RS384/ES384) or PEM, to sign the client assertion', type: 'string', requiresArg: true })
    .option('kid', { describe: 'Key id for the assertion (default: the JWK kid, or the PEM key thumbprint)', type: 'string', requiresArg: true })
    .option('scope', { describe: 'Scopes to ask for (SMART v2: system/*.rs)', type: 'string', default: 'system/*.read' })
    .option('token-url', { describe: 'Token endpoint (default: from {base}/.well-known/smart-configuration)', type: 'string', requiresArg: true })
    .option('retries', { describe: 'Retries per request on 429, 5xx and network failures', type: 'number', default: 6 })
    .option('retry-base-ms', { describe: 'First retry backoff (doubles each time)', type: 'number', default: 500, hidden: true })
    .group(['base-url', 'bearer', 'client-id', 'private-key', 'kid', 'scope', 'token-url'], 'Server and authorization:') as unknown as Argv<T & ConnectionArgs>;
}

function withDownload<T>(yargs: Argv<T>): Argv<T & DownloadArgs> {
  return withConnection(yargs)
    .option('dir', { alias: 'd', describe: 'Save one file per manifest entry, manifest.json and the resume state in DIR (default: NDJSON on stdout)', type: 'string', requiresArg: true })
    .option('concurrency', { alias: 'c', describe: 'Files downloaded at once', type: 'number', default: 4 })
    .option('allow-errors', { describe: 'Exit 0 even when the manifest lists error files', type: 'boolean', default: false })
    .option('include-deleted', { describe: 'On stdout, follow the output with the deleted[] files (DELETE transaction Bundles)', type: 'boolean', default: false })
    .option('poll-interval', { describe: 'Seconds between status checks when the server gives no Retry-After (doubles, up to 60)', type: 'number', default: 1 })
    .option('time-limit', { describe: 'Give up waiting for the export after this many seconds (0: never)', type: 'number', default: 0 })
    .option('report', { describe: 'Write the account of the run to FILE as JSON', type: 'string', requiresArg: true })
    .option('log', { describe: 'Append events to FILE as NDJSON, in the format of the SMART bulk-data-client log', type: 'string', requiresArg: true })
    .option('progress', { describe: 'Print download progress every 5 s on stderr (default: when stderr is a terminal)', type: 'boolean' })
    .option('verbose', { alias: 'v', describe: 'Print every retry', type: 'boolean', default: false }) as unknown as Argv<T & DownloadArgs>;
}

const exportCommand: CommandModule<object, ExportArgs> = {
  command: 'export',
  describe: 'Start a Bulk Data $export, wait for it, download its files',
  builder: (yargs) =>
    withDownload(yargs)
      .option('system', { describe: 'System-level export, [base]/$export (the default)', type: 'boolean', default: false })
      .option('patient', { describe: 'All patients, [base]/Patient/$export', type: 'boolean', default: false })
      .option('group', { describe: 'The patients of a Group, [base]/Group/ID/$export', type: 'string', requiresArg: true })
      .option('type', { describe: '_type: resource types to export (repeat or comma-separate)', type: 'string', array: true, default: [] as string[] })
      .option('since', { describe: '_since: only resources changed after this instant (use the last transactionTime)', type: 'string', requiresArg: true })
      .option('type-filter', { describe: '_typeFilter: a search query such as "Observation?code=72166-2" (repeatable)', type: 'string', array: true, default: [] as string[] })
      .option('elements', { describe: '_elements: elements to keep (repeat or comma-separate)', type: 'string', array: true, default: [] as string[] })
      .option('patient-ref', { describe: 'patient: limit to these patients ("Patient/123"; repeatable; best with --post)', type: 'string', array: true, default: [] as string[] })
      .option('output-format', { describe: '_outputFormat (default: the server\'s, application/fhir+ndjson)', type: 'string', requiresArg: true })
      .option('param', { describe: 'Any other kick-off parameter as NAME=VALUE (organizeOutputBy=Patient …)', type: 'string', array: true, default: [] as string[] })
      .option('post', { describe: 'Kick off with POST and a Parameters resource instead of GET with a query', type: 'boolean', default: false })
      .group(['system', 'patient', 'group', 'type', 'since', 'type-filter', 'elements', 'patient-ref', 'output-format', 'param', 'post'], 'Kick-off:')
      .example('hx bulk export --base-url https://bulk.example/fhir --type Patient,Observation | hx deid > deid.ndjson', 'export, download and de-identify in one pipe')
      .example('hx bulk export --base-url $FHIR --group g1 --client-id app --private-key key.jwks --dir export/', 'SMART Backend Services; one file per output entry; rerun to resume')
      .example('hx bulk export --base-url $FHIR --since 2026-11-01T00:00:00Z --dir delta/', 'changes since the transactionTime of an earlier export'),
  handler: async (argv) => {
    const levels = [argv.system, argv.patient, argv.group !== undefined].filter(Boolean).length;
    if (levels > 1) throw new UsageError('choose one of --system, --patient, --group');
    if (!argv['base-url']) throw new UsageError('--base-url is required');
    const level: ExportLevel = argv.group !== undefined ? { kind: 'group', id: argv.group } : argv.patient ? { kind: 'patient' } : { kind: 'system' };
    const params: ExportParameters = {
      _outputFormat: argv['output-format'],
      _since: argv.since,
      _type: splitList(argv.type),
      _elements: splitList(argv.elements),
      _typeFilter: argv['type-filter'],
      patient: argv['patient-ref'],
      other: argv.param.map(nameValue),
    };
    await withSession(argv, argv['base-url'], (session) => runExport({ baseUrl: argv['base-url']!, level, params, post: argv.post }, session));
  },
};

const downloadCommand: CommandModule<object, DownloadArgs & { source?: string }> = {
  command: 'download [source]',
  describe: 'Download the files of an export started earlier: a status URL, a manifest.json, or a --dir to resume',
  builder: (yargs) =>
    withDownload(yargs)
      .positional('source', { describe: 'Status URL or manifest file (default: what --dir holds)', type: 'string' })
      .example('hx bulk download https://bulk.example/fhir/status/42 --dir export/', 'wait for an export and save its files')
      .example('hx bulk download --dir export/', 'resume an interrupted download (complete files are kept)')
      .example('hx bulk download export/manifest.json | hx count', 'stream the files of a saved manifest'),
  handler: async (argv) => {
    const origin = argv['base-url'] ?? (argv.source && /^https?:/i.test(argv.source) ? argv.source : undefined);
    await withSession(argv, origin, (session) => runDownload(argv.source, session));
  },
};

const statusCommand: CommandModule<object, ConnectionArgs & { url: string; wait: boolean; 'poll-interval': number; 'time-limit': number }> = {
  command: 'status <url>',
  describe: 'Check an export once: the manifest on stdout when complete, else its progress on stderr (exit 75)',
  builder: (yargs) =>
    withConnection(yargs)
      .positional('url', { describe: 'The status URL (Content-Location of the kick-off)', type: 'string', demandOption: true })
      .option('wait', { describe: 'Poll until the export completes', type: 'boolean', default: false })
      .option('poll-interval', { describe: 'Seconds between checks without Retry-After (with --wait)', type: 'number', default: 1 })
      .option('time-limit', { describe: 'Give up after this many seconds (with --wait; 0: never)', type: 'number', default: 0 })
      .example('hx bulk status https://bulk.example/fhir/status/42 > manifest.json', 'save the manifest once the export is complete'),
  handler: async (argv) => {
    const { client, auth } = await connect(argv, argv['base-url'] ?? argv.url);
    const log = (m: string) => process.stderr.write(`hx: bulk: ${m}\n`);
    const policy = { ...DEFAULT_POLL, baseMs: argv['poll-interval'] * 1000, timeLimitMs: argv['time-limit'] * 1000 };
    try {
      const answer = argv.wait
        ? { done: true as const, ...(await pollStatus(client, auth, argv.url, policy, (p) => log(`in progress${p ? `: ${p}` : ''}`))) }
        : await checkStatus(client, auth, argv.url, policy);
      if (!answer.done) {
        log(`in progress${answer.progress ? `: ${answer.progress}` : ''}${answer.retryAfterMs !== undefined ? `; check again in ${Math.ceil(answer.retryAfterMs / 1000)} s` : ''}`);
        process.exitCode = 75;
        return;
      }
      process.stdout.write(JSON.stringify(answer.manifest, null, 2) + '\n');
    } finally {
      await client.close();
    }
  },
};

const cancelCommand: CommandModule<object, ConnectionArgs & { url: string }> = {
  command: 'cancel <url>',
  describe: 'Cancel an export (DELETE on its status URL); the server may delete its files',
  builder: (yargs) =>
    withConnection(yargs)
      .positional('url', { describe: 'The status URL', type: 'string', demandOption: true })
      .example('hx bulk cancel https://bulk.example/fhir/status/42', 'stop an export that is no longer wanted'),
  handler: async (argv) => {
    const { client, auth } = await connect(argv, argv['base-url'] ?? argv.url);
    try {
      const status = await cancelExport(client, auth, argv.url);
      process.stderr.write(`hx: bulk: export cancelled (HTTP ${status})\n`);
    } finally {
      await client.close();
    }
  },
};

export const bulkCommand: CommandModule<object, object> = {
  command: 'bulk <command>',
  describe: 'FHIR Bulk Data $export client: export, status, download (parallel, resumable), cancel',
  builder: (yargs) =>
    yargs
      .command(exportCommand as never)
      .command(statusCommand as never)
      .command(downloadCommand as never)
      .command(cancelCommand as never)
      .demandCommand(1, 'Name a bulk command: export, status, download or cancel.'),
  handler: () => {},
};

async function connect(argv: ConnectionArgs, origin: string | undefined, log?: (m: string) => void): Promise<{ client: HttpClient; auth: Auth; smart?: SmartAuth }> {
  const redactor = new Redactor();
  // The environment keeps the token out of `ps` and shell history.
  const bearer = argv.bearer ?? (process.env.HX_BEARER_TOKEN || undefined);
  if (bearer && argv['client-id']) throw new UsageError('use either --bearer or --client-id with --private-key, not both');
  if (Boolean(argv['client-id']) !== Boolean(argv['private-key'])) throw new UsageError('--client-id and --private-key go together');
  let auth: Auth = noAuth;
  let smart: SmartAuth | undefined;
  const client = new HttpClient({
    trustedOrigin: origin,
    credentials: () => auth.headers(),
    redactor,
    retry: { retries: argv.retries, baseMs: argv['retry-base-ms'] },
    headers: { 'user-agent': 'hx-bulk' },
    onRetry: log ? (n) => log(`${n.reason}; retry ${n.attempt} in ${(n.delayMs / 1000).toFixed(1)} s`) : undefined,
    onRateLimit: log ? (ms) => log(rateLimitNotice(ms)) : undefined,
  });
  if (bearer) auth = bearerAuth(bearer, redactor);
  else if (argv['client-id']) {
    if (!argv['base-url'] && !argv['token-url']) throw new UsageError('SMART Backend Services needs --base-url (for discovery) or --token-url');
    const key = await loadSigningKey(argv['private-key']!, argv.kid);
    auth = smart = new SmartAuth({ client, baseUrl: argv['base-url'] ?? '', clientId: argv['client-id'], key, scope: argv.scope, tokenUrl: argv['token-url'] });
  }
  return { client, auth, smart };
}

/** Builds the session, runs `flow` with Ctrl-C wired to cancel, prints and writes the account. */
async function withSession(argv: DownloadArgs, origin: string | undefined, flow: (session: BulkSession) => Promise<BulkAccount>): Promise<void> {
  if (!Number.isInteger(argv.concurrency) || argv.concurrency < 1) throw new UsageError('--concurrency must be a whole number, at least 1');
  const log = (m: string) => process.stderr.write(`hx: bulk: ${m}\n`);
  const { client, auth, smart } = await connect(argv, origin, argv.verbose ? log : undefined);
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    log('interrupted; stopping (Ctrl-C again to quit at once)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  // `hx bulk export | head`: the reader has what it wanted; stop the downloads (as Ctrl-C does) and exit quietly.
  let stdoutClosed = false;
  const onStdoutError = (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    stdoutClosed = true;
    controller.abort();
  };
  if (!argv.dir) process.stdout.on('error', onStdoutError);
  const account = new BulkAccount();
  const session: BulkSession = {
    client,
    fetcher: new FileFetcher(client),
    auth,
    poll: { ...DEFAULT_POLL, baseMs: argv['poll-interval'] * 1000, timeLimitMs: argv['time-limit'] * 1000 },
    concurrency: argv.concurrency,
    dir: argv.dir,
    allowErrors: argv['allow-errors'],
    includeDeleted: argv['include-deleted'],
    log,
    signal: controller.signal,
    account,
    events: argv.log ? new EventLog(argv.log, client.redactor) : undefined,
    progressMs: (argv.progress ?? Boolean(process.stderr.isTTY)) ? 5000 : 0,
  };
  let failure: Error | undefined;
  try {
    await flow(session);
  } catch (err) {
    failure = err as Error;
    if (!stdoutClosed) throw err;
  } finally {
    process.off('SIGINT', onSigint);
    process.stdout.off('error', onStdoutError);
    account.tokensIssued = smart?.tokensIssued ?? 0;
    account.requests = client.stats.requests;
    account.retries = client.stats.retries;
    if (!stdoutClosed && (account.filesDownloaded + account.filesResumed > 0 || !failure)) log(account.summary());
    if (argv.report) {
      const failed = failure ? { failed: asUserError(failure)?.message ?? 'internal error' } : {};
      writeFileSync(argv.report, JSON.stringify({ ...account.toJSON(), ...failed }, null, 2) + '\n');
    }
    await Promise.all([client.close(), session.fetcher.close(), session.events?.close()]);
  }
}

function splitList(values: string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
}

function nameValue(text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`--param ${text}: expected NAME=VALUE`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}
