/**
 * The export kick-off request (IG 2.0.0 "Bulk Data Kick-off Request"):
 * `GET [base]/$export`, `[base]/Patient/$export` or
 * `[base]/Group/[id]/$export` with the parameters in the query, or `POST`
 * with them as a `Parameters` resource. A 202 names the status URL in
 * `Content-Location`.
 */
import { HxError } from '../errors.js';
import type { HttpClient } from '../http/client.js';
import type { Auth } from './auth.js';

export type ExportLevel = { kind: 'system' } | { kind: 'patient' } | { kind: 'group'; id: string };

export interface ExportParameters {
  _outputFormat?: string;
  _since?: string;
  _until?: string;
  _type?: string[];
  _elements?: string[];
  _typeFilter?: string[];
  /** Patient references (`Patient/123`) to limit a patient or group export to. */
  patient?: string[];
  /** Any other parameter (organizeOutputBy, includeAssociatedData, vendor ones): name → values. */
  other?: [string, string][];
}

export interface KickoffRequest {
  baseUrl: string;
  level: ExportLevel;
  params: ExportParameters;
  /** Send the parameters as a Parameters resource with POST instead of a query. */
  post?: boolean;
}

export function exportUrl(baseUrl: string, level: ExportLevel): string {
  const base = baseUrl.replace(/\/+$/, '');
  if (level.kind === 'patient') return `${base}/Patient/$export`;
  if (level.kind === 'group') return `${base}/Group/${encodeURIComponent(level.id)}/$export`;
  return `${base}/$export`;
}

/** The parameters as (name, value) pairs, lists joined by commas where the IG says so. */
export function parameterPairs(params: ExportParameters): [string, string][] {
  const pairs: [string, string][] = [];
  if (params._outputFormat) pairs.push(['_outputFormat', params._outputFormat]);
  if (params._since) pairs.push(['_since', params._since]);
  if (params._until) pairs.push(['_until', params._until]);
  if (params._type?.length) pairs.push(['_type', params._type.join(',')]);
  if (params._elements?.length) pairs.push(['_elements', params._elements.join(',')]);
  for (const filter of params._typeFilter ?? []) pairs.push(['_typeFilter', filter]);
  for (const ref of params.patient ?? []) pairs.push(['patient', ref]);
  pairs.push(...(params.other ?? []));
  return pairs;
}

/** The POST body: each parameter typed as the IG's OperationDefinition says. */
export function parametersResource(params: ExportParameters): Record<string, unknown> {
  const parameter = parameterPairs(params).map(([name, value]) => {
    if (name === 'patient') return { name, valueReference: { reference: value } };
    if (name === '_since' || name === '_until') return { name, valueInstant: value };
    return { name, valueString: value };
  });
  return { resourceType: 'Parameters', parameter };
}

export const KICKOFF_HEADERS = { accept: 'application/fhir+json', prefer: 'respond-async' };

/** Sends the kick-off; resolves with the absolute status URL. */
export async function kickOff(client: HttpClient, auth: Auth, req: KickoffRequest, signal?: AbortSignal): Promise<string> {
  const url = new URL(exportUrl(req.baseUrl, req.level));
  let body: string | undefined;
  const headers: Record<string, string> = { ...KICKOFF_HEADERS };
  if (req.post) {
    body = JSON.stringify(parametersResource(req.params));
    headers['content-type'] = 'application/fhir+json';
  } else {
    for (const [name, value] of parameterPairs(req.params)) url.searchParams.append(name, value);
  }
  await auth.ready();
  const res = await client.fetch({ url, method: req.post ? 'POST' : 'GET', headers, body, what: 'export kick-off', signal });
  res.body.resume();
  const location = header(res.headers['content-location']);
  if (res.status !== 202 || !location) {
    throw new HxError(`export kick-off: expected 202 Accepted with a Content-Location, got ${res.status}${location ? '' : ' without Content-Location'}`);
  }
  return new URL(location, url).toString();
}

export function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
