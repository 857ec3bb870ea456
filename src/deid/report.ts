/**
 * What a de-identification run did, for the account and for `--explain`:
 * per element path and action, resources changed per rule, elements removed
 * per kind, extensions dropped per URL, records rejected per reason.
 *
 * Paths are FHIRPath-like without indexes (`Patient.name`,
 * `Bundle.entry.resource.ofType(Patient).address.line`), so their number is
 * bounded by the shapes in the data, not by its size; every map is capped
 * anyway (further keys are counted under `(other)`).
 */

const MAX_KEYS = 10_000;
const OTHER = '(other)';

/** The actions a profile takes on an element. */
export type Action =
  | 'removed' // gone, with nothing left in its place (narrative, meta.lastUpdated, geolocation)
  | 'masked' // gone, replaced by the data-absent-reason `masked` mark
  | 'to-year' // date cut to its year
  | 'shifted' // date moved by the patient's offset
  | 'zip3' // postal code cut to three digits + 00
  | 'zip-restricted' // postal code on the restricted list → 00000
  | 'age-capped' // age over 89 → >= 90
  | 'pseudonymised' // id or reference replaced by its keyed pseudonym
  | 'extension-dropped'
  | 'display-removed'
  | 'identifier-dropped'
  | 'identifier-inserted'
  | 'initials'
  | 'last4'
  | 'redacted-value'
  | 'labelled'; // meta.security labels added

export class DeidReport {
  readonly byPathAction = new Map<string, number>();
  readonly resourcesByRule = new Map<string, number>();
  readonly removedByKind = new Map<string, number>();
  readonly extensionsDropped = new Map<string, number>();
  readonly rejectedByReason = new Map<string, number>();
  resources = 0;
  changed = 0;
  /** Actions seen in the resource in progress (counted once per resource). */
  private readonly current = new Set<Action>();

  /**
   * @param tracksPaths count per element path too (for `--explain`); off,
   * the walkers skip building path strings, which is most of the cost of
   * keeping a report.
   */
  constructor(readonly tracksPaths = false) {}

  beginResource(): void {
    this.current.clear();
  }

  endResource(): void {
    this.resources++;
    if (this.current.size === 0) return;
    this.changed++;
    for (const action of this.current) bump(this.resourcesByRule, action);
  }

  /** One action at `path` (ignored unless tracksPaths); `kind` names what was removed, for removals. */
  record(path: string, action: Action, kind?: string): void {
    if (this.tracksPaths) bump(this.byPathAction, path + '\t' + action);
    this.current.add(action);
    if (kind !== undefined) bump(this.removedByKind, kind);
  }

  /**
   * A string at `path` kept on a judgement rather than by a rule (`--explain`
   * only: a row `path  kept:<why>  count`), so a reviewer sees the text a
   * profile let through: a concept text with no display to check it
   * against, a local code system's display, a one-word string under an
   * element name no rule knows.
   */
  kept(path: string, why: string): void {
    if (this.tracksPaths) bump(this.byPathAction, path + '\tkept:' + why);
  }

  extensionDropped(url: unknown): void {
    bump(this.extensionsDropped, typeof url === 'string' ? url : '(no url)');
  }

  rejected(reason: string): void {
    bump(this.rejectedByReason, reason);
  }

  /** `path  action  count` lines, sorted, for a privacy officer to review. */
  explain(): string {
    const rows = [...this.byPathAction].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    let text = 'path\taction\tcount\n';
    for (const [key, n] of rows) text += `${key}\t${n}\n`;
    return text;
  }

  toJSON(): Record<string, unknown> {
    return {
      resources: this.resources,
      changed: this.changed,
      resourcesByRule: sorted(this.resourcesByRule),
      removedByKind: sorted(this.removedByKind),
      extensionsDropped: sorted(this.extensionsDropped),
      rejectedByReason: sorted(this.rejectedByReason),
    };
  }
}

function bump(map: Map<string, number>, key: string): void {
  const n = map.get(key);
  if (n !== undefined) map.set(key, n + 1);
  else if (map.size < MAX_KEYS) map.set(key, 1);
  else map.set(OTHER, (map.get(OTHER) ?? 0) + 1);
}

function sorted(map: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
