import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';
import { TENANT_SETTING } from '../tenant-scope.ts';

/**
 * Job metrics over time: per (minute, queue, task), per (hour, queue, task)
 * and since forever per (queue, task), each with its counts and two latency
 * histograms (wait, run) as columns, so that writers add into a row and an
 * hour is the sum of its minutes.
 *
 * The tables are maintained by triggers on `jobs`, in the statement, hence
 * the transaction, that moves a row to a final status (completed, failed,
 * cancelled) from a status that was not final. That is what makes the counts
 * exactly once without the recorder knowing: a redelivered or replayed event
 * is refused by the upsert's `event_seq` guard (no row changes, no trigger
 * fires), a rewrite of a row already final (reconciliation, a replay at a
 * newer position) is not a transition, and a batch that fails rolls its
 * metrics back with its rows. A job that leaves a final status and reaches
 * one again (retried by hand) is counted once per time it ends.
 *
 * PostgreSQL: statement triggers with transition tables, which add a whole
 * batch in one upsert per key; they take a transaction-level advisory lock
 * first so that concurrent recorders add into the shared rows one after the
 * other instead of deadlocking on them in different orders. (Since
 * `0013_job_metrics_pending` they append to a pending table, as SQLite's do,
 * and `job_metrics_fold()` makes these upserts under the same lock.)
 *
 * SQLite has row triggers only, and three upserts of 116 columns per job
 * made the recorder's writes several times slower. Its triggers append the
 * job's columns to `job_metrics_pending` instead, in the same transaction as
 * the row; `foldJobMetrics` (store/job-metrics.ts) moves them into the three
 * tables with the same aggregate upserts as PostgreSQL's, and deletes them,
 * in one transaction: after each recorder batch and before each read.
 *
 * The buckets are frozen here, apart from `src/ops/histogram.ts` which reads
 * them: this migration must never change once released (the fold uses its
 * upserts, so a new bucket scheme needs new tables and a new fold). Bucket 0 holds 0 ms,
 * bucket k holds ms from ceil(2^((k-1)/2)), bucket 53 everything from 2^26.
 */
const BUCKETS = 54;
const LOWER = Array.from({ length: BUCKETS }, (_, k) => (k === 0 ? 0 : Math.ceil(2 ** ((k - 1) / 2))));
const FINAL = `('completed', 'failed', 'cancelled')`;

const bucketColumns = (kind: 'wait' | 'run') => Array.from({ length: BUCKETS }, (_, k) => `${kind}_b${String(k).padStart(2, '0')}`);
const VALUES = ['completed', 'failed', 'cancelled', 'retries', 'wait_count', 'wait_sum_ms', 'run_count', 'run_sum_ms', ...bucketColumns('wait'), ...bucketColumns('run')];

const TABLES = [
  { name: 'job_metrics_minute', keys: ['period', 'queue', 'task'], keyExprs: (ended: string) => [`${ended} - ${ended} % 60000`, 'queue', 'task'] },
  { name: 'job_metrics_hour', keys: ['period', 'queue', 'task'], keyExprs: (ended: string) => [`${ended} - ${ended} % 3600000`, 'queue', 'task'] },
  { name: 'job_metrics_total', keys: ['queue', 'task'], keyExprs: (_ended: string) => ['queue', 'task'] },
] as const;

/**
 * A job's measures, from the columns of its `jobs` row (`col` names one):
 * when it ended, its wait (created to started, first attempts only: a
 * retried job's start is its last attempt's, after the earlier ones and
 * their backoff) and its run (the final attempt).
 */
function measures(col: (c: string) => string, dialect: Dialect): { ended: string; w: string; r: string } {
  const max = dialect === 'postgres' ? 'GREATEST' : 'MAX';
  return {
    ended: `COALESCE(${col('finished_at')}, ${col('updated_at')})`,
    w: `CASE WHEN ${col('attempts')} <= 1 AND ${col('started_at')} IS NOT NULL THEN ${max}(0, ${col('started_at')} - ${col('created_at')}) END`,
    r: `CASE WHEN ${col('started_at')} IS NOT NULL AND ${col('finished_at')} IS NOT NULL THEN ${max}(0, ${col('finished_at')} - ${col('started_at')}) END`,
  };
}

/** The bucket of `v` (-1 for null): a binary search, 6 comparisons instead of up to 53. */
function bucketExpr(v: string, lo = 0, hi = BUCKETS - 1): string {
  if (lo === hi) return String(lo);
  const mid = Math.ceil((lo + hi) / 2);
  const inner = `CASE WHEN ${v} >= ${LOWER[mid]} THEN ${bucketExpr(v, mid, hi)} ELSE ${bucketExpr(v, lo, mid - 1)} END`;
  return lo === 0 && hi === BUCKETS - 1 ? `CASE WHEN ${v} IS NULL THEN -1 ELSE ${inner} END` : inner;
}

const updateSet = (table: string) => VALUES.map((c) => `${c} = ${table}.${c} + excluded.${c}`).join(', ');

/**
 * `WITH d` (each job of `source`, a relation of `jobs` rows, with its
 * measures and buckets) and `m` (their sums per minute, queue and task). Both
 * MATERIALIZED: inlined, each of the 108 bucket counts would evaluate the
 * job's bucket again. The hours and totals are then sums of `m`'s few rows.
 */
function perMinute(source: string, dialect: Dialect, prelude = ''): string {
  const m = measures((c) => c, dialect);
  const count = (cond: string) => `COUNT(*) FILTER (WHERE ${cond})`;
  const aggs = [
    count(`status = 'completed'`),
    count(`status = 'failed'`),
    count(`status = 'cancelled'`),
    'COALESCE(SUM(attempts - 1) FILTER (WHERE attempts > 1), 0)',
    'COUNT(w)',
    'COALESCE(SUM(w), 0)',
    'COUNT(r)',
    'COALESCE(SUM(r), 0)',
    ...Array.from({ length: BUCKETS }, (_, k) => count(`wb = ${k}`)),
    ...Array.from({ length: BUCKETS }, (_, k) => count(`rb = ${k}`)),
  ];
  return `WITH ${prelude}d AS MATERIALIZED (SELECT queue, task, status, attempts, ended, w, r, ${bucketExpr('w')} AS wb, ${bucketExpr('r')} AS rb
      FROM (SELECT queue, task, status, attempts, ${m.ended} AS ended, ${m.w} AS w, ${m.r} AS r FROM ${source} AS src) x),
    m AS MATERIALIZED (SELECT ended - ended % 60000 AS period, queue, task, ${aggs.map((agg, i) => `${agg} AS ${VALUES[i]}`).join(', ')}
      FROM d GROUP BY ended - ended % 60000, queue, task)`;
}

/** The upsert of one table from `m`: minutes as they are, hours and totals summed. */
function upsertFromMinutes(table: (typeof TABLES)[number]): string {
  const keys = table.name === 'job_metrics_minute' ? ['period', 'queue', 'task'] : table.keyExprs('period');
  const values = table.name === 'job_metrics_minute' ? VALUES : VALUES.map((c) => `SUM(${c})`);
  const group = table.name === 'job_metrics_minute' ? '' : ` GROUP BY ${keys.join(', ')}`;
  return `INSERT INTO ${table.name} (${[...table.keys, ...VALUES].join(', ')}) SELECT ${[...keys, ...values].join(', ')} FROM m WHERE true${group}
    ON CONFLICT (${table.keys.join(', ')}) DO UPDATE SET ${updateSet(table.name)}`;
}

/**
 * The statements that add the jobs of `source` into the three tables.
 * PostgreSQL: one statement, the upserts as data-modifying CTEs over `m`,
 * after the CTEs of `prelude` (ending with a comma) that `source` may name.
 * SQLite has none: `m` goes through a temporary table (the connection's own),
 * emptied at the end.
 */
export function bulkUpserts(source: string, dialect: Dialect, prelude = ''): string[] {
  const [minute, hour, total] = TABLES.map(upsertFromMinutes) as [string, string, string];
  if (dialect === 'postgres') return [`${perMinute(source, dialect, prelude)}, a AS (${minute}), b AS (${hour}) ${total}`];
  const temp = 'temp.job_metrics_fold';
  const fromTemp = (statement: string) => statement.replace(' FROM m WHERE', ` FROM ${temp} WHERE`);
  return [
    `CREATE TEMP TABLE IF NOT EXISTS job_metrics_fold (period, queue, task, ${VALUES.join(', ')})`,
    `DELETE FROM ${temp}`,
    `${perMinute(source, dialect)} INSERT INTO ${temp} SELECT * FROM m`,
    fromTemp(minute),
    fromTemp(hour),
    fromTemp(total),
    `DELETE FROM ${temp}`,
  ];
}

/**
 * SQLite (and PostgreSQL since `0013_job_metrics_pending`): what the
 * triggers append, a job's own columns; folded by `foldJobMetrics`
 * (store/job-metrics.ts).
 */
export const PENDING_TABLE = 'job_metrics_pending';
export const PENDING_COLUMNS = ['queue', 'task', 'status', 'attempts', 'created_at', 'started_at', 'finished_at', 'updated_at'];

/**
 * The two statement triggers' functions, each running `body(source)` when
 * its cheap test says the statement may have made jobs final (most updates
 * of `jobs` move no row to a final status: starts, progress, rewrites of
 * final rows). `source` is every final row the statement inserted, or the
 * rows it updated from a status that was not final. No nested loops: the
 * transition tables are not analysed, and a nested loop over old and new
 * rows costs a batch's size squared. Shared with `0013_job_metrics_pending`.
 */
export function pgTriggerFunctions(body: (source: string) => string): string[] {
  const anyFinal = `EXISTS (SELECT 1 FROM new_rows WHERE status IN ${FINAL})`;
  const transitions = [
    { name: 'job_metrics_inserted', worth: anyFinal, source: `(SELECT * FROM new_rows WHERE status IN ${FINAL})` },
    {
      name: 'job_metrics_updated',
      worth: `${anyFinal} AND EXISTS (SELECT 1 FROM old_rows WHERE status NOT IN ${FINAL})`,
      source: `(SELECT n.* FROM new_rows n WHERE n.status IN ${FINAL} AND n.id IN (SELECT o.id FROM old_rows o WHERE o.status NOT IN ${FINAL}))`,
    },
  ];
  return transitions.map(
    (t) => `CREATE OR REPLACE FUNCTION ${t.name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT SET enable_nestloop = off AS $body$
BEGIN
  IF ${t.worth} THEN
    ${body(t.source)}
  END IF;
  RETURN NULL;
END
$body$`,
  );
}

/**
 * PostgreSQL: this migration's trigger functions, which add the jobs in
 * place (`0013_job_metrics_pending` replaces them, and puts them back on its
 * way down).
 */
export function inPlaceFunctions(): string[] {
  return pgTriggerFunctions(
    (source) => `IF EXISTS (SELECT 1 FROM ${source} s) THEN
      PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.job_metrics'));
      ${bulkUpserts(source, 'postgres').join(';\n      ')};
    END IF;`,
  );
}

/** The pending table, with `integer` (SQLite) or `bigint` (PostgreSQL) for its numbers, and `options` after it. */
export function pendingTableDdl(integer: 'integer' | 'bigint', options = ''): string {
  const numbers = new Set(['attempts', 'created_at', 'started_at', 'finished_at', 'updated_at']);
  return `CREATE TABLE ${PENDING_TABLE} (${PENDING_COLUMNS.map((c) => `${c} ${numbers.has(c) ? integer : 'text'}`).join(', ')})${options}`;
}

/**
 * Adds the jobs the history already holds as ended, so that the charts and
 * the counters start from the history rather than from zero. Exact because
 * it runs in the migration's transaction with the triggers already there:
 * on PostgreSQL, CREATE TRIGGER's lock on `jobs` keeps recorders out until
 * the commit, after which the triggers count what they write; SQLite has one
 * writer at a time anyway. Every tenant's rows: row-level security's `*`.
 */
async function backfill(db: Kysely<any>, dialect: Dialect): Promise<void> {
  if (dialect === 'postgres') await sql`select set_config(${TENANT_SETTING}, '*', true)`.execute(db);
  for (const statement of bulkUpserts(`(SELECT * FROM jobs WHERE status IN ${FINAL})`, dialect)) await sql.raw(statement).execute(db);
}

export function migration(dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      for (const t of TABLES) {
        const columns = [...t.keys.map((k) => `${k} ${k === 'period' ? 'bigint' : 'text'} NOT NULL`), ...VALUES.map((c) => `${c} bigint NOT NULL DEFAULT 0`)];
        await sql.raw(`CREATE TABLE ${t.name} (${columns.join(', ')}, PRIMARY KEY (${t.keys.join(', ')}))`).execute(db);
      }
      if (dialect === 'sqlite') {
        await backfill(db, dialect);
        await sql.raw(pendingTableDdl('integer')).execute(db);
        const append = `INSERT INTO ${PENDING_TABLE} (${PENDING_COLUMNS.join(', ')}) VALUES (${PENDING_COLUMNS.map((c) => `NEW.${c}`).join(', ')})`;
        await sql.raw(`CREATE TRIGGER job_metrics_insert AFTER INSERT ON jobs WHEN NEW.status IN ${FINAL} BEGIN ${append}; END`).execute(db);
        await sql.raw(`CREATE TRIGGER job_metrics_update AFTER UPDATE OF status ON jobs WHEN NEW.status IN ${FINAL} AND OLD.status NOT IN ${FINAL} BEGIN ${append}; END`).execute(db);
        return;
      }
      for (const f of inPlaceFunctions()) await sql.raw(f).execute(db);
      await sql.raw('CREATE TRIGGER job_metrics_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_metrics_inserted()').execute(db);
      await sql
        .raw('CREATE TRIGGER job_metrics_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_metrics_updated()')
        .execute(db);
      await backfill(db, dialect);
    },
    async down(db: Kysely<any>) {
      const on = dialect === 'postgres' ? ' ON jobs' : '';
      await sql.raw(`DROP TRIGGER IF EXISTS job_metrics_insert${on}`).execute(db);
      await sql.raw(`DROP TRIGGER IF EXISTS job_metrics_update${on}`).execute(db);
      if (dialect === 'postgres') {
        await sql.raw('DROP FUNCTION IF EXISTS job_metrics_inserted()').execute(db);
        await sql.raw('DROP FUNCTION IF EXISTS job_metrics_updated()').execute(db);
      }
      for (const t of TABLES) await sql.raw(`DROP TABLE IF EXISTS ${t.name}`).execute(db);
      await sql.raw(`DROP TABLE IF EXISTS ${PENDING_TABLE}`).execute(db);
    },
  };
}
