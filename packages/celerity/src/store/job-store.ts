import { Kysely, PostgresDialect, sql, type PostgresPool } from 'kysely';
import { ALL_TENANTS, type TenantScope } from '../auth/principal.ts';
import { attemptHistory, type AttemptRecord, type JobRecord, type JobStatus } from '../job-record.ts';
import { CelerityError, InvalidQueryValueError, StoreUnavailableError } from '../errors.ts';
import { postgresPool } from './pg-pool.ts';
import { createDb, type Database, type DbOptions, type Dialect, type JobsTable } from './db.ts';
import { coreMigrations, migrate } from './migrations.ts';
import { postgresBatchUpsert, postgresHappyUpdates, SqliteBatchUpsert, sqliteHappyUpdates, type HappyOutcome, type HappyUpdate } from './batch-upsert.ts';
import type { SqliteDatabase } from './sqlite-driver.ts';
import { setupError } from './setup-errors.ts';
import { withTenantScope } from './tenant-scope.ts';
import { type CountFilter, countJobs, DELETED, inScope, type SearchFilter, searchJobs } from './job-search.ts';
import { ensureSearchIndexes, type SearchIndexOutcome, type SearchPath } from './search-indexes.ts';

export { DELETED };
import type { TableHandle, TableSet } from './tables.ts';

/** The most retries of one job a read names (`retried_by`). */
export const MAX_LISTED_RETRIES = 50;

/** A row to write: a record plus the event position it reflects. */
export interface RecordedState {
  record: JobRecord;
  /** Zero-padded event stream id; a row only moves forward in this order. */
  eventSeq: string;
}

/** The filters of a list (see {@link SearchFilter}). */
export type ListFilter = SearchFilter;

export interface JobPage {
  jobs: JobRecord[];
  nextCursor: string | null;
  /** Set when the search ran out of time: `jobs` is what it found, `nextCursor` continues the scan (see `searchJobs`). */
  partial?: true;
}

/**
 * The durable job history in SQL. Only the recorder writes it (in batches);
 * the API reads it for lists and for jobs Redis has let go of.
 */
export class JobStore {
  readonly db: Kysely<Database>;
  readonly dialect: Dialect;

  /** PostgreSQL schema of Celerity's tables (unused on SQLite). */
  readonly schema: string;
  /**
   * The better-sqlite3 connection behind `db` on SQLite. Code that writes
   * several statements atomically must use its synchronous `transaction()`:
   * an async Kysely transaction stays open across awaits, and the recorder's
   * synchronous batches on this same connection would land inside it.
   */
  readonly sqlite: SqliteDatabase | undefined;
  /** The pool behind `db` on PostgreSQL: the recorder's writes go to it in one message each (batch-upsert.ts). */
  private readonly pgPool: PostgresPool | undefined;
  private readonly databaseUrl: string | undefined;
  private upsert: SqliteBatchUpsert | undefined;
  private happySqlite: ((updates: HappyUpdate[]) => HappyOutcome) | undefined;
  private readonly tableSets = new Map<TableSet, Promise<TableHandle>>();
  private readonly extraPools: Kysely<any>[] = [];
  /** The JSON paths whose search index is ready (see {@link ensureSearchIndexes}); searches on them use it. */
  readonly searchPaths = new Set<string>();

  /** Opens the connection (lazily on PostgreSQL); throws a one-line StoreSetupError when SQLite cannot open. */
  constructor(opts: DbOptions) {
    const handle = createDb(opts);
    this.db = handle.db;
    this.dialect = handle.dialect;
    this.schema = opts.schema ?? 'celerity';
    this.databaseUrl = opts.databaseUrl;
    this.sqlite = handle.sqlite;
    this.pgPool = handle.pgPool;
  }

  /** Prepared once the table exists (statements are compiled against it). */
  private get sqliteUpsert(): SqliteBatchUpsert | undefined {
    if (this.sqlite) this.upsert ??= new SqliteBatchUpsert(this.sqlite);
    return this.upsert;
  }

  /**
   * Creates Celerity's schema and brings its tables to the latest version.
   * Returns the migrations of a newer version the store has run, which this
   * version does not know and works without (see `migrate`).
   */
  async migrate(): Promise<string[]> {
    return migrate(this.db, coreMigrations(this.dialect), {
      name: 'celerity',
      schema: this.dialect === 'postgres' ? this.schema : undefined,
      clash:
        this.dialect === 'postgres'
          ? { setting: 'CELERITY_DB_SCHEMA', fix: 'choose another schema with CELERITY_DB_SCHEMA' }
          : { setting: 'CELERITY_SQLITE_PATH', fix: 'point CELERITY_SQLITE_PATH at a file of its own' },
    });
  }

  /**
   * Creates the indexes of `CELERITY_SEARCH_PATHS` that are missing, and
   * lets searches use those that are ready. Returns what happened to each
   * (a failed one is reported, not thrown: its searches read row by row).
   */
  async ensureSearchIndexes(paths: readonly SearchPath[]): Promise<SearchIndexOutcome[]> {
    const outcomes = await ensureSearchIndexes(this.db, this.dialect, this.schema, paths);
    for (const o of outcomes) if (o.state !== 'failed') this.searchPaths.add(o.key);
    return outcomes;
  }

  /**
   * A handle on an app's table set (see `defineTables`), its migrations run
   * once per store. On PostgreSQL the set gets a small pool of its own whose
   * search_path is the set's schema; on SQLite it shares this connection.
   */
  tables(set: TableSet): Promise<TableHandle> {
    let handle = this.tableSets.get(set);
    if (!handle) {
      handle = this.openTables(set);
      this.tableSets.set(set, handle);
      // A failed migration may succeed later (the database came back).
      handle.catch(() => this.tableSets.delete(set));
    }
    return handle;
  }

  private async openTables(set: TableSet): Promise<TableHandle> {
    if (this.dialect === 'sqlite') {
      await migrate(this.db, set.migrations('sqlite'), {
        name: set.name,
        schema: undefined,
        clash: { setting: `table set "${set.name}"`, fix: 'rename the table in its migration, or point CELERITY_SQLITE_PATH at a file of its own' },
      });
      return { db: this.db, dialect: 'sqlite', sqlite: this.sqlite };
    }
    const schema = set.schema ?? `${this.schema}_${set.name}`;
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: postgresPool(this.databaseUrl!, schema, 4) }) });
    this.extraPools.push(db);
    await migrate(db, set.migrations('postgres'), {
      name: set.name,
      schema,
      clash: { setting: `table set "${set.name}"`, fix: 'give the table set another schema (defineTables({ schema }))' },
    });
    return { db, dialect: 'postgres', sqlite: undefined };
  }

  /**
   * Writes states in one transaction. A row is inserted, or updated only when
   * the incoming state is newer (by event position) than the stored one, so
   * that replays after a crash and out-of-order batches are harmless.
   * `progressOnly` states refresh just the progress snapshot.
   */
  async write(states: RecordedState[], progressOnly: RecordedState[] = []): Promise<void> {
    if (states.length === 0 && progressOnly.length === 0) return;
    const now = Date.now();
    await this.writeRows(
      states.map((s) => toRow(s, now)),
      progressOnly.map((s) => toRow(s, now)),
    );
  }

  /** {@link write} of rows already built (`toRow`). */
  async writeRows(rows: JobsTable[], progressRows: JobsTable[] = []): Promise<void> {
    if (rows.length === 0 && progressRows.length === 0) return;
    if (this.sqliteUpsert) this.sqliteUpsert.write(rows, progressRows);
    else await postgresBatchUpsert(this.pgPool!, rows, progressRows);
  }

  /**
   * Moves happy-path jobs forward from their events alone (see
   * {@link HappyUpdate}): which rows moved, and which need nothing more
   * ({@link HappyOutcome}). The others need a full write.
   */
  async advance(updates: HappyUpdate[]): Promise<HappyOutcome> {
    if (updates.length === 0) return { moved: new Set(), settled: new Set() };
    if (this.sqlite) {
      this.happySqlite ??= sqliteHappyUpdates(this.sqlite);
      return this.happySqlite(updates);
    }
    return postgresHappyUpdates(this.pgPool!, updates);
  }

  /** The job's row, if it exists within `scope` (another tenant's job reads as absent). */
  async get(id: string, scope: TenantScope = ALL_TENANTS): Promise<JobRecord | null> {
    const row = await this.guard(() =>
      withTenantScope(this, scope, (db) => db.selectFrom('jobs').selectAll().where('id', '=', id).where(inScope(scope)).where('status', '!=', DELETED).executeTakeFirst()),
    );
    return row ? fromRow(row) : null;
  }

  /** Ids of the jobs that retry `id` (their `retry_of`, indexed), oldest first, at most `limit`. */
  async retriesOf(id: string, scope: TenantScope = ALL_TENANTS, limit = MAX_LISTED_RETRIES): Promise<string[]> {
    const rows = await this.guard(() =>
      withTenantScope(this, scope, (db) =>
        db.selectFrom('jobs').select('id').where('retry_of', '=', id).where(inScope(scope)).where('status', '!=', DELETED).orderBy('created_at', 'asc').orderBy('id', 'asc').limit(limit).execute(),
      ),
    );
    return rows.map((r) => r.id);
  }

  /**
   * The steps of a workflow within `scope`, whose ids are `<root>.<n>`: a
   * range scan on the primary key ('/' sorts right after '.'), in step order.
   */
  async workflowSteps(rootId: string, scope: TenantScope = ALL_TENANTS): Promise<JobRecord[]> {
    const rows = await this.guard(() =>
      withTenantScope(this, scope, (db) =>
        db.selectFrom('jobs').selectAll().where('id', '>', `${rootId}.`).where('id', '<', `${rootId}/`).where(inScope(scope)).where('status', '!=', DELETED).execute(),
      ),
    );
    const n = (id: string) => Number(id.slice(rootId.length + 1));
    return rows
      .filter((r) => Number.isInteger(n(r.id)))
      .map(fromRow)
      .sort((a, b) => n(a.id) - n(b.id));
  }

  /**
   * Newest first by creation time (ids are time-ordered only when Celerity
   * makes them), then by id; every filter ANDed, within the filter's tenant
   * scope and time budget (see `searchJobs`). The cursor is opaque.
   */
  async list(filter: ListFilter): Promise<JobPage> {
    const page = await this.guard(() => searchJobs(this, filter));
    return { ...page, jobs: page.jobs.map(fromRow) };
  }

  /** How many jobs match `filter`, in one `count(*)` statement (see `countJobs`). */
  async count(filter: CountFilter): Promise<number> {
    return this.guard(() => countJobs(this, filter));
  }

  /**
   * Whether PostgreSQL's row-level security applies to this store's
   * connections: the policy is in place (migrated) and the role is neither a
   * superuser nor BYPASSRLS, which PostgreSQL exempts. Always false on
   * SQLite. When false, the store's own tenant conditions are the only
   * isolation: worth a warning at start-up.
   */
  async rowSecurityEnforced(): Promise<boolean> {
    if (this.dialect !== 'postgres') return false;
    const { rows } = await this.guard(() =>
      sql<{ enforced: boolean }>`select coalesce(bool_and(not (r.rolsuper or r.rolbypassrls) and c.relrowsecurity and c.relforcerowsecurity), false) as enforced
        from pg_roles r, pg_class c join pg_namespace n on n.oid = c.relnamespace
        where r.rolname = current_user and c.relname = 'jobs' and n.nspname = ${this.schema}`.execute(this.db),
    );
    return rows[0]?.enforced === true;
  }

  async ping(): Promise<void> {
    await this.guard(() => sql`select 1`.execute(this.db));
  }

  /**
   * Checks that the database answers, as start-up does before serving: a
   * problem the user must fix comes out as a one-line StoreSetupError.
   */
  async check(): Promise<void> {
    try {
      await sql`select 1`.execute(this.db);
    } catch (err) {
      throw setupError(err) ?? new StoreUnavailableError(err);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.extraPools.map((db) => db.destroy()));
    await this.db.destroy();
  }

  private async guard<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      // Ours already (a timeout, a bad cursor): it says more than an outage would.
      if (err instanceof CelerityError) throw err;
      // A value the database cannot take is the caller's fault, not an outage (a 400, not a 503).
      if (isValueError(err)) throw new InvalidQueryValueError(err);
      throw new StoreUnavailableError(err);
    }
  }
}

/**
 * PostgreSQL's data exceptions (SQLSTATE class 22: invalid byte sequence
 * 22021, untranslatable character 22P05, invalid text representation 22P02,
 * numeric value out of range 22003...) and SQLite's SQLITE_MISMATCH and
 * SQLITE_TOOBIG: the statement's values are wrong, the database is fine.
 */
function isValueError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return /^22[0-9A-Z]{3}$/.test(code) || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG';
}

function json(value: unknown): string | null {
  return value === undefined || value === null ? null : JSON.stringify(value);
}

function parse(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

/** The `jobs` row of a state, its JSON columns serialized now. */
export function toRow({ record: r, eventSeq }: RecordedState, now: number): JobsTable {
  return {
    id: r.id,
    task: r.task,
    queue: r.queue,
    tenant: r.tenant,
    key_id: r.keyId ?? null,
    retry_of: r.retryOf ?? null,
    status: r.status,
    attempts: r.attempts,
    max_attempts: r.maxAttempts,
    input: json(r.input),
    result: json(r.result),
    error_type: r.error?.type ?? null,
    error_message: r.error?.message ?? null,
    error_stack: r.error?.stack ?? null,
    progress: json(r.progress),
    created_at: r.createdAt,
    started_at: r.startedAt,
    finished_at: r.finishedAt,
    attempt_history: json(r.attemptHistory),
    updated_at: now,
    event_seq: eventSeq,
  };
}

function fromRow(row: JobsTable): JobRecord {
  const record: JobRecord = {
    id: row.id,
    task: row.task,
    queue: row.queue,
    tenant: row.tenant,
    keyId: row.key_id,
    ...(row.retry_of ? { retryOf: row.retry_of } : {}),
    status: row.status as JobStatus,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    input: parse(row.input),
    result: parse(row.result),
    error: row.error_message !== null ? { type: row.error_type ?? 'Error', message: row.error_message, stack: row.error_stack } : null,
    progress: parse(row.progress) as JobRecord['progress'],
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
  record.attemptHistory = (parse(row.attempt_history) as AttemptRecord[] | null) ?? attemptHistory(record, []);
  return record;
}
