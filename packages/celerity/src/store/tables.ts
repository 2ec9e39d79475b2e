import type { Kysely, Migration } from 'kysely';
import { TaskDefinitionError } from '../errors.ts';
import type { Dialect } from './db.ts';
import type { SqliteDatabase } from './sqlite-driver.ts';

/**
 * An app's own tables, kept beside Celerity's history in the same database:
 * the store runs their migrations after its own, each set with its own
 * migration history, so an app's versions never mix with Celerity's.
 *
 * On PostgreSQL a set lives in its own schema: `schema`, or by default
 * `<store schema>_<name>` (`celerity_documents` beside `celerity`), so that
 * two stores in one database (staging and production, or parallel tests)
 * keep apart. On SQLite, where there are no schemas, the tables share the file.
 *
 * @example
 * const tables = defineTables({
 *   name: 'billing',
 *   migrations: (dialect) => ({ '0001_invoices': { up: (db) => db.schema.createTable('invoices')…execute() } }),
 * });
 * const app = createApp({ tasks, tables: [tables] });
 * const { db } = await app.tables(tables);
 */
export interface TableSet {
  /** Lower-case identifier; names the migration history (`<name>_migrations`). */
  readonly name: string;
  /** PostgreSQL schema of the set's tables. Default `<store schema>_<name>`. */
  readonly schema?: string | undefined;
  /** Migrations by name, applied in name order. Never edit a released one: add the next. */
  migrations(dialect: Dialect): Record<string, Migration>;
}

/** A connection to a table set: Kysely over its schema, and the raw SQLite connection on SQLite. */
export interface TableHandle {
  readonly db: Kysely<any>;
  readonly dialect: Dialect;
  /**
   * The SQLite connection behind `db` (undefined on PostgreSQL). Code that
   * writes several statements atomically must use its synchronous
   * `transaction()`: an async Kysely transaction stays open across awaits,
   * and the recorder's batches on the same connection would land inside it.
   */
  readonly sqlite: SqliteDatabase | undefined;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,40}$/;

/** Declares a set of an app's tables; see {@link TableSet}. */
export function defineTables(set: TableSet): TableSet {
  if (!IDENTIFIER.test(set.name)) throw new TaskDefinitionError(`Table set name "${set.name}" must be a lower-case SQL identifier`);
  if (set.name === 'celerity') throw new TaskDefinitionError('Table set name "celerity" is Celerity\'s own');
  if (set.schema !== undefined && !IDENTIFIER.test(set.schema)) throw new TaskDefinitionError(`Table set schema "${set.schema}" must be a lower-case SQL identifier`);
  return set;
}
