import { type Kysely, sql } from 'kysely';
import { InvalidOptionsError, StoreUnavailableError } from '../errors.ts';
import { BUCKET_COUNT, percentile } from '../ops/histogram.ts';
import type { JobStore } from './job-store.ts';
import { bulkUpserts, PENDING_TABLE } from './migrations/0009_job_metrics.ts';
import type { SqliteDatabase } from './sqlite-driver.ts';

/**
 * Reads (and prunes) the job metrics over time: `job_metrics_minute`,
 * `job_metrics_hour` and `job_metrics_total`. They are written by triggers on
 * `jobs` (migration `0009_job_metrics`), in the recorder's own transaction,
 * exactly when a row becomes final (through a pending table that
 * {@link foldJobMetrics} empties): see that migration for why this counts
 * each job once however many recorders there are and however often an event
 * is delivered. Charts read these tables, never `jobs`.
 */

export type StatsGranularity = 'minute' | 'hour';

export interface StatsQuery {
  /** Start of the range (inclusive; a Date, epoch ms or an ISO 8601 date-time); default `to` minus 1 hour (minute) or 24 hours (hour). */
  from?: Date | number | string | undefined;
  /** End of the range (exclusive); default now. */
  to?: Date | number | string | undefined;
  granularity?: StatsGranularity | undefined;
  task?: string | undefined;
  queue?: string | undefined;
  /** One series per queue and task (default), per queue (its tasks summed), or one for `all`. */
  by?: StatsGrouping | undefined;
}

export type StatsGrouping = 'task' | 'queue' | 'all';

/** One period of one series; latencies in ms, null when no job of the period had one. */
export interface StatsPoint {
  /** Start of the period, ISO 8601. */
  t: string;
  completed: number;
  failed: number;
  cancelled: number;
  /** Retried attempts of the jobs that ended in the period. */
  retries: number;
  wait_p50: number | null;
  wait_p95: number | null;
  run_p50: number | null;
  run_p95: number | null;
}

export interface StatsSeries {
  /** Null when the series sums several queues (`by: 'all'`). */
  queue: string | null;
  /** Null when the series sums several tasks (`by: 'queue'` or `'all'`). */
  task: string | null;
  /** Periods in which at least one job of the series ended, oldest first; periods without any are left out. */
  points: StatsPoint[];
}

export interface StatsResult {
  granularity: StatsGranularity;
  by: StatsGrouping;
  from: string;
  to: string;
  series: StatsSeries[];
}

/** Per (queue, task), since the tables were created: what the cluster-wide Prometheus counters show. */
export interface JobTotals {
  queue: string;
  task: string;
  completed: number;
  failed: number;
  cancelled: number;
  retries: number;
  runCount: number;
  runSumMs: number;
  /** Run times of the final attempts, per bucket of `ops/histogram.ts`. */
  runBuckets: number[];
}

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/** Minute rows are kept this long (or the metrics retention, if shorter): charts past it read hours. */
export const MINUTE_RETENTION_MS = 48 * HOUR_MS;

/** The longest range one request may cover: at most 1,440 points per series by minute, 744 by hour. */
export const MAX_RANGE_MS: Record<StatsGranularity, number> = { minute: 24 * HOUR_MS, hour: 31 * DAY_MS };
const DEFAULT_RANGE_MS: Record<StatsGranularity, number> = { minute: HOUR_MS, hour: 24 * HOUR_MS };
const PERIOD_MS: Record<StatsGranularity, number> = { minute: MINUTE_MS, hour: HOUR_MS };

const waitColumns = Array.from({ length: BUCKET_COUNT }, (_, k) => `wait_b${String(k).padStart(2, '0')}`);
const runColumns = Array.from({ length: BUCKET_COUNT }, (_, k) => `run_b${String(k).padStart(2, '0')}`);
const SUMMED = ['completed', 'failed', 'cancelled', 'retries', ...waitColumns, ...runColumns];

function instant(value: Date | number | string, field: string): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isSafeInteger(ms) || ms < 0) throw new InvalidOptionsError([{ path: field, message: 'must be an ISO 8601 date-time or epoch milliseconds' }]);
  return ms;
}

/** The query with its defaults, its range rounded out to whole periods; throws InvalidOptionsError naming the field at fault. */
export function resolveStatsQuery(q: StatsQuery, now: number = Date.now()): { granularity: StatsGranularity; by: StatsGrouping; from: number; to: number; task?: string; queue?: string } {
  const granularity = q.granularity ?? 'minute';
  if (granularity !== 'minute' && granularity !== 'hour') throw new InvalidOptionsError([{ path: 'granularity', message: 'must be "minute" or "hour"' }]);
  const by = q.by ?? 'task';
  if (by !== 'task' && by !== 'queue' && by !== 'all') throw new InvalidOptionsError([{ path: 'by', message: 'must be "task", "queue" or "all"' }]);
  const period = PERIOD_MS[granularity];
  const to = q.to === undefined ? now : instant(q.to, 'to');
  const from = q.from === undefined ? to - DEFAULT_RANGE_MS[granularity] : instant(q.from, 'from');
  if (from >= to) throw new InvalidOptionsError([{ path: 'from', message: 'must be before to' }]);
  if (to - from > MAX_RANGE_MS[granularity]) {
    throw new InvalidOptionsError([{ path: 'from', message: `the range may cover at most ${MAX_RANGE_MS[granularity] / HOUR_MS} hours at granularity ${granularity}` }]);
  }
  for (const field of ['task', 'queue'] as const) {
    const v = q[field];
    if (v !== undefined && (typeof v !== 'string' || v.length === 0 || v.length > 200)) throw new InvalidOptionsError([{ path: field, message: 'must be a name of 1 to 200 characters' }]);
  }
  // Whole periods: a range that cuts a period in two reports all of it.
  const start = from - (from % period);
  const end = to % period === 0 ? to : to - (to % period) + period;
  return { granularity, by, from: start, to: end, ...(q.task !== undefined ? { task: q.task } : {}), ...(q.queue !== undefined ? { queue: q.queue } : {}) };
}

const folds = new WeakMap<SqliteDatabase, () => void>();

/**
 * Adds the jobs the triggers appended to `job_metrics_pending` into the
 * metrics tables, and deletes them, so that each is added exactly once
 * whichever process folds it (migrations `0009_job_metrics` and
 * `0013_job_metrics_pending`).
 *
 * SQLite: in one transaction that takes the write lock at its `BEGIN
 * IMMEDIATE` (SQLite has one writer at a time), synchronously, on the
 * store's own connection, like the recorder's batches: an async transaction
 * there would take them in. The recorder folds after each batch.
 *
 * PostgreSQL: one call of `job_metrics_fold()`, which does the same in one
 * statement under an advisory lock. The recorder folds at most once every
 * {@link METRICS_FOLD_EVERY_MS}: the fold's cost is mostly per call, not
 * per job.
 */
export async function foldJobMetrics(store: JobStore): Promise<void> {
  const db = store.sqlite;
  if (!db) {
    await sql`select job_metrics_fold()`.execute(store.db);
    return;
  }
  let fold = folds.get(db);
  if (!fold) {
    const any = db.prepare(`SELECT 1 FROM ${PENDING_TABLE} LIMIT 1`);
    // The upserts read the pending rows of the transaction's snapshot, which the delete then removes: the same rows.
    const [createTemp, ...statements] = bulkUpserts(`(SELECT * FROM ${PENDING_TABLE})`, 'sqlite');
    db.exec(createTemp!);
    const upserts = statements.map((statement) => db.prepare(statement));
    const clear = db.prepare(`DELETE FROM ${PENDING_TABLE}`);
    const move = db.transaction(() => {
      for (const upsert of upserts) upsert.run();
      clear.run();
    });
    fold = () => {
      // IMMEDIATE: the fold's first statement that touches the main database
      // reads it (the pending rows, into the temporary table). A deferred
      // transaction would take its write lock only at the first upsert, and
      // a commit by another connection in between makes that upgrade fail at
      // once (SQLITE_BUSY, "database is locked"; busy_timeout does not wait
      // for a snapshot that is already stale): the recorder's batch failed
      // and was written again (s1 on SQLite, two recorders, run 17).
      if (any.get() !== undefined) move.immediate();
    };
    folds.set(db, fold);
  }
  fold();
}

/** How often a recorder on PostgreSQL folds the metrics its batches appended (readers fold before they read in any case). */
export const METRICS_FOLD_EVERY_MS = 1_000;

/**
 * Stream entries a recorder on PostgreSQL records (about a quarter as many
 * jobs) between two vacuums of the pending table: see {@link vacuumPendingMetrics}.
 */
export const VACUUM_PENDING_EVERY_ENTRIES = 20_000;

/**
 * PostgreSQL: vacuums the pending table, whose every row is deleted by the
 * fold a second or so after its insert. Each fold, and each reader's check
 * for pending jobs, scans the dead rows left since the last vacuum. The
 * table's own autovacuum settings (0013) act only where autovacuum runs: on a
 * server with `autovacuum = off` (seen on CI machines), one 12-minute run of
 * the HTTP benchmark left 640,000 dead rows, each fold then took seconds of
 * PostgreSQL's CPU, and the history fell minutes behind its jobs. So the
 * recorders vacuum it themselves, every {@link VACUUM_PENDING_EVERY_ENTRIES}
 * entries each; `SKIP_LOCKED`: a vacuum already running (another
 * recorder's, autovacuum's) is left to it. A role that does not own the
 * table gets a warning from PostgreSQL and no vacuum, not an error.
 */
export async function vacuumPendingMetrics(store: JobStore): Promise<void> {
  if (store.sqlite) return;
  // VACUUM cannot run in a transaction block: the pool's connection, outside any.
  await sql`VACUUM (SKIP_LOCKED) ${sql.table(PENDING_TABLE)}`.execute(store.db);
}

/**
 * Reads include what the recorders wrote last. A fold that fails (another
 * process holds SQLite's write lock past its timeout) leaves the read a
 * batch behind rather than failing it: the next fold adds those jobs.
 */
async function foldBeforeRead(store: JobStore): Promise<void> {
  try {
    await foldJobMetrics(store);
  } catch {
    // Read what is folded.
  }
}

/** A read the database did not answer is an outage (503), not the caller's fault. */
async function unavailable<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    throw new StoreUnavailableError(err);
  }
}

/**
 * Throughput, failures and latency percentiles per queue and task, by minute
 * or by hour: one range read of the primary key of a rollup table.
 */
export async function readStats(store: JobStore, query: StatsQuery, now: number = Date.now()): Promise<StatsResult> {
  const q = resolveStatsQuery(query, now);
  await foldBeforeRead(store);
  const db = store.db as unknown as Kysely<any>;
  let select = db
    .selectFrom(q.granularity === 'minute' ? 'job_metrics_minute' : 'job_metrics_hour')
    .where('period', '>=', q.from)
    .where('period', '<', q.to);
  if (q.task !== undefined) select = select.where('task', '=', q.task);
  if (q.queue !== undefined) select = select.where('queue', '=', q.queue);
  // Grouped series are sums of the rows, histograms included (they add up bucket by bucket).
  const keys = q.by === 'task' ? ['queue', 'task'] : q.by === 'queue' ? ['queue'] : [];
  const grouped = q.by === 'task' ? select.selectAll() : select.select([...keys, 'period', ...SUMMED.map((c) => sql<number>`sum(${sql.ref(c)})`.as(c))]).groupBy([...keys, 'period']);
  const rows = (await unavailable(() => [...keys, 'period'].reduce((query, key) => query.orderBy(key), grouped).execute())) as Record<string, unknown>[];
  const series: StatsSeries[] = [];
  let current: StatsSeries | undefined;
  for (const row of rows) {
    const queue = row.queue === undefined ? null : String(row.queue);
    const task = row.task === undefined ? null : String(row.task);
    if (!current || current.queue !== queue || current.task !== task) {
      current = { queue, task, points: [] };
      series.push(current);
    }
    const wait = waitColumns.map((c) => Number(row[c]));
    const run = runColumns.map((c) => Number(row[c]));
    current.points.push({
      t: new Date(Number(row.period)).toISOString(),
      completed: Number(row.completed),
      failed: Number(row.failed),
      cancelled: Number(row.cancelled),
      retries: Number(row.retries),
      wait_p50: percentile(wait, 0.5),
      wait_p95: percentile(wait, 0.95),
      run_p50: percentile(run, 0.5),
      run_p95: percentile(run, 0.95),
    });
  }
  return { granularity: q.granularity, by: q.by, from: new Date(q.from).toISOString(), to: new Date(q.to).toISOString(), series };
}

/** Every (queue, task)'s totals since the metrics began: a few rows, read per scrape. */
export async function readTotals(store: JobStore): Promise<JobTotals[]> {
  await foldBeforeRead(store);
  const db = store.db as unknown as Kysely<any>;
  const rows = (await unavailable(() =>
    db
      .selectFrom('job_metrics_total')
      .select(['queue', 'task', 'completed', 'failed', 'cancelled', 'retries', 'run_count', 'run_sum_ms', ...runColumns])
      .execute(),
  )) as Record<string, unknown>[];
  return rows.map((r) => ({
    queue: String(r.queue),
    task: String(r.task),
    completed: Number(r.completed),
    failed: Number(r.failed),
    cancelled: Number(r.cancelled),
    retries: Number(r.retries),
    runCount: Number(r.run_count),
    runSumMs: Number(r.run_sum_ms),
    runBuckets: runColumns.map((c) => Number(r[c])),
  }));
}

/**
 * Deletes minute rows past {@link MINUTE_RETENTION_MS} (or `retentionDays`
 * if shorter) and hour rows past `retentionDays` (0 keeps them for ever).
 * The totals are never pruned: the Prometheus counters read from them must
 * never go down.
 */
export async function pruneMetrics(store: JobStore, retentionDays: number, now: number = Date.now()): Promise<{ minutes: number; hours: number }> {
  await foldJobMetrics(store);
  const db = store.db as unknown as Kysely<any>;
  const keep = retentionDays > 0 ? Math.min(MINUTE_RETENTION_MS, retentionDays * DAY_MS) : MINUTE_RETENTION_MS;
  const minutes = await db
    .deleteFrom('job_metrics_minute')
    .where('period', '<', now - keep)
    .executeTakeFirst();
  const hours =
    retentionDays > 0
      ? await db
          .deleteFrom('job_metrics_hour')
          .where('period', '<', now - retentionDays * DAY_MS)
          .executeTakeFirst()
      : { numDeletedRows: 0n };
  return { minutes: Number(minutes.numDeletedRows), hours: Number(hours.numDeletedRows) };
}
