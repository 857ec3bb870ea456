/**
 * fetchPages: every page of one or more FHIR searches → Batches of resources.
 *
 * A search (a type, a `$everything`, any search URL) is a chain of pages:
 * `link[relation=next]` is followed until there is none, one page in flight
 * per chain; chains run with bounded concurrency but are emitted in the
 * order given, so the output is the same on every run (a chain that gets
 * ahead waits, its body paused in the socket, which stops undici's idle
 * timer).
 *
 * Each page is parsed as it arrives with the spine's DocumentScanner (one
 * `JSON.parse` per entry; never the whole page in memory) rather than
 * `ndjsonSplit`, because a page is always one document: its Bundle members
 * may come in any order (Flask sorts keys, so `"entry"` can open the
 * document) and a page cut short must be fetched again, not rejected.
 * The issue suggested stream-json; on a 26 MB page of 20,000 entries its
 * parser + pick + streamArray took 3.1-4.1 s against 0.31-0.43 s for the
 * scanner + one JSON.parse per entry (7-13x), so the scanner it is.
 *
 * Nothing is lost quietly:
 * - A page that fails midway (reset, stall, truncated body) is fetched again
 *   from its start; the entries already handled are skipped by position,
 *   which relies on the server sending the same page for the same URL (the
 *   (type, id) set below is the safety net when it does not).
 * - A server that gives no `next` link while `total` says more exist (the
 *   HealthClaw server) is paged by keyset on `_lastUpdated`, as the
 *   HealthClaw contract describes; when that cannot progress, or a chain
 *   ends short of `total` for any reason, the run fails naming the search
 *   and the counts (a warning with `allowPartial`).
 * - Resources repeated across pages are dropped by (type, id) with a compact
 *   hash set (`src/util/keySet.ts`, ~9.5 bytes per resource fetched).
 * - `search.mode: outcome` entries are warnings, never data.
 *
 * Batches carry `source` = `<search> page <n>` and `lines` = the 1-based
 * position of each entry in its page, so a message reads
 * `Observation page 3:17: …`.
 *
 * Memory: per chain, one entry being parsed plus at most `bufferBatches`
 * batches waiting for the output (a chain ahead of the output pauses its
 * socket); the (type, id) set grows by ~9.5 bytes per resource; keyset
 * paging keeps the ids seen at the current boundary instant (at most a
 * page's worth, since more than that is the no-progress failure).
 */
import { isUtf8 } from 'node:buffer';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import type { Account } from '../src/account.js';
import { HxError, RecordRejected } from '../src/errors.js';
import { bodyChunks } from '../src/http/bodyChunks.js';
import type { HttpClient } from '../src/http/client.js';
import { ACCEPT_GZIP, brokenBody, decodedBody } from '../src/http/contentEncoding.js';
import { RetryableError, sleep } from '../src/http/retry.js';
import { DocumentScanner } from '../src/io/documentScanner.js';
import type { StageContext } from '../src/stage.js';
import type { Batch, Resource } from '../src/types.js';
import { KeySet } from '../src/util/keySet.js';
import { DEFAULT_MAX_LINE_BYTES, outcomeText, parseRecord, unpackEntry, type EntrySink } from './ndjsonSplit.js';

/** The types `export_healthex.py` exports, in its order. */
export const EXPORT_TYPES = [
  'Patient',
  'Condition',
  'Observation',
  'AllergyIntolerance',
  'Immunization',
  'MedicationRequest',
  'Procedure',
  'DiagnosticReport',
  'CarePlan',
  'Coverage',
  'Encounter',
];

/** One chain of pages. */
export interface Search {
  /** Its name in messages and in the account: the type, `Person/x $everything`, or the URL. */
  label: string;
  /** First page. */
  url: string;
  /** A type search sorted by `-_lastUpdated`, which may be continued by keyset when the server gives no `next`. */
  keyset?: boolean;
}

/** `GET {base}/{Type}?_count=…&_sort=-_lastUpdated` for each type. */
export function typeSearches(base: string, types: string[], count: number): Search[] {
  return types.map((type) => {
    const url = new URL(`${trimBase(base)}/${type}`);
    url.searchParams.set('_count', String(count));
    url.searchParams.set('_sort', '-_lastUpdated');
    return { label: type, url: url.toString(), keyset: true };
  });
}

export interface EverythingOptions {
  /** `_type`: only these types. */
  types?: string[];
  /** `_since`: only resources updated since this instant. */
  since?: string;
  /** `_count`: pages of this size; absent, the server may stream one Bundle of everything. */
  count?: number;
}

/** `GET {base}/{Person|Patient}/{id}/$everything` with `_type`, `_since`, `_count` passed through. */
export function everythingSearch(base: string, ref: string, options: EverythingOptions = {}): Search {
  const url = new URL(`${trimBase(base)}/${ref}/$everything`);
  if (options.types?.length) url.searchParams.set('_type', options.types.join(','));
  if (options.since) url.searchParams.set('_since', options.since);
  if (options.count !== undefined) url.searchParams.set('_count', String(options.count));
  return { label: `${ref} $everything`, url: url.toString() };
}

export function trimBase(base: string): string {
  return base.replace(/\/+$/, '');
}

export interface FetchOptions {
  client: HttpClient;
  searches: Search[];
  /** Chains fetched at once; each has at most one page in flight. */
  concurrency?: number;
  /** A search that ends short of the server's `total` is a warning, not a failure. */
  allowPartial?: boolean;
  /** Follow a `next` link to another origin (without credentials) instead of failing. */
  allowCrossHost?: boolean;
  /** Largest entry accepted, in bytes. */
  maxEntryBytes?: number;
  /** Told the bytes received so far. */
  onBytes?: (bytes: number) => void;
  /** Batches buffered per chain that is ahead of the output. */
  bufferBatches?: number;
}

/** Per search, in the account under `stages.fetch.searches`. */
export interface SearchStats {
  /** Distinct resources received (rejected entries included, duplicates and outcomes not). */
  fetched: number;
  /** The server's `total` on the first page, when it gave one. */
  total?: number;
  pages: number;
  /** Pages requested by `_lastUpdated` keyset because there was no `next` link. */
  keysetPages: number;
  /** Resources received again and dropped (a server that shifted while paging). */
  duplicates: number;
  /** Entries skipped on a keyset page because they were seen at the boundary instant. */
  keysetOverlap: number;
  /** Entries skipped on a page fetched again because they were handled before the failure. */
  resentSkipped: number;
  /** Why the search ended short of `total` (only with allowPartial). */
  shortfall?: string;
}

export interface FetchStage extends Record<string, unknown> {
  requests: number;
  retries: number;
  /** Pauses for the server's announced rate limit, and their total length. */
  rateLimitWaits: number;
  rateLimitWaitSeconds: number;
  bytes: number;
  searches: Record<string, SearchStats>;
}

/** The run's `fetch` counters (`stages.fetch` in the report). */
export function fetchStage(account: Account): FetchStage {
  return account.stage<FetchStage>('fetch', () => ({ requests: 0, retries: 0, rateLimitWaits: 0, rateLimitWaitSeconds: 0, bytes: 0, searches: {} }));
}

/** A Readable of Batches: the resources of every page of every search, in search order. */
export function fetchPages(options: FetchOptions, ctx: StageContext): Readable {
  const fetcher = new Fetcher(options, ctx, false);
  return Readable.from(fetcher.run(), { objectMode: true, highWaterMark: 4 });
}

/**
 * The resources of `fetchPages` as NDJSON bytes (a Readable of Buffers), each
 * written as the server sent it: every entry is still parsed (to check it, and
 * to page, dedupe and count by it) but not serialised again, which was the half
 * of `hx fetch`'s work that changed nothing. It also keeps what a JSON round
 * trip would lose, such as a decimal's precision (`1.50`). A resource whose
 * bytes are not certain (see `JsonWalker`), span lines or are not valid UTF-8
 * is serialised from its parsed value instead. Each resource is counted as
 * written here.
 */
export function fetchNdjson(options: FetchOptions, ctx: StageContext): Readable {
  const fetcher = new Fetcher(options, ctx, true);
  return Readable.from(asNdjson(fetcher.run(), ctx.account), { objectMode: true, highWaterMark: 4 });
}

/**
 * A Batch with, in verbatim mode, the bytes each resource came in (undefined
 * where unknown). Bytes rather than `Batch.texts`: they are copied to the
 * output as they are, where a string would be decoded and encoded again.
 */
interface FetchedBatch extends Batch {
  raw?: (Buffer | undefined)[];
}

const NEWLINE = Buffer.from('\n');

async function* asNdjson(batches: AsyncGenerator<FetchedBatch>, account: Account): AsyncGenerator<Buffer> {
  for await (const { resources, raw } of batches) {
    const parts: Buffer[] = [];
    for (let i = 0; i < resources.length; i++) {
      const resource = resources[i]!;
      parts.push(raw?.[i] ?? Buffer.from(JSON.stringify(resource)), NEWLINE);
      account.countWritten(resource.resourceType);
    }
    yield Buffer.concat(parts);
  }
}

/** Where a keyset page starts: the last instant seen and the ids already had at it. */
interface Boundary {
  instant: string;
  ids: Set<string>;
}

/** What a page says besides its entries. */
interface PageEnd {
  total?: number;
  next?: string;
  /** Entries in the page (outcomes included). */
  entries: number;
  /** Resources new to the run in this page. */
  fresh: number;
  /** lastUpdated of the page's last resource, and the ids of the page's resources at that instant. */
  lastInstant?: string;
  idsAtLast: string[];
}

class Fetcher {
  private readonly stage: FetchStage;
  private readonly seen = new KeySet();
  private readonly abort = new AbortController();
  private readonly maxEntryBytes: number;

  constructor(
    private readonly options: FetchOptions,
    private readonly ctx: StageContext,
    /** Batches carry each resource's bytes (`FetchedBatch.raw`). */
    private readonly verbatim: boolean,
  ) {
    this.stage = fetchStage(ctx.account);
    this.maxEntryBytes = options.maxEntryBytes ?? DEFAULT_MAX_LINE_BYTES;
  }

  async *run(): AsyncGenerator<FetchedBatch> {
    try {
      yield* inOrder(
        this.options.searches.map((search) => () => this.search(search)),
        Math.max(1, this.options.concurrency ?? 4),
        this.options.bufferBatches ?? 8,
        () => this.abort.abort(new HxError('fetch stopped')),
      );
    } finally {
      this.stage.requests = this.options.client.stats.requests;
      this.stage.retries = this.options.client.stats.retries;
      this.stage.rateLimitWaits = this.options.client.rateLimit.stats.waits;
      this.stage.rateLimitWaitSeconds = Math.round(this.options.client.rateLimit.stats.waitedMs / 100) / 10;
    }
  }

  private async *search(search: Search): AsyncGenerator<FetchedBatch> {
    const stats: SearchStats = { fetched: 0, pages: 0, keysetPages: 0, duplicates: 0, keysetOverlap: 0, resentSkipped: 0 };
    this.stage.searches[search.label] = stats;
    let url = search.url;
    let boundary: Boundary | undefined;
    for (let pageNo = 1; ; pageNo++) {
      const source = `${search.label} page ${pageNo}`;
      const end: PageEnd = yield* this.page(url, source, stats, boundary);
      stats.pages++;
      if (pageNo === 1 && end.total !== undefined) stats.total = end.total;
      if (end.next) {
        url = this.follow(end.next, url, source);
        boundary = undefined;
        continue;
      }
      if (stats.total === undefined || stats.fetched >= stats.total) break;
      // Short of total and no next link: the HealthClaw case.
      const why = this.keysetStuck(search, end, boundary);
      if (why) {
        this.shortfall(search, stats, why);
        break;
      }
      const instant = end.lastInstant!;
      const ids = boundary?.instant === instant ? boundary.ids : new Set<string>();
      for (const id of end.idsAtLast) ids.add(id);
      boundary = { instant, ids };
      const next = new URL(search.url);
      next.searchParams.set('_lastUpdated', `le${instant}`);
      url = next.toString();
      stats.keysetPages++;
    }
    if (stats.total !== undefined && stats.fetched > stats.total) {
      this.ctx.account.warn(`${search.label}: fetched ${stats.fetched}, more than the server's total of ${stats.total} (data changed while paging?)`);
    }
  }

  /** Why keyset paging cannot continue after this page, or undefined when it can. */
  private keysetStuck(search: Search, end: PageEnd, boundary: Boundary | undefined): string | undefined {
    if (!search.keyset) return 'the server gave no next link';
    if (end.entries === 0) return 'the server gave an empty page and no next link';
    if (end.fresh === 0 && boundary) {
      return (
        `no next link, and keyset paging on _lastUpdated made no progress: ` +
        `at least ${boundary.ids.size} resources share lastUpdated ${boundary.instant}, as many as a page holds (${end.entries})`
      );
    }
    if (end.fresh === 0) return 'no next link, and the page held only resources already fetched';
    if (end.lastInstant === undefined) return 'no next link, and the last resource has no meta.lastUpdated to page by';
    return undefined;
  }

  private shortfall(search: Search, stats: SearchStats, why: string): void {
    const message = `${search.label}: fetched ${stats.fetched} of the server's total of ${stats.total}: ${why}`;
    if (!this.options.allowPartial) throw new HxError(`${message} (--allow-partial accepts this)`);
    stats.shortfall = why;
    this.ctx.account.warn(message);
  }

  /** The next page's URL, resolved; refused when it leaves the trusted origin without leave to. */
  private follow(next: string, current: string, source: string): string {
    const client = this.options.client;
    let url: URL;
    try {
      url = new URL(next, current);
    } catch {
      throw new HxError(`${source}: the next link is not a URL`);
    }
    if (url.toString() === current) throw new HxError(`${source}: the next link points to the same page (the server loops)`);
    if (client.isTrusted(current) && !client.isTrusted(url) && !this.options.allowCrossHost) {
      throw new HxError(
        `${source}: the next link points to another host (${url.origin}); credentials are sent only to ${new URL(current).origin}. ` +
          `--allow-cross-host follows it without credentials`,
      );
    }
    return url.toString();
  }

  /** One page, fetched again from its start when it fails midway, emitting each entry once. */
  private async *page(url: string, source: string, stats: SearchStats, boundary: Boundary | undefined): AsyncGenerator<FetchedBatch, PageEnd> {
    const { client } = this.options;
    const redact = client.redactor.text.bind(client.redactor);
    const reader = new PageReader(source, stats, boundary, this.seen, this.ctx, this.maxEntryBytes, redact, this.verbatim);
    for (let attempt = 1; ; attempt++) {
      reader.restart();
      let reading = false;
      try {
        const res = await client.attempt({ url, what: source, headers: { accept: 'application/fhir+json', ...ACCEPT_GZIP }, signal: this.abort.signal });
        const type = String(res.headers['content-type'] ?? 'application/json');
        if (!/json/i.test(type)) {
          res.body.destroy();
          throw new HxError(`${source}: expected FHIR JSON, got ${type.split(';')[0]}`);
        }
        reading = true;
        for await (const chunk of bodyChunks(decodedBody(res.body, res.headers, source))) {
          this.stage.bytes += chunk.length;
          this.options.onBytes?.(this.stage.bytes);
          const batch = reader.push(chunk);
          if (batch) yield batch;
        }
        return reader.end();
      } catch (thrown) {
        const err = reading ? brokenBody(thrown, source) : thrown;
        const delay = client.delayAfter(err, attempt, source);
        if (delay === undefined) throw client.finalError(err, attempt, source);
        await sleep(delay, this.abort.signal);
      }
    }
  }
}

/**
 * Reads one page's bytes: entries to resources (through the (type, id) set
 * and the keyset boundary), members to a PageEnd. Survives restarts: the
 * entries handled by an earlier attempt are skipped by position.
 */
class PageReader implements EntrySink {
  private scanner!: DocumentScanner;
  /** Position of the entry being read in this attempt (1-based). */
  private index = 0;
  /** Entries handled by earlier attempts, and so skipped. */
  private handled = 0;
  private received = 0;
  private batch: FetchedBatch;
  /** The bytes of the entry being handled's resource, when known (verbatim mode). */
  private resourceBytes: Buffer | undefined;
  private fresh = 0;
  private lastInstant: string | undefined;
  private readonly idsAtLast: string[] = [];

  constructor(
    private readonly source: string,
    private readonly stats: SearchStats,
    private readonly boundary: Boundary | undefined,
    private readonly seen: KeySet,
    private readonly ctx: StageContext,
    private readonly maxBytes: number,
    private readonly redact: (text: string) => string,
    private readonly verbatim: boolean,
  ) {
    this.batch = this.newBatch();
  }

  private newBatch(): FetchedBatch {
    return { source: this.source, lines: [], resources: [], ...(this.verbatim ? { raw: [] } : {}) };
  }

  /** Starts (again) from the first byte of the page. */
  restart(): void {
    this.handled = Math.max(this.handled, this.index);
    this.index = 0;
    this.received = 0;
    this.scanner = new DocumentScanner(
      {
        onElement: (text, _line, resource) => this.element(text, resource),
        onBadElement: (reason) => {
          if (++this.index <= this.handled) return;
          this.reject(`entry ${this.index}: ${reason}`, () => undefined);
        },
      },
      this.maxBytes,
      1,
      this.verbatim,
    );
  }

  /** Feeds a chunk; returns the resources it completed, if any. */
  push(chunk: Buffer): Batch | undefined {
    this.received += chunk.length;
    if (!this.scanner.done) this.scanner.push(chunk, 0);
    if (this.batch.resources.length === 0) return undefined;
    const batch = this.batch;
    this.batch = this.newBatch();
    return batch;
  }

  /** The body ended: the page's members, or a RetryableError when it was cut short. */
  end(): PageEnd {
    if (!this.scanner.done) {
      if (this.received > 0 && !this.scanner.started) throw new HxError(`${this.source}: the response is not a JSON document`);
      throw new RetryableError(`${this.source}: the page ends before its closing bracket (truncated)`);
    }
    let meta: string | undefined;
    try {
      meta = this.scanner.meta();
    } catch (err) {
      throw new HxError(`${this.source}: ${(err as Error).message}`);
    }
    const bundle = meta === undefined ? new RecordRejected('a JSON array, not a Bundle') : parseRecord(meta);
    if (bundle instanceof RecordRejected) throw new HxError(`${this.source}: the response is not a Bundle (${bundle.reason})`);
    if (bundle.resourceType === 'OperationOutcome') {
      throw new HxError(`${this.source}: the server answered with an OperationOutcome: ${this.redact(outcomeText(bundle))}`);
    }
    if (bundle.resourceType !== 'Bundle') throw new HxError(`${this.source}: the response is a ${bundle.resourceType}, not a Bundle`);
    return {
      total: typeof bundle.total === 'number' ? bundle.total : undefined,
      next: nextLink(bundle.link),
      entries: Math.max(this.index, this.handled),
      fresh: this.fresh,
      lastInstant: this.lastInstant,
      idsAtLast: this.idsAtLast,
    };
  }

  private element(text: string, resourceBytes: Buffer | undefined): void {
    const index = ++this.index;
    if (index <= this.handled) {
      this.stats.resentSkipped++;
      return;
    }
    let entry: unknown;
    try {
      entry = JSON.parse(text);
    } catch {
      this.reject(`entry ${index}: invalid JSON`, () => text);
      return;
    }
    this.resourceBytes = resourceBytes;
    unpackEntry(entry, index, this);
    this.resourceBytes = undefined;
  }

  resource(resource: Resource): void {
    const id = resource.id;
    const instant = (resource.meta as { lastUpdated?: unknown } | undefined)?.lastUpdated;
    if (typeof instant === 'string') {
      const boundary = this.boundary;
      if (boundary && instant === boundary.instant && typeof id === 'string' && boundary.ids.has(id)) {
        this.stats.keysetOverlap++;
        return;
      }
      if (instant !== this.lastInstant) {
        this.lastInstant = instant;
        this.idsAtLast.length = 0;
      }
      if (typeof id === 'string') this.idsAtLast.push(id);
    } else {
      this.lastInstant = undefined;
    }
    this.ctx.account.read++;
    if (typeof id === 'string' && !this.seen.addPair(resource.resourceType, id)) {
      this.stats.duplicates++;
      this.ctx.account.countDropped('duplicate (type, id) across pages');
      return;
    }
    this.fresh++;
    this.stats.fetched++;
    this.batch.resources.push(resource);
    this.batch.lines.push(this.index);
    const bytes = this.resourceBytes;
    this.batch.raw?.push(bytes && isUtf8(bytes) ? bytes : undefined);
  }

  reject(reason: string, text: () => string | undefined): void {
    this.ctx.account.read++;
    this.stats.fetched++;
    this.fresh++;
    this.ctx.rejects.reject({ source: this.source, line: this.index }, reason, text);
  }

  outcome(message: string): void {
    this.ctx.account.warn(`${this.source}: ${this.redact(message)}`);
  }

  empty(): void {
    this.ctx.account.entriesWithoutResource++;
  }
}

function nextLink(link: unknown): string | undefined {
  if (!Array.isArray(link)) return undefined;
  const next = link.find((l: { relation?: unknown; url?: unknown }) => l?.relation === 'next' && typeof l.url === 'string');
  return next?.url as string | undefined;
}

/**
 * The batches of `sources`, all of the first, then all of the second, …,
 * while up to `concurrency` of them are pulled at once, each into a buffer
 * of `cap` batches. The first failure anywhere ends the whole. Pumps not
 * yet started when it ends start and return at once.
 */
async function* inOrder<T>(
  sources: (() => AsyncGenerator<T>)[],
  concurrency: number,
  cap: number,
  /** Cancels the sources' I/O when the whole ends early (a failure, or the reader went away). */
  cancel: () => void,
): AsyncGenerator<T> {
  interface Lane {
    items: T[];
    ended: boolean;
    room: () => void;
  }
  const lanes: Lane[] = sources.map(() => ({ items: [], ended: false, room: () => {} }));
  let failure: { error: unknown } | undefined;
  let stopped = false;
  let wake = () => {};
  const limit = pLimit(concurrency);
  const pumps = sources.map((source, i) =>
    limit(async () => {
      const lane = lanes[i]!;
      if (stopped || failure) return;
      try {
        for await (const batch of source()) {
          lane.items.push(batch);
          wake();
          while (lane.items.length >= cap && !stopped && !failure) await new Promise<void>((resolve) => (lane.room = resolve));
          if (stopped || failure) return;
        }
        lane.ended = true;
      } catch (error) {
        failure ??= { error };
        for (const other of lanes) other.room();
      }
      wake();
    }),
  );
  try {
    for (const lane of lanes) {
      for (;;) {
        if (failure) throw failure.error;
        const batch = lane.items.shift();
        if (batch) {
          lane.room();
          yield batch;
        } else if (lane.ended) break;
        else await new Promise<void>((resolve) => (wake = resolve));
      }
    }
  } finally {
    stopped = true;
    cancel();
    for (const lane of lanes) lane.room();
    await Promise.allSettled(pumps);
  }
}
