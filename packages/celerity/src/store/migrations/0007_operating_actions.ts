import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from '../db.ts';

/**
 * Operating actions (docs/semantics.md, "Operating actions"):
 * - `jobs.retry_of`: a retry is a new job that names the job it retries; the
 *   index finds a job's retries (the double-click guard asks whether one is
 *   still unfinished).
 * - `bulk_operations`: the audit log of bulk actions (who, what, when, how
 *   many), which is also where a running one keeps its progress and its
 *   cursor, so that it resumes where it was after a worker crash.
 */
export function migration(dialect: Dialect): Migration {
  const bigint = sql.raw(dialect === 'postgres' ? 'bigint' : 'integer');
  return {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('jobs').addColumn('retry_of', 'text').execute();
      await db.schema.createIndex('jobs_retry_of').on('jobs').columns(['retry_of', 'created_at']).execute();
      await db.schema
        .createTable('bulk_operations')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('action', 'text', (c) => c.notNull())
        // JSON: the filter as given, and the confinement of the key that started it.
        .addColumn('filter', 'text', (c) => c.notNull())
        .addColumn('tenant', 'text')
        .addColumn('all_tenants', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('task_patterns', 'text')
        .addColumn('key_id', 'text')
        .addColumn('key_name', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('matched', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('done', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('failed', 'integer', (c) => c.notNull().defaultTo(0))
        // JSON array of the first failures ({job_id, code, message}).
        .addColumn('errors', 'text')
        .addColumn('cursor', 'text')
        .addColumn('created_at', bigint, (c) => c.notNull())
        .addColumn('started_at', bigint)
        .addColumn('finished_at', bigint)
        .execute();
      await db.schema.createIndex('bulk_operations_tenant_created').on('bulk_operations').columns(['tenant', 'created_at']).execute();
      await db.schema.createIndex('bulk_operations_created').on('bulk_operations').columns(['created_at']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('bulk_operations').execute();
      await db.schema.dropIndex('jobs_retry_of').execute();
      await db.schema.alterTable('jobs').dropColumn('retry_of').execute();
    },
  };
}
