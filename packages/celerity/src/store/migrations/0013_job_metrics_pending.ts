import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';
import { bulkUpserts, inPlaceFunctions, PENDING_COLUMNS, PENDING_TABLE, pendingTableDdl, pgTriggerFunctions } from './0009_job_metrics.ts';

/**
 * PostgreSQL (nothing on SQLite, which has worked this way since 0009): the
 * triggers on `jobs` append the jobs a statement made final to
 * `job_metrics_pending`, in the recorder's transaction as before, and
 * `job_metrics_fold()` adds them into the three metrics tables later, for
 * many batches at once.
 *
 * Why: 0009's triggers ran the three 116-column upserts in every recorder
 * batch that ended a job. Measured on a PostgreSQL sharing two cores with
 * the jobs, that cost its backend 0.6-1.0 ms of CPU per batch whatever the
 * batch's size, twice the cost of the batch's own update at a few dozen
 * rows; the append costs 0.05-0.1 ms (docs/benchmarks.md, run 17).
 *
 * Still exactly once: a job is appended only by the transaction that makes
 * its row final, and rolls back with it; the fold deletes the rows it adds
 * in the statement that adds them, so a row is added by the one fold whose
 * delete took it (a concurrent fold's delete skips a row already deleted).
 * The fold takes 0009's advisory lock, so that concurrent folds add into the
 * shared rows one after the other instead of deadlocking on them; the lock
 * comes before the delete's snapshot, so a fold that waited sees the rows
 * the other left. Recorders fold at most once a second
 * (`METRICS_FOLD_EVERY_MS`), readers before they read.
 */
export function migration(dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      // Every row is deleted within a second or so of its insert: the table's
      // pages are dead rows until a vacuum, and each fold and reader scans
      // them. Vacuumed after every 1,000 dead rows, at full speed, rather than
      // after 20% of a table that has no live rows to speak of.
      await sql
        .raw(
          pendingTableDdl(
            'bigint',
            ' WITH (autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_cost_delay = 0)',
          ),
        )
        .execute(db);
      const columns = PENDING_COLUMNS.join(', ');
      for (const f of pgTriggerFunctions((source) => `INSERT INTO ${PENDING_TABLE} (${columns}) SELECT ${columns} FROM ${source} s;`)) await sql.raw(f).execute(db);
      const [fold] = bulkUpserts('p', 'postgres', `p AS (DELETE FROM ${PENDING_TABLE} RETURNING *), `);
      await sql
        .raw(
          `CREATE FUNCTION job_metrics_fold() RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $body$
BEGIN
  IF EXISTS (SELECT 1 FROM ${PENDING_TABLE}) THEN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.job_metrics'));
    ${fold};
  END IF;
END
$body$`,
        )
        .execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      // What is pending is added first, as 0009's triggers would have.
      await sql.raw('SELECT job_metrics_fold()').execute(db);
      for (const f of inPlaceFunctions()) await sql.raw(f).execute(db);
      await sql.raw('DROP FUNCTION IF EXISTS job_metrics_fold()').execute(db);
      await sql.raw(`DROP TABLE IF EXISTS ${PENDING_TABLE}`).execute(db);
    },
  };
}
