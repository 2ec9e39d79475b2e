/**
 * Makes text storable in every store, at one place: the recorder's
 * serializers (pgJson for PostgreSQL, {@link storableRow} for SQLite) and
 * nothing else.
 *
 * Two kinds of JavaScript string cannot be stored as they are:
 * - U+0000: PostgreSQL text cannot hold it, and `json_to_recordset` refuses
 *   the `\u0000` escape outright; SQLite stores it, but its SQL functions
 *   (length, LIKE) stop at it.
 * - A lone UTF-16 surrogate (`"\ud800"` is valid JSON, so an API request can
 *   carry one in a tenant, and a handler's error message can quote one):
 *   PostgreSQL's JSON parser refuses the escape, and SQLite stores bytes
 *   that are not UTF-8 and reads them back as three U+FFFD.
 * Either one in one value would fail a whole batch, and the recorder would
 * retry it for ever. Both become U+FFFD, the same on both stores.
 *
 * JSON columns (input, result, progress, history) never need it: they hold
 * `JSON.stringify` output, which escapes both as plain ASCII text.
 */

/** U+FFFD, the Unicode replacement character. */
export const REPLACEMENT = '\uFFFD';

// Node 20 has String.prototype.isWellFormed / toWellFormed; TypeScript's
// ES2023 lib does not declare them yet.
type WellFormedString = string & { isWellFormed(): boolean; toWellFormed(): string };

/** Whether `s` can be stored as it is: no NUL, no lone surrogate. Two native scans. */
export function isStorable(s: string): boolean {
  return (s as WellFormedString).isWellFormed() && !s.includes('\0');
}

/** `s` with NULs and lone surrogates replaced by U+FFFD; `s` itself when it is storable. */
export function storableText(s: string): string {
  if (isStorable(s)) return s;
  return (s as WellFormedString).toWellFormed().replaceAll('\0', REPLACEMENT);
}

/**
 * In `JSON.stringify` output, a NUL or a lone surrogate of a value shows as
 * an escape (`\u0000`, `\ud800`); valid pairs stay raw characters. A hit may
 * also be a value's literal backslash followed by `u0000`: the repair then
 * finds nothing to change, which costs one more stringify, nothing else.
 */
const SUSPECT_ESCAPE = /\\u(?:0000|d[89a-f])/;

/**
 * `JSON.stringify(value)` with every string made storable. The common case
 * is one stringify and one scan for `\u` (absent from almost every batch);
 * only a batch that has a suspect escape is stringified again with repairs.
 */
export function storableJson(value: unknown): string {
  const json = JSON.stringify(value);
  if (!json.includes('\\u') || !SUSPECT_ESCAPE.test(json)) return json;
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'string' ? storableText(v) : v));
}

/**
 * A row whose raw text columns are storable (SQLite binds them as they are).
 * Returns `row` itself when nothing needed a change, which is almost always.
 */
export function storableRow<T extends object>(row: T, textColumns: readonly (keyof T)[]): T {
  let copy: T | undefined;
  for (const column of textColumns) {
    const value = row[column];
    if (typeof value === 'string' && !isStorable(value)) {
      copy ??= { ...row };
      copy[column] = storableText(value) as T[keyof T];
    }
  }
  return copy ?? row;
}
