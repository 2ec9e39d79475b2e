import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect, type PostgresPool } from 'kysely';
import { StoreSetupError } from '../errors.ts';
import { postgresPool } from './pg-pool.ts';
import { openSqlite, type SqliteDatabase } from './sqlite-driver.ts';

/** Columns of the `jobs` table. Times are epoch milliseconds; JSON is stored as text. */
export interface JobsTable {
  id: string;
  task: string;
  queue: string;
  tenant: string | null;
  /** Public id of the API key that submitted the job. */
  key_id: string | null;
  /** Id of the job this one retries (`app.retry`); null for a job submitted as such. */
  retry_of?: string | null;
  status: string;
  attempts: number;
  max_attempts: number;
  input: string | null;
  result: string | null;
  error_type: string | null;
  error_message: string | null;
  error_stack: string | null;
  progress: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  /** JSON array of AttemptRecord; null for a job with a single attempt. */
  attempt_history: string | null;
  /** Position of the last applied event (zero-padded stream id); guards against reordering. */
  event_seq: string;
}

/** Columns of the `api_keys` table (see auth/key-store.ts). */
export interface ApiKeysTable {
  id: string;
  name: string;
  tenant: string | null;
  /** JSON array of scopes. */
  scopes: string;
  /** JSON array of task-name patterns; null: every task. */
  tasks: string | null;
  /** SHA-256 of the key's secret, hex. */
  secret_hash: string;
  created_at: number;
  revoked_at: number | null;
  last_used_at: number | null;
}

/** Columns of the `job_logs` table: a job's log lines, kept past Redis (migration 0010). */
export interface JobLogsTable {
  id: string;
  /** JSON array of JobLogRow, oldest first. */
  lines: string;
  updated_at: number;
}

/** Columns of the `bulk_operations` table: the audit log of bulk actions (see ops/bulk/). */
export interface BulkOperationsTable {
  id: string;
  action: string;
  /** JSON of the filter as given. */
  filter: string;
  /** The tenant of the key that started it (null: the jobs without a tenant), unless `all_tenants`. */
  tenant: string | null;
  /** 1 when an admin started it: every tenant's jobs. */
  all_tenants: number;
  /** JSON array of the starting key's task patterns; null: every task. */
  task_patterns: string | null;
  key_id: string | null;
  key_name: string;
  status: string;
  matched: number;
  done: number;
  failed: number;
  /** JSON array of the first failures. */
  errors: string | null;
  /** Where the run is in the history (a list cursor), so that a restarted run resumes there. */
  cursor: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

export interface Database {
  jobs: JobsTable;
  api_keys: ApiKeysTable;
  bulk_operations: BulkOperationsTable;
  job_logs: JobLogsTable;
}

export type Dialect = 'sqlite' | 'postgres';

export interface DbHandle {
  db: Kysely<Database>;
  dialect: Dialect;
  /** The better-sqlite3 connection behind `db`, for the recorder's prepared statements. */
  sqlite?: SqliteDatabase;
  /** The PostgreSQL pool behind `db`, for the recorder's writes in one message (`runAsAllTenants`, tenant-scope.ts). */
  pgPool?: PostgresPool;
}

export interface DbOptions {
  databaseUrl?: string | undefined;
  sqlitePath: string;
  /** PostgreSQL schema of Celerity's tables (created if missing); default `celerity`. */
  schema?: string | undefined;
}

export function createDb(opts: DbOptions): DbHandle {
  if (opts.databaseUrl) {
    const pool = postgresPool(opts.databaseUrl, opts.schema ?? 'celerity');
    return { db: new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), dialect: 'postgres', pgPool: pool };
  }
  if (opts.sqlitePath !== ':memory:') {
    try {
      mkdirSync(dirname(opts.sqlitePath), { recursive: true });
    } catch (err) {
      throw new StoreSetupError('CELERITY_SQLITE_PATH', `cannot create the directory of ${opts.sqlitePath}: ${(err as Error).message}`, 'point CELERITY_SQLITE_PATH at a writable place', {
        cause: err,
      });
    }
  }
  const sqlite = openSqlite(opts.sqlitePath);
  // WAL lets the API read while a worker's recorder writes; busy_timeout lets
  // several processes share the file. NORMAL sync is durable across process
  // crashes (only power loss can drop the last transaction).
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 10000');
  return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite as never }) }), dialect: 'sqlite', sqlite };
}
