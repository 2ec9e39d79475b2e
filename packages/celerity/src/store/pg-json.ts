import { storableJson } from './storable.ts';

/**
 * A batch of rows as one JSON text for PostgreSQL's `json_to_recordset` (sent inline, see batch-upsert.ts).
 *
 * PostgreSQL refuses a NUL (`\u0000`) or a lone UTF-16 surrogate in JSON
 * text, so one such character in one value (an error message quoting binary
 * data, a tenant sent as `"\ud800"`) would fail the whole batch, and a
 * recorder would retry it for ever. Both become U+FFFD (see storable.ts).
 * The check is one scan of the JSON, almost always negative; only then are
 * values rewritten.
 */
export function pgJson(rows: readonly object[]): string {
  return storableJson(rows);
}
