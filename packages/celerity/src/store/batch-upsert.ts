import type { SqliteDatabase } from './sqlite-driver.ts';
import type { PostgresPool } from 'kysely';
import { PgRecordset } from './pg-json.ts';
import { storableRow, storableText } from './storable.ts';
import type { JobsTable } from './db.ts';
import { runAsAllTenants } from './tenant-scope.ts';

/**
 * The recorder's writes: many rows per transaction, on the hot path of the
 * history, so they skip the query builder. Kysely compiling a 1,000-row
 * insert costs more CPU than the database spends on it.
 *
 * A row is inserted, or updated only when it is newer (`event_seq`) than the
 * stored one: replays and overlapping batches never move a job backwards.
 * Progress-only rows refresh just the progress snapshot of a row that
 * exists: they never insert one (a row made from a progress event would say
 * `queued` for a job that runs) and never touch its status.
 */

const COLUMNS = [
  'id',
  'task',
  'queue',
  'tenant',
  'key_id',
  'retry_of',
  'status',
  'attempts',
  'max_attempts',
  'input',
  'result',
  'error_type',
  'error_message',
  'error_stack',
  'progress',
  'created_at',
  'started_at',
  'finished_at',
  'attempt_history',
  'updated_at',
  'event_seq',
] as const satisfies readonly (keyof JobsTable)[];

const FULL_UPDATE = `status = excluded.status, attempts = excluded.attempts, max_attempts = excluded.max_attempts,
  result = excluded.result, error_type = excluded.error_type, error_message = excluded.error_message,
  error_stack = excluded.error_stack, progress = COALESCE(excluded.progress, jobs.progress),
  attempt_history = excluded.attempt_history, started_at = excluded.started_at, finished_at = excluded.finished_at,
  updated_at = excluded.updated_at, event_seq = excluded.event_seq, key_id = COALESCE(excluded.key_id, jobs.key_id),
  retry_of = COALESCE(excluded.retry_of, jobs.retry_of)
  WHERE excluded.event_seq > jobs.event_seq`;

/** Columns bound as raw text (the JSON columns hold JSON.stringify output, always storable). */
const TEXT_COLUMNS = ['id', 'task', 'queue', 'tenant', 'key_id', 'retry_of', 'status', 'error_type', 'error_message', 'error_stack', 'event_seq'] as const satisfies readonly (keyof JobsTable)[];

/** Id order: concurrent recorders that lock rows in the same order cannot deadlock. */
const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Several states of one job in one statement would conflict with each other: keep the newest. */
function newestPerId(rows: JobsTable[]): JobsTable[] {
  const newest = new Map<string, JobsTable>();
  for (const row of rows) {
    const seen = newest.get(row.id);
    if (!seen || row.event_seq > seen.event_seq) newest.set(row.id, row);
  }
  return [...newest.values()].sort(byId);
}

/** SQLite's upsert of one row. */
const UPSERT_VALUES = `INSERT INTO jobs (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')}) ON CONFLICT (id) DO UPDATE SET ${FULL_UPDATE}`;

/** SQLite: prepared statements in one synchronous transaction. */
export class SqliteBatchUpsert {
  private readonly run: (rows: JobsTable[], progressRows: JobsTable[]) => void;

  constructor(db: SqliteDatabase) {
    const full = db.prepare(UPSERT_VALUES);
    const progress = db.prepare('UPDATE jobs SET progress = COALESCE(?, progress), updated_at = ? WHERE id = ?');
    this.run = db.transaction((rows: JobsTable[], progressRows: JobsTable[]) => {
      for (const row of rows) {
        const r = storableRow(row, TEXT_COLUMNS);
        full.run(COLUMNS.map((c) => r[c]));
      }
      for (const row of progressRows) progress.run(row.progress, row.updated_at, storableText(row.id));
    });
  }

  write(rows: JobsTable[], progressRows: JobsTable[]): void {
    this.run(newestPerId(rows), newestPerId(progressRows));
  }
}

const PG_TYPES: Record<(typeof COLUMNS)[number], string> = {
  id: 'text',
  task: 'text',
  queue: 'text',
  tenant: 'text',
  key_id: 'text',
  retry_of: 'text',
  status: 'text',
  attempts: 'int',
  max_attempts: 'int',
  input: 'text',
  result: 'text',
  error_type: 'text',
  error_message: 'text',
  error_stack: 'text',
  progress: 'text',
  created_at: 'bigint',
  started_at: 'bigint',
  finished_at: 'bigint',
  attempt_history: 'text',
  updated_at: 'bigint',
  event_seq: 'text',
};

/** The batch's rows, as json_to_recordset reads them (see pg-json.ts). */
const FULL_ROWS = new PgRecordset<JobsTable>(COLUMNS.map((c) => [c, PG_TYPES[c]] as const));

const FULL_X = FULL_ROWS.refs('x');
const FULL_SELECT = COLUMNS.map((c) => FULL_X[c]).join(', ');
/** PostgreSQL's upsert of a batch. */
const upsertRecordset = (rows: JobsTable[]) => `INSERT INTO jobs (${COLUMNS.join(', ')}) SELECT ${FULL_SELECT} FROM ${FULL_ROWS.from(rows, 'x')} ON CONFLICT (id) DO UPDATE SET ${FULL_UPDATE}`;

const PROGRESS_ROWS = new PgRecordset<JobsTable>([
  ['id', 'text'],
  ['progress', 'text'],
  ['updated_at', 'bigint'],
]);

const PROGRESS_V = PROGRESS_ROWS.refs('v');
const progressPg = (rows: JobsTable[]) => `UPDATE jobs AS j SET progress = COALESCE(${PROGRESS_V.progress}, j.progress), updated_at = ${PROGRESS_V.updated_at}
  FROM ${PROGRESS_ROWS.from(rows, 'v')} WHERE j.id = ${PROGRESS_V.id}`;

/**
 * PostgreSQL: one `INSERT … SELECT FROM json_to_recordset(…)` per kind of
 * row, the whole batch as one JSON literal, every statement of the batch in
 * one message and one transaction ({@link runAsAllTenants}). JSON.stringify
 * is native; pg's escaping of one text array per column ran in JavaScript,
 * on the event loop the recorder shares with the API or the worker, for
 * every value.
 */
export async function postgresBatchUpsert(pool: PostgresPool, rows: JobsTable[], progressRows: JobsTable[]): Promise<void> {
  const full = newestPerId(rows);
  const progress = newestPerId(progressRows);
  const statements: string[] = [];
  if (full.length > 0) statements.push(upsertRecordset(full));
  if (progress.length > 0) statements.push(progressPg(progress));
  await retryingDeadlocks(() => runAsAllTenants(pool, statements));
}

/** Sorted rows make deadlocks unlikely; a batch that still meets one is retried at once, twice at most. */
async function retryingDeadlocks<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if ((err as { code?: string }).code !== '40P01' || attempt >= 3) throw err;
    }
  }
}

/**
 * A job moved forward on the happy path (started, completed) from its events,
 * without reading its whole hash. Built by the recorder only for a job whose
 * attempts started (`ats`) is 1, so that the events are its whole story;
 * applied only if the row is older and in a state these events can follow
 * (`from`); otherwise the recorder falls back to a full write from the hash,
 * unless the row is already at or past the update's position (see
 * {@link HappyOutcome}).
 */
export interface HappyUpdate {
  id: string;
  seq: string;
  status: 'started' | 'completed';
  /**
   * Where the row may be: `queued` (attempts 0) for a start; for a completion
   * alone, also `started` (attempts 1) by the start another batch recorded.
   * A completion alone may find the row still queued when another recorder
   * holds the start: with one attempt, the completion and the hash's times are
   * the whole story all the same. Either may find it `queued` with attempts
   * 1, written from the hash of a job that had started already ({@link FROM_STATE}).
   */
  from: 'queued' | 'queued-or-started';
  /** Null keeps the stored value. */
  startedAt: number | null;
  finishedAt: number | null;
  /** JSON text, as BullMQ stored it. */
  result: string | null;
  /** JSON text; null keeps the stored snapshot. */
  progress: string | null;
  updatedAt: number;
}

/**
 * What a batch of happy updates did: `moved`, the rows updated; `settled`,
 * those and the rows already at or past the update's position (another
 * recorder wrote a later event first). A full write of a settled row would be
 * refused by the `event_seq` guard, so the recorder skips it; the rest need
 * their full write from the hash.
 */
export interface HappyOutcome {
  moved: Set<string>;
  settled: Set<string>;
}

const HAPPY_SET = `status = ?, attempts = 1, started_at = COALESCE(?, started_at), finished_at = ?, result = ?,
  progress = COALESCE(?, progress), error_type = NULL, error_message = NULL, error_stack = NULL,
  attempt_history = NULL, updated_at = ?, event_seq = ?`;

/**
 * The row's state the update expects, without an OR on `status`: PostgreSQL
 * planned `(status = 'queued' AND …) OR (status = 'started' AND …)` as a scan
 * of the status index joined to the batch, which took seconds per batch on a
 * table with many queued rows. Here `status` is compared with an expression
 * of the row itself, so the primary key stays the only way in. Accepted:
 * `queued` with attempts 0; `started` with attempts 1 when `fromAttempts`
 * (the `?`, 0 or 1) is 1; and `queued` with attempts 1, a row written from
 * the hash after the job had started, by a recorder that read its add late
 * (a backlog caught up after a restart or an outage): the start and end in
 * hand are its attempt's whole story all the same, and refusing them sent
 * the job to a second write from its hash, doubling the cost of catching up
 * (docs/benchmarks.md, run 30).
 */
const FROM_STATE = `attempts <= 1 AND status = (CASE WHEN attempts = 1 AND ? = 1 AND status = 'started' THEN 'started' ELSE 'queued' END)`;

const fromAttempts = (u: HappyUpdate): 0 | 1 => (u.from === 'queued' ? 0 : 1);

/** SQLite: one prepared UPDATE per job in one transaction. */
export function sqliteHappyUpdates(db: SqliteDatabase): (updates: HappyUpdate[]) => HappyOutcome {
  const statement = db.prepare(`UPDATE jobs SET ${HAPPY_SET} WHERE id = ? AND event_seq < ? AND ${FROM_STATE}`);
  const newer = db.prepare('SELECT 1 AS newer FROM jobs WHERE id = ? AND event_seq >= ?');
  return db.transaction((updates: HappyUpdate[]) => {
    const moved = new Set<string>();
    const settled = new Set<string>();
    for (const u of updates) {
      const id = storableText(u.id);
      const { changes } = statement.run(u.status, u.startedAt, u.finishedAt, u.result, u.progress, u.updatedAt, u.seq, id, u.seq, fromAttempts(u));
      if (changes === 1) moved.add(u.id);
      if (changes === 1 || newer.get(id, u.seq) !== undefined) settled.add(u.id);
    }
    return { moved, settled };
  });
}

const HAPPY_ROWS = new PgRecordset<HappyUpdate>([
  ['id', 'text'],
  ['seq', 'text'],
  ['status', 'text'],
  ['startedAt', 'bigint'],
  ['finishedAt', 'bigint'],
  ['result', 'text'],
  ['progress', 'text'],
  ['updatedAt', 'bigint'],
  ['from', 'text'],
]);

const HAPPY_V = HAPPY_ROWS.refs('v');
/** The happy updates of a batch; {@link FROM_STATE} spelled for PostgreSQL, with the update's `from` read as `fromAttempts` reads it. */
const happyPg = (updates: HappyUpdate[]) => `WITH moved AS (UPDATE jobs AS j SET status = ${HAPPY_V.status}, attempts = 1,
    started_at = COALESCE(${HAPPY_V.startedAt}, j.started_at), finished_at = ${HAPPY_V.finishedAt}, result = ${HAPPY_V.result},
    progress = COALESCE(${HAPPY_V.progress}, j.progress), error_type = NULL, error_message = NULL, error_stack = NULL,
    attempt_history = NULL, updated_at = ${HAPPY_V.updatedAt}, event_seq = ${HAPPY_V.seq}
  FROM ${HAPPY_ROWS.from(updates, 'v')}
  WHERE j.id = ${HAPPY_V.id} AND j.event_seq < ${HAPPY_V.seq} AND j.attempts <= 1
    AND j.status = (CASE WHEN j.attempts = 1 AND ${HAPPY_V.from} <> 'queued' AND j.status = 'started' THEN 'started' ELSE 'queued' END)
  RETURNING j.id)
  SELECT count(*)::int AS n, CASE WHEN count(*) < ${updates.length} THEN json_agg(id) END AS ids FROM moved`;

const NEWER_ROWS = new PgRecordset<HappyUpdate>([
  ['id', 'text'],
  ['seq', 'text'],
]);

const NEWER_V = NEWER_ROWS.refs('v');
const newerPg = (updates: HappyUpdate[]) => `SELECT j.id FROM jobs AS j JOIN ${NEWER_ROWS.from(updates, 'v')} ON j.id = ${NEWER_V.id} WHERE j.event_seq >= ${NEWER_V.seq}`;

/**
 * PostgreSQL: one `UPDATE … FROM json_to_recordset(…)` for the batch and,
 * only if some rows did not move (another recorder holds their other
 * events), one read of which of those are already past it; each one message
 * ({@link runAsAllTenants}). The read need not share the update's
 * transaction: a row's `event_seq` only moves forward, so a row past the
 * update's position stays past it.
 */
export async function postgresHappyUpdates(pool: PostgresPool, updates: HappyUpdate[]): Promise<HappyOutcome> {
  // Sorted: concurrent recorders lock rows in the same order.
  const sorted = [...updates].sort(byId);
  const update = happyPg(sorted);
  // A count, and the ids only when some did not move: 2,000 rows back cost
  // pg about a microsecond each to parse, one row a fifth of that (run 30).
  const [[result]] = (await retryingDeadlocks(() => runAsAllTenants(pool, [update]))) as [[{ n: number; ids: string[] | null }]];
  const moved = new Set(result!.n === sorted.length ? sorted.map((u) => u.id) : (result!.ids ?? []));
  const settled = new Set(moved);
  const rest = sorted.filter((u) => !moved.has(u.id));
  if (rest.length > 0) {
    const [newer] = (await runAsAllTenants(pool, [newerPg(rest)])) as [{ id: string }[]];
    for (const r of newer) settled.add(r.id);
  }
  return { moved, settled };
}
