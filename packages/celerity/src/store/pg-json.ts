import { storableJson } from './storable.ts';
import { dollarQuoted } from './tenant-scope.ts';

/**
 * The recorder's batches reach PostgreSQL as one JSON text each, inline in
 * the statement, read by `json_to_recordset` (batch-upsert.ts). PostgreSQL
 * scans and parses that text for every row of every batch, so its length is
 * CPU on the database: a queued job's row, written with every column under
 * its name, was about 420 bytes, of which the keys and the nulls were most.
 * Here a value is keyed by one letter (its column's position), and a null is
 * left out: `json_to_recordset` fills a column whose key is missing with
 * NULL, as it does for `null`. The same row is about 180 bytes, and
 * PostgreSQL's CPU for a 2,000-row insert fell from 36-53 ms to 22-34
 * (docs/benchmarks.md, run 30); building the smaller objects costs Node
 * about what stringifying the longer ones did.
 *
 * PostgreSQL refuses a NUL (`\u0000`) or a lone UTF-16 surrogate in JSON
 * text, so one such character in one value (an error message quoting binary
 * data, a tenant sent as `"\ud800"`) would fail the whole batch, and a
 * recorder would retry it for ever. Both become U+FFFD (see storable.ts).
 * The check is one scan of the JSON, almost always negative; only then are
 * values rewritten.
 */

/**
 * Rows as one JSON text for PostgreSQL's `json_to_recordset`, every key and
 * null kept, made storable as above: the public helper an app's own batched
 * inserts use (the documents example's CSV import does).
 */
export function pgJson(rows: readonly object[]): string {
  return storableJson(rows);
}

/** A recordset's columns: each one's name (a property of the rows, and the name the recordset gives it) and PostgreSQL type. */
export type PgColumns<T> = readonly (readonly [name: keyof T & string, type: string])[];

/**
 * The columns of a recordset, with their keys in the JSON; built once per
 * statement kind. The statement names a column by its key ({@link refs}):
 * a subquery that renamed them back cost PostgreSQL more than the short keys
 * saved (docs/benchmarks.md, run 30).
 */
export class PgRecordset<T extends object> {
  private readonly names: (keyof T & string)[];
  private readonly keys: string[];
  private readonly definition: string;

  constructor(columns: PgColumns<T>) {
    if (columns.length > KEY_LETTERS.length) throw new Error(`a recordset of ${columns.length} columns: at most ${KEY_LETTERS.length}`);
    this.names = columns.map(([name]) => name);
    this.keys = columns.map((_, i) => KEY_LETTERS[i]!);
    this.definition = columns.map(([, type], i) => `${this.keys[i]} ${type}`).join(', ');
  }

  /** Each column as a statement names it in the recordset read as `alias` ({@link from}): `alias.<key>`. */
  refs(alias: string): Record<keyof T & string, string> {
    return Object.fromEntries(this.names.map((name, i) => [name, `${alias}.${this.keys[i]}`])) as Record<keyof T & string, string>;
  }

  /** The JSON text of `rows`: a one-letter key per non-null value, made storable. */
  json(rows: readonly T[]): string {
    const out: Record<string, unknown>[] = new Array(rows.length);
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r] as Record<string, unknown>;
      const kept: Record<string, unknown> = {};
      for (let i = 0; i < this.names.length; i++) {
        const value = row[this.names[i]!];
        if (value !== null && value !== undefined) kept[this.keys[i]!] = value;
      }
      out[r] = kept;
    }
    return storableJson(out);
  }

  /** `rows` as a table for a FROM clause, read as `alias`; the values inline, as a {@link dollarQuoted} literal. */
  from(rows: readonly T[], alias: string): string {
    return `json_to_recordset(${dollarQuoted(this.json(rows))}::json) AS ${alias}(${this.definition})`;
  }
}

const KEY_LETTERS = 'abcdefghijklmnopqrstuvwxyz'.split('');
