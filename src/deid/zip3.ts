/**
 * HIPAA Safe Harbor ZIP codes (45 CFR 164.514(b)(2)(i)(B)): the first three
 * digits may be kept only when the geographic unit formed by all ZIP codes
 * with those digits holds more than 20,000 people; otherwise they become 000.
 *
 * The table below is the union of the three-digit prefixes at or under
 * 20,000 people in the 2000, 2010 and 2020 US censuses, so data
 * de-identified under any of them stays de-identified. It is versioned and
 * replaceable: `--zip3-table FILE` loads another (one prefix per line, `#`
 * comments), and the account names the table used.
 */
import { readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';

export interface Zip3Table {
  version: string;
  restricted: ReadonlySet<string>;
}

export const CENSUS_UNION_ZIP3: Zip3Table = {
  version: 'census-2000+2010+2020-union/1',
  restricted: new Set([
    '036', '059', '063', '102', '202', '203', '204', '205', '369', '556', '692', '753',
    '772', '790', '821', '823', '830', '831', '878', '879', '884', '890', '893',
  ]),
};

/** Reads a replacement table: three-digit prefixes, one a line, `#` starts a comment. */
export function loadZip3Table(path: string): Zip3Table {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--zip3-table: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const restricted = new Set<string>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    if (!/^\d{3}$/.test(line)) throw new UsageError(`--zip3-table ${path}:${i + 1}: not a three-digit ZIP prefix`);
    restricted.add(line);
  });
  return { version: `file:${path}`, restricted };
}

const US_ZIP = /^(\d{3})\d{2}(?:-?\d{4})?$/;

/**
 * The Safe Harbor form of a postal code: `DDD00` or `00000` for a US ZIP
 * (5 or 9 digits), `undefined` when the value is not a US ZIP (it must go).
 */
export function safeHarborZip(postalCode: string, table: Zip3Table): string | undefined {
  const m = US_ZIP.exec(postalCode.trim());
  if (!m) return undefined;
  return table.restricted.has(m[1]!) ? '00000' : m[1]! + '00';
}
