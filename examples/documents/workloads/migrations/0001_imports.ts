import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from 'celerity';

/**
 * `imported_records`: the rows of `csv.import` jobs (workloads/csv).
 * Keyed by the job and the record's line in the source file, so that a
 * retried attempt re-inserting the same lines adds nothing.
 */
export function migration(dialect: Dialect): Migration {
  // Epoch milliseconds overflow PostgreSQL's 4-byte integer; SQLite's integer is 8 bytes.
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('imported_records')
        .addColumn('job_id', 'text', (c) => c.notNull())
        .addColumn('line', 'integer', (c) => c.notNull())
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('summary', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('assignee', 'text')
        .addColumn('created_at', sql.raw(bigint), (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('imported_records_pk', ['job_id', 'line'])
        .execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('imported_records').execute();
    },
  };
}
