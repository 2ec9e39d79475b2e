/**
 * A batch of rows as one JSON parameter for PostgreSQL's `json_to_recordset`.
 *
 * PostgreSQL text cannot hold U+0000, and `json_to_recordset` refuses the
 * `\u0000` escape outright, so one NUL in one value (an error message quoting
 * binary data, a CSV field) would fail the whole batch, and a recorder would
 * retry it for ever. NULs become U+FFFD instead. The check is one scan of the
 * JSON, which is almost always negative; only then are values rewritten.
 */
export function pgJson(rows: readonly object[]): string {
  const json = JSON.stringify(rows);
  if (!json.includes('\\u0000')) return json;
  return JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'string' && value.includes('\0') ? value.replaceAll('\0', '\uFFFD') : value));
}
