import { storableJson } from './storable.ts';

/**
 * A batch of rows as one JSON text for PostgreSQL's `json_to_recordset` (sent inline, see batch-upsert.ts).
 *
 * Null values are left out: `json_to_recordset` fills a column whose key
 * is missing with NULL, exactly as it does for `null`, and a queued job's
 * row is half nulls (tenant, result, error, times...). Leaving their keys
 * out makes the text about half as long, which PostgreSQL then scans and
 * parses in about 60% of the time (docs/benchmarks.md, run 30); building
 * the smaller objects costs Node about what stringifying the nulls did.
 *
 * PostgreSQL refuses a NUL (`\u0000`) or a lone UTF-16 surrogate in JSON
 * text, so one such character in one value (an error message quoting binary
 * data, a tenant sent as `"\ud800"`) would fail the whole batch, and a
 * recorder would retry it for ever. Both become U+FFFD (see storable.ts).
 * The check is one scan of the JSON, almost always negative; only then are
 * values rewritten.
 */
export function pgJson(rows: readonly object[]): string {
  return storableJson(rows.map(withoutNulls));
}

function withoutNulls(row: object): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const key in row) {
    const value = (row as Record<string, unknown>)[key];
    if (value !== null) kept[key] = value;
  }
  return kept;
}
