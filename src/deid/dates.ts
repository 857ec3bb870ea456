/**
 * FHIR date, dateTime and instant values: recognising them, cutting them to
 * the year, shifting them by whole days, and telling an age.
 */

/**
 * A FHIR date / dateTime / instant: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a
 * date with `Thh:mm[:ss[.fff]]` and a zone (the zone is accepted missing, and
 * seconds too, because real data has both; they are kept as they are).
 */
export const FHIR_DATE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$/;

export interface CalendarDate {
  year: number;
  month: number;
  day: number;
}

/** `YYYY-MM-DD` → its parts; throws on anything else (a CLI option, not data). */
export function parseCalendarDate(text: string): CalendarDate | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (!m) return undefined;
  const date = { year: Number(m[1]), month: Number(m[2]), day: Number(m[3]) };
  const check = new Date(Date.UTC(date.year, date.month - 1, date.day));
  return check.getUTCMonth() === date.month - 1 && check.getUTCDate() === date.day ? date : undefined;
}

/** Today (UTC) as `YYYY-MM-DD`. */
export function todayUtc(): string {
  return new Date().toISOString().slice(0, 10);
}

/** True when `value` starts like a date with at least month precision (`YYYY-MM…`). */
export function looksLikeDate(value: string): boolean {
  return value.length >= 7 && value.charCodeAt(4) === 45 /* - */ && isDigit(value.charCodeAt(0)) && isDigit(value.charCodeAt(3)) && FHIR_DATE.test(value);
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

const DAY_MS = 86_400_000;

/**
 * `value` moved by `days`, keeping its precision and everything after the
 * date (time of day, zone) as it was. A year or a year-month is moved by
 * moving its middle (1 July, the 15th), so a small shift mostly leaves it
 * alone, as it should for so coarse a value. Returns undefined when `value`
 * is not a FHIR date.
 */
export function shiftDate(value: string, days: number): string | undefined {
  const m = FHIR_DATE.exec(value);
  if (!m) return undefined;
  if (days === 0) return value;
  const year = Number(m[1]);
  const month = m[2] === undefined ? 7 : Number(m[2]);
  const day = m[3] === undefined ? (m[2] === undefined ? 2 : 15) : Number(m[3]);
  const start = new Date(0);
  start.setUTCFullYear(year, month - 1, day); // not Date.UTC: it reads years < 100 as 19xx
  const shifted = new Date(start.getTime() + days * DAY_MS);
  const y = String(shifted.getUTCFullYear()).padStart(4, '0');
  if (m[2] === undefined) return y;
  const mo = String(shifted.getUTCMonth() + 1).padStart(2, '0');
  if (m[3] === undefined) return `${y}-${mo}`;
  const d = String(shifted.getUTCDate()).padStart(2, '0');
  return `${y}-${mo}-${d}${m[4] ?? ''}`;
}

/**
 * The greatest age, in whole years at `asOf`, that a person born on
 * `birthDate` (any precision) may have: a partial date is read as the
 * earliest birthday it allows, so the 90+ rule errs on the side of removal.
 * Undefined when `birthDate` is not a FHIR date.
 */
export function maxAgeAt(birthDate: string, asOf: CalendarDate): number | undefined {
  const m = FHIR_DATE.exec(birthDate);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = m[2] === undefined ? 1 : Number(m[2]);
  const day = m[3] === undefined ? 1 : Number(m[3]);
  const beforeBirthday = asOf.month < month || (asOf.month === month && asOf.day < day);
  return asOf.year - year - (beforeBirthday ? 1 : 0);
}
