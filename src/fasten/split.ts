/**
 * Bytes of one input → Batches of resources, for the two forms Fasten
 * delivers: an export file (`{"providers":[…]}`, streamed by
 * FastenExportScanner) or anything the spine reads (Fasten Connect NDJSON,
 * a FHIR Bundle), which is handed to `ndjsonSplit` unchanged.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { RecordRejected } from '../errors.js';
import { RecordBatcher } from '../io/recordBatcher.js';
import { BATCHES_IN_FLIGHT, type Batch } from '../types.js';
import { DEFAULT_MAX_LINE_BYTES, ndjsonSplit, parseRecord, type SplitOptions } from '../../transforms/ndjsonSplit.js';
import { FastenExportScanner, looksLikeFastenExport } from './exportScanner.js';

/** A resource filed under a map key other than its `resourceType`. */
export interface Misfiled {
  mapType: string;
  resourceType: string;
  source: string;
  line: number;
}

export interface FastenSplitOptions extends SplitOptions {
  /** Told of each misfiled resource of an export file; it is kept under its `resourceType`. */
  onMisfiled?: (misfiled: Misfiled) => void;
}

const SNIFF_BYTES = 1024;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export function fastenSplit(options: FastenSplitOptions): Transform {
  return new FastenSplit(options);
}

class FastenSplit extends Transform {
  private sniffParts: Buffer[] = [];
  private sniffBytes = 0;
  private scanner: FastenExportScanner | undefined;
  /** The spine's reader, for inputs that are not export files. */
  private inner: Transform | undefined;
  private decided = false;
  /** After the document: 'clean' while only white space follows, 'reported' once something else did. */
  private after: 'inside' | 'clean' | 'reported' = 'inside';
  private readonly records: RecordBatcher;

  constructor(private readonly options: FastenSplitOptions) {
    super({ readableObjectMode: true, readableHighWaterMark: BATCHES_IN_FLIGHT });
    this.records = new RecordBatcher(options, options.source);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (!this.decided) {
      this.sniffParts.push(chunk);
      this.sniffBytes += chunk.length;
      if (this.sniffBytes < SNIFF_BYTES) return callback();
      chunk = this.decide();
    }
    this.feed(chunk, callback);
  }

  override _flush(callback: TransformCallback): void {
    if (!this.decided) {
      const chunk = this.decide();
      return this.feed(chunk, (err) => (err ? callback(err) : this._flush(callback)));
    }
    if (this.inner) {
      const inner = this.inner;
      inner.once('end', () => callback());
      inner.end();
      return;
    }
    try {
      if (!this.scanner!.done) this.records.reject(this.scanner!.line, 'Fasten export ends before its closing bracket (truncated input?)', () => undefined);
      this.records.flush((batch) => this.push(batch));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  /** Chooses the reader from the first bytes; returns them as the first chunk. */
  private decide(): Buffer {
    this.decided = true;
    let head = Buffer.concat(this.sniffParts);
    this.sniffParts = [];
    if (looksLikeFastenExport(head.subarray(0, 3).equals(BOM) ? head.subarray(3) : head)) {
      if (head.subarray(0, 3).equals(BOM)) head = head.subarray(3);
      this.scanner = new FastenExportScanner(
        {
          onResource: (text, line, mapType) => this.resource(text, line, mapType),
          onBadResource: (reason, line) => this.records.reject(line, reason, () => undefined),
        },
        this.options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
      );
    } else {
      const inner = (this.inner = ndjsonSplit(this.options));
      // Each chunk yields at most one batch and the write callback waits for
      // it, so forwarding without checking push() keeps the bound.
      inner.on('data', (batch: Batch) => this.push(batch));
      inner.on('error', (err) => this.destroy(err));
    }
    return head;
  }

  private feed(chunk: Buffer, callback: TransformCallback): void {
    if (this.inner) {
      this.inner.write(chunk, (err) => callback(err ?? undefined));
      return;
    }
    try {
      this.scan(chunk);
      this.records.flush((batch) => this.push(batch));
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  private scan(chunk: Buffer): void {
    const scanner = this.scanner!;
    if (this.after !== 'inside') return this.checkTrailing(chunk, 0);
    const end = scanner.push(chunk, 0);
    if (end < 0) return;
    if (!scanner.sawProviders) this.records.reject(scanner.line, 'Fasten export: "providers" is not an array', () => undefined);
    this.after = 'clean';
    this.checkTrailing(chunk, end);
  }

  /** Only white space may follow the document; anything else is reported once. */
  private checkTrailing(chunk: Buffer, from: number): void {
    if (this.after === 'reported') return;
    for (let i = from; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
      this.after = 'reported';
      this.records.reject(this.scanner!.line, 'unexpected text after the Fasten export document', () => undefined);
      return;
    }
  }

  private resource(text: string, line: number, mapType: string): void {
    const parsed = parseRecord(text);
    if (parsed instanceof RecordRejected) return this.records.reject(line, `fhir.${mapType}: ${parsed.reason}`, () => text);
    if (parsed.resourceType !== mapType) {
      this.options.onMisfiled?.({ mapType, resourceType: parsed.resourceType, source: this.options.source, line });
    }
    this.records.add(parsed, line);
  }
}
