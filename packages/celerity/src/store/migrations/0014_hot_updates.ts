import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';

/**
 * PostgreSQL (nothing on SQLite): the recorder's update of a job that
 * starts or ends becomes a HOT update, which writes no index entry.
 *
 * PostgreSQL updates a row by writing a new version of it. Unless no
 * indexed column changes and the new version fits on the old one's page,
 * every index of the table gets an entry for the new version: with the
 * history's indexes, a job's completion cost more than its insert
 * (docs/benchmarks.md, runs 17 and 19). A start or an end changes `status`
 * and `finished_at`, which three indexes covered:
 * - `jobs_status_created` and `jobs_tenant_status_created`, the status
 *   filter of searches: a search by status now walks the list order
 *   (`jobs_created`, or a tenant's `jobs_tenant_created`), checking the
 *   status row by row in chunks under the search's time budget
 *   (store/job-search.ts), as for an error text. Most statuses are common
 *   among the newest jobs, where the walk starts;
 * - `jobs_finished`, the purge's `finished_at < cutoff`: the purge now also
 *   bounds `created_at`, which `jobs_created` serves (a job finished before
 *   the cutoff was created before it).
 *
 * `fillfactor = 50` leaves half of each new page free, so that the version
 * a job's start or end writes fits beside the one its enqueue wrote; pages
 * written before this migration keep their density (the setting applies as
 * pages are filled, and needs no rewrite of the table).
 *
 * The indexes that remain cover columns a job's start and end leave alone
 * (`id`, `created_at`, `task`, `queue`, `tenant`, `key_id`, `retry_of`) or
 * that only a failure changes (`error_message`, in the predicates of the
 * error indexes). `hot-updates.test.ts` holds that line.
 */
export function migration(dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      for (const name of ['jobs_status_created', 'jobs_tenant_status_created', 'jobs_finished']) await db.schema.dropIndex(name).ifExists().execute();
      await sql`alter table jobs set (fillfactor = 50)`.execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      await sql`alter table jobs reset (fillfactor)`.execute(db);
      // As 0003, 0008 and 0011 left them.
      await db.schema.createIndex('jobs_status_created').on('jobs').columns(['status', 'created_at', 'id']).execute();
      await db.schema.createIndex('jobs_tenant_status_created').on('jobs').columns(['tenant', 'status', 'created_at', 'id']).where(sql.ref('tenant'), 'is not', null).execute();
      await db.schema.createIndex('jobs_finished').on('jobs').column('finished_at').where(sql.ref('finished_at'), 'is not', null).execute();
    },
  };
}
