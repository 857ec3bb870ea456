/**
 * The completion manifest of a Bulk Data export (IG 2.0.0, "Response -
 * Complete Status") and the local name each of its files gets.
 */
import { HxError } from '../errors.js';

export interface ManifestEntry {
  /** Resource type of the file; absent when the output is organised by patient (mixed types). */
  type?: string;
  url: string;
  /** Resources in the file as the server counts them; advisory only (the reference server miscounts). */
  count?: number;
  /** The next file of a type split across files; informative only (it may name a file that does not exist). */
  continuesInFile?: string;
}

export interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  outputOrganizedBy?: string;
  output: ManifestEntry[];
  error: ManifestEntry[];
  deleted?: ManifestEntry[];
  [extension: string]: unknown;
}

export type FileKind = 'output' | 'deleted' | 'error';

/** One file to fetch: where it comes from and the name it gets locally. */
export interface PlannedFile {
  kind: FileKind;
  /** Position in the manifest order (output, then deleted, then error); the stdout order. */
  index: number;
  name: string;
  entry: ManifestEntry;
}

/** Checks the shape a client relies on; anything else in the manifest is kept as is. */
export function parseManifest(value: unknown, what: string): Manifest {
  const m = value as Partial<Manifest> | undefined;
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw new HxError(`${what}: the manifest is not a JSON object`);
  if (typeof m.transactionTime !== 'string') throw new HxError(`${what}: the manifest has no transactionTime`);
  if (!Array.isArray(m.output)) throw new HxError(`${what}: the manifest has no output array`);
  const lists: [FileKind, unknown][] = [
    ['output', m.output],
    ['error', m.error ?? []],
    ['deleted', m.deleted ?? []],
  ];
  for (const [kind, list] of lists) {
    if (!Array.isArray(list)) throw new HxError(`${what}: manifest ${kind} is not an array`);
    list.forEach((entry: Partial<ManifestEntry>, i) => {
      if (typeof entry?.url !== 'string') throw new HxError(`${what}: manifest ${kind}[${i}] has no url`);
      if (entry.count !== undefined && typeof entry.count !== 'number') throw new HxError(`${what}: manifest ${kind}[${i}].count is not a number`);
    });
  }
  return { ...m, error: m.error ?? [], requiresAccessToken: m.requiresAccessToken === true } as Manifest;
}

/**
 * Local names: `Patient.000.ndjson`, `Patient.001.ndjson` … numbered per type
 * in manifest order; `deleted.Patient.000.ndjson` for `deleted[]` and
 * `error.OperationOutcome.000.ndjson` for `error[]`; `output.000.ndjson` for
 * output without a type (organised by patient). Server file names are not
 * used: they are not unique across types and may contain anything.
 */
export function planFiles(manifest: Manifest): PlannedFile[] {
  const seen = new Map<string, number>();
  const files: PlannedFile[] = [];
  const add = (kind: FileKind, entry: ManifestEntry) => {
    const type = safeName(entry.type ?? (kind === 'output' ? 'output' : kind === 'error' ? 'OperationOutcome' : 'Bundle'));
    const stem = kind === 'output' ? type : `${kind}.${type}`;
    const n = seen.get(stem) ?? 0;
    seen.set(stem, n + 1);
    files.push({ kind, index: files.length, name: `${stem}.${String(n).padStart(3, '0')}.ndjson`, entry });
  };
  for (const entry of manifest.output) add('output', entry);
  for (const entry of manifest.deleted ?? []) add('deleted', entry);
  for (const entry of manifest.error) add('error', entry);
  return files;
}

function safeName(type: string): string {
  return type.replace(/[^A-Za-z0-9_-]/g, '_') || 'output';
}
