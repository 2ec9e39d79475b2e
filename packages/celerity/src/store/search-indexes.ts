import { createHash } from 'node:crypto';
import { type Kysely, type RawBuilder, sql } from 'kysely';
import type { Database, Dialect } from './db.ts';

/**
 * Indexes on JSON paths of the jobs' input or result, named by
 * `CELERITY_SEARCH_PATHS` (`input.ticket_id,result.invoice.id`): a `where`
 * search on such a path is served by its index instead of reading the
 * history row by row (docs/search.md, "Indexed JSON paths").
 *
 * They are not migrations: which paths deserve an index is the user's
 * choice, and can change without a release. Each process that opens the
 * store creates the missing ones; none is ever dropped by Celerity (a path
 * left out of the setting keeps its index until an operator drops it).
 */

/** One indexed path: a column and its object keys from the root. */
export interface SearchPath {
  column: 'input' | 'result';
  path: string[];
}

/** The rule of a search path, in words (config errors and docs share it). */
export const SEARCH_PATH_RULE = 'must be input.<key>[.<key>...] or result.<key>[.<key>...], keys of letters, digits and "_" (not starting with a digit), at most 16 keys';

const SEGMENT = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Most paths one store indexes: each index costs every write of a job row. */
export const MAX_SEARCH_PATHS = 16;

/** Parses `input.ticket_id`; null when it breaks {@link SEARCH_PATH_RULE}. */
export function parseSearchPath(text: string): SearchPath | null {
  const [column, ...path] = text.split('.');
  if (column !== 'input' && column !== 'result') return null;
  if (path.length === 0 || path.length > 16 || !path.every((s) => SEGMENT.test(s))) return null;
  return { column, path };
}

/** `input.ticket_id`: how a path is named in the setting, and looked up. */
export function searchPathKey({ column, path }: SearchPath): string {
  return `${column}.${path.join('.')}`;
}

/**
 * The index's name: a digest of the path, since paths can outgrow
 * PostgreSQL's 63-character names. `jobs_search_input_<12 hex>`.
 */
export function searchIndexName(p: SearchPath): string {
  return `jobs_search_${p.column}_${createHash('sha256').update(searchPathKey(p)).digest('hex').slice(0, 12)}`;
}

/**
 * The indexed expression, written the same way in the index and in the
 * search (a planner matches an expression index only on the same
 * expression with the same constants; the path is a literal, never a
 * parameter). Keys are identifiers (checked by {@link parseSearchPath}), so
 * they are safe inside the literal.
 *
 * SQLite: `json_extract`, the value as SQL (text, number, 1/0 for booleans,
 * NULL for null and for a missing key). PostgreSQL: the value's JSON text,
 * as the unindexed search compares it (`#>` on the column read as `json`).
 */
export function jsonIndexExpression(dialect: Dialect, { column, path }: SearchPath): RawBuilder<unknown> {
  const ref = sql.ref(column);
  if (dialect === 'sqlite') return sql`json_extract(${ref}, ${sql.lit(`$.${path.join('.')}`)})`;
  return sql`((${ref}::json #> ${sql.lit(`{${path.join(',')}}`)}::text[])::text)`;
}

/** What {@link ensureSearchIndexes} did with one path. */
export interface SearchIndexOutcome {
  key: string;
  index: string;
  /** `ready`: usable; `created`: built now, usable; `failed`: not usable (see `error`). */
  state: 'ready' | 'created' | 'failed';
  error?: string;
}

/**
 * Creates the index of each path that has none, and tells which are ready.
 * Ordered by creation time too, so that a search's newest-first page is read
 * off the index in order.
 *
 * PostgreSQL builds them `concurrently`: writes to the history go on during
 * a build (minutes on a large history). A build another process has
 * started is waited for; an index left invalid by a build that died is
 * dropped and built again. A role that does not own the table cannot index
 * it: that path is `failed`, and its searches read row by row as before.
 */
export async function ensureSearchIndexes(db: Kysely<Database>, dialect: Dialect, schema: string, paths: readonly SearchPath[]): Promise<SearchIndexOutcome[]> {
  const outcomes: SearchIndexOutcome[] = [];
  for (const p of paths) {
    const key = searchPathKey(p);
    const index = searchIndexName(p);
    try {
      const state = dialect === 'sqlite' ? await ensureSqlite(db, p, index) : await ensurePostgres(db, p, index, schema);
      outcomes.push({ key, index, state });
    } catch (err) {
      outcomes.push({ key, index, state: 'failed', error: (err as Error).message });
    }
  }
  return outcomes;
}

async function ensureSqlite(db: Kysely<Database>, p: SearchPath, index: string): Promise<'ready' | 'created'> {
  const { rows } = await sql<{ n: number }>`select count(*) as n from sqlite_master where type = 'index' and name = ${index}`.execute(db);
  if ((rows[0]?.n ?? 0) > 0) return 'ready';
  await sql`create index if not exists ${sql.id(index)} on jobs (${jsonIndexExpression('sqlite', p)}, created_at desc, id desc)`.execute(db);
  return 'created';
}

/** How long a process waits for another's build of the same index before it goes on without it. */
const BUILD_WAIT_MS = 10 * 60_000;

async function ensurePostgres(db: Kysely<Database>, p: SearchPath, index: string, schema: string): Promise<'ready' | 'created'> {
  const state = async () => {
    const { rows } = await sql<{ valid: boolean; building: boolean }>`
      select i.indisvalid as valid,
             exists (select 1 from pg_stat_progress_create_index s where s.index_relid = c.oid) as building
      from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_index i on i.indexrelid = c.oid
      where c.relname = ${index} and n.nspname = ${schema}`.execute(db);
    return rows[0];
  };
  const deadline = Date.now() + BUILD_WAIT_MS;
  for (;;) {
    const found = await state();
    if (found?.valid) return 'ready';
    if (found?.building && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    if (found) {
      // Invalid and no build under way: a build that died (or one that
      // outlasted the wait, which then fails and is retried on next start).
      await sql`drop index concurrently if exists ${sql.id(schema, index)}`.execute(db);
    }
    // Concurrently: outside any transaction, and writes go on meanwhile.
    await sql`create index concurrently if not exists ${sql.id(index)} on ${sql.id(schema, 'jobs')} (${jsonIndexExpression('postgres', p)}, created_at desc, id desc)`.execute(db);
    const built = await state();
    // Another process registered the same index first: wait for its build.
    if (built?.valid) return 'created';
    if (!built?.building) throw new Error(`index ${index} is not valid after its build`);
  }
}
