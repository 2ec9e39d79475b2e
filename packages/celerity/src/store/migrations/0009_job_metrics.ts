import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';

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
 * SQLite: row triggers (the writer is in-process, one at a time).
 * PostgreSQL: statement triggers with transition tables, which add a whole
 * batch in one upsert per key; they take a transaction-level advisory lock
 * first so that concurrent recorders add into the shared rows one after the
 * other instead of deadlocking on them in different orders.
 *
 * The buckets are frozen here, apart from `src/ops/histogram.ts` which reads
 * them: this migration must never change once released. Bucket 0 holds 0 ms,
 * bucket k holds ms from ceil(2^((k-1)/2)), bucket 53 everything from 2^26.
 */
const BUCKETS = 54;
const LOWER = Array.from({ length: BUCKETS }, (_, k) => (k === 0 ? 0 : Math.ceil(2 ** ((k - 1) / 2))));
const FINAL = `('completed', 'failed', 'cancelled')`;

const bucketColumns = (kind: 'wait' | 'run') => Array.from({ length: BUCKETS }, (_, k) => `${kind}_b${String(k).padStart(2, '0')}`);
const VALUES = ['completed', 'failed', 'cancelled', 'retries', 'wait_count', 'wait_sum_ms', 'run_count', 'run_sum_ms', ...bucketColumns('wait'), ...bucketColumns('run')];

const TABLES = [
  { name: 'job_metrics_minute', keys: ['period', 'queue', 'task'], keyExprs: ['ended - ended % 60000', 'queue', 'task'] },
  { name: 'job_metrics_hour', keys: ['period', 'queue', 'task'], keyExprs: ['ended - ended % 3600000', 'queue', 'task'] },
  { name: 'job_metrics_total', keys: ['queue', 'task'], keyExprs: ['queue', 'task'] },
] as const;

function bucketCase(v: string): string {
  const whens = [];
  for (let k = BUCKETS - 1; k > 0; k--) whens.push(`WHEN ${v} >= ${LOWER[k]} THEN ${k}`);
  return `CASE WHEN ${v} IS NULL THEN -1 ${whens.join(' ')} ELSE 0 END`;
}

/**
 * One row per job of `source` (rows of `jobs` that just became final): when
 * it ended, its wait (created to started, first attempts only: a retried
 * job's start is its last attempt's, after the earlier ones and their
 * backoff) and its run (the final attempt), and their buckets.
 */
function derived(source: string, dialect: Dialect): string {
  const max = dialect === 'postgres' ? 'GREATEST' : 'MAX';
  return `SELECT queue, task, status, attempts, ended, w, r, ${bucketCase('w')} AS wb, ${bucketCase('r')} AS rb FROM (
    SELECT queue, task, status, attempts, COALESCE(finished_at, updated_at) AS ended,
      CASE WHEN attempts <= 1 AND started_at IS NOT NULL THEN ${max}(0, started_at - created_at) END AS w,
      CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL THEN ${max}(0, finished_at - started_at) END AS r
    FROM ${source} AS src) x`;
}

function aggregates(): string[] {
  const count = (cond: string) => `SUM(CASE WHEN ${cond} THEN 1 ELSE 0 END)`;
  return [
    count(`status = 'completed'`),
    count(`status = 'failed'`),
    count(`status = 'cancelled'`),
    `SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END)`,
    count('w IS NOT NULL'),
    'COALESCE(SUM(w), 0)',
    count('r IS NOT NULL'),
    'COALESCE(SUM(r), 0)',
    ...Array.from({ length: BUCKETS }, (_, k) => count(`wb = ${k}`)),
    ...Array.from({ length: BUCKETS }, (_, k) => count(`rb = ${k}`)),
  ];
}

/** The three upserts that add `source`'s jobs into the metrics tables. */
function upserts(source: string, dialect: Dialect): string[] {
  const aggs = aggregates();
  return TABLES.map(
    (t) => `INSERT INTO ${t.name} (${[...t.keys, ...VALUES].join(', ')})
    SELECT ${[...t.keyExprs, ...aggs].join(', ')} FROM (${derived(source, dialect)}) d WHERE true GROUP BY ${t.keyExprs.join(', ')}
    ON CONFLICT (${t.keys.join(', ')}) DO UPDATE SET ${VALUES.map((c) => `${c} = ${t.name}.${c} + excluded.${c}`).join(', ')}`,
  );
}

const NEW_ROW = `(SELECT NEW.queue AS queue, NEW.task AS task, NEW.status AS status, NEW.attempts AS attempts, NEW.created_at AS created_at,
  NEW.started_at AS started_at, NEW.finished_at AS finished_at, NEW.updated_at AS updated_at)`;

function pgFunction(name: string, source: string): string {
  return `CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $body$
BEGIN
  IF EXISTS (SELECT 1 FROM ${source} s) THEN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.job_metrics'));
    ${upserts(source, 'postgres').join(';\n    ')};
  END IF;
  RETURN NULL;
END
$body$`;
}

export function migration(dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      for (const t of TABLES) {
        const columns = [...t.keys.map((k) => `${k} ${k === 'period' ? 'bigint' : 'text'} NOT NULL`), ...VALUES.map((c) => `${c} bigint NOT NULL DEFAULT 0`)];
        await sql.raw(`CREATE TABLE ${t.name} (${columns.join(', ')}, PRIMARY KEY (${t.keys.join(', ')}))`).execute(db);
      }
      if (dialect === 'sqlite') {
        await sql.raw(`CREATE TRIGGER job_metrics_insert AFTER INSERT ON jobs WHEN NEW.status IN ${FINAL} BEGIN ${upserts(NEW_ROW, dialect).join('; ')}; END`).execute(db);
        await sql
          .raw(`CREATE TRIGGER job_metrics_update AFTER UPDATE OF status ON jobs WHEN NEW.status IN ${FINAL} AND OLD.status NOT IN ${FINAL} BEGIN ${upserts(NEW_ROW, dialect).join('; ')}; END`)
          .execute(db);
        return;
      }
      await sql.raw(pgFunction('job_metrics_inserted', `(SELECT * FROM new_rows WHERE status IN ${FINAL})`)).execute(db);
      await sql.raw(pgFunction('job_metrics_updated', `(SELECT n.* FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE n.status IN ${FINAL} AND o.status NOT IN ${FINAL})`)).execute(db);
      await sql.raw('CREATE TRIGGER job_metrics_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_metrics_inserted()').execute(db);
      await sql
        .raw('CREATE TRIGGER job_metrics_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_metrics_updated()')
        .execute(db);
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
    },
  };
}
