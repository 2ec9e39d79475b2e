import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from '../db.ts';

/**
 * `job_logs`: a finished job's log lines (what its handler logged through
 * `ctx.log`), copied by the recorder from the job's BullMQ log, so that they
 * outlive Redis. A table of its own rather than a column of `jobs`: searches
 * read whole `jobs` rows, and a job's lines may weigh hundreds of KB. Only
 * jobs that logged have a row. Reads go through the job's own (tenant-scoped)
 * read first. `updated_at` serves the purge.
 */
export function migration(dialect: Dialect): Migration {
  const bigint = sql.raw(dialect === 'postgres' ? 'bigint' : 'integer');
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('job_logs')
        .addColumn('id', 'text', (c) => c.primaryKey())
        // JSON array of JobLogRow, oldest first.
        .addColumn('lines', 'text', (c) => c.notNull())
        .addColumn('updated_at', bigint, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('job_logs_updated').on('job_logs').columns(['updated_at']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('job_logs').execute();
    },
  };
}
