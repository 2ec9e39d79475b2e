import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';

/**
 * Indexes of the history's search (`searchJobs`). Every list reads newest
 * first, so each equality filter gets an index ending in the list order
 * (`created_at`, `id`): a page is then the first rows of one index range.
 *
 * - `jobs_queue_created`: the `queue` filter.
 * - `jobs_tenant_status_created`: a tenant key always searches within its
 *   tenant, and status is the filter people use most; without it a tenant's
 *   rare status (its few failures among a million completions) reads every
 *   row of the tenant.
 * - `jobs_errors_created` and `jobs_tenant_errors_created`, partial on the
 *   rows that have an error: a search of error text (a substring, which no
 *   B-tree can seek) walks only those, newest first, a small part of a
 *   history where most jobs succeed; the second for a tenant key, whose
 *   every search is within its tenant (without it, the tenant's index led
 *   to every one of its rows being read to find those with an error). No
 *   trigram index: pg_trgm is an extension not every PostgreSQL has, and
 *   SQLite has none.
 * - `jobs_id_pattern` (PostgreSQL): `id LIKE 'prefix%'` uses the primary key
 *   only under the C collation; `text_pattern_ops` serves it under any.
 *
 * Each index costs every recorder write that changes its columns; these
 * were chosen on EXPLAIN of the searches the benchmark runs (docs/search.md).
 */
export function migration(dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema.createIndex('jobs_queue_created').on('jobs').columns(['queue', 'created_at', 'id']).execute();
      await db.schema.createIndex('jobs_tenant_status_created').on('jobs').columns(['tenant', 'status', 'created_at', 'id']).execute();
      await db.schema.createIndex('jobs_errors_created').on('jobs').columns(['created_at', 'id']).where(sql.ref('error_message'), 'is not', null).execute();
      await db.schema.createIndex('jobs_tenant_errors_created').on('jobs').columns(['tenant', 'created_at', 'id']).where(sql.ref('error_message'), 'is not', null).execute();
      if (dialect === 'postgres') await sql`create index jobs_id_pattern on jobs (id text_pattern_ops)`.execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect === 'postgres') await db.schema.dropIndex('jobs_id_pattern').execute();
      for (const name of ['jobs_tenant_errors_created', 'jobs_errors_created', 'jobs_tenant_status_created', 'jobs_queue_created']) await db.schema.dropIndex(name).execute();
    },
  };
}
