import { Kysely, Migrator, sql, type Migration, type MigrationProvider } from 'kysely';
import type { Dialect } from './db.ts';
import { migration as imports } from './migrations/0003_imports.ts';
import { migration as documents } from './migrations/0004_documents.ts';
import { migration as ticketEnhancements } from './migrations/0005_ticket_enhancements.ts';
import { migration as listOrder } from './migrations/0006_list_order.ts';

/**
 * Migrations live in code, in order, so that they ship inside the package.
 * Never edit one that has been released: add the next.
 */
function migrations(dialect: Dialect): Record<string, Migration> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    '0001_jobs': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('jobs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('task', 'text', (c) => c.notNull())
          .addColumn('queue', 'text', (c) => c.notNull())
          .addColumn('tenant', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('max_attempts', 'integer', (c) => c.notNull().defaultTo(1))
          .addColumn('input', 'text')
          .addColumn('result', 'text')
          .addColumn('error_type', 'text')
          .addColumn('error_message', 'text')
          .addColumn('error_stack', 'text')
          .addColumn('progress', 'text')
          .addColumn('created_at', sql.raw(bigint), (c) => c.notNull())
          .addColumn('started_at', sql.raw(bigint))
          .addColumn('finished_at', sql.raw(bigint))
          .addColumn('updated_at', sql.raw(bigint), (c) => c.notNull())
          .addColumn('event_seq', 'text', (c) => c.notNull())
          .execute();
        // The list endpoint pages by id (time-ordered) within a filter.
        await db.schema.createIndex('jobs_status_id').on('jobs').columns(['status', 'id']).execute();
        await db.schema.createIndex('jobs_task_id').on('jobs').columns(['task', 'id']).execute();
        await db.schema.createIndex('jobs_tenant_id').on('jobs').columns(['tenant', 'id']).execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable('jobs').execute();
      },
    },
    '0002_attempt_history': {
      async up(db: Kysely<any>) {
        // JSON array of attempts; null means one attempt, told by the row's own times.
        await db.schema.alterTable('jobs').addColumn('attempt_history', 'text').execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.alterTable('jobs').dropColumn('attempt_history').execute();
      },
    },
    // The workloads' tables (src/workloads): one file each.
    '0003_imports': imports(dialect),
    '0004_documents': documents(dialect),
    '0005_ticket_enhancements': ticketEnhancements(dialect),
    '0006_list_order': listOrder(),
  };
}

export async function migrateToLatest(db: Kysely<any>, dialect: Dialect, schema?: string): Promise<void> {
  const provider: MigrationProvider = { getMigrations: async () => migrations(dialect) };
  const migrator = new Migrator({ db, provider, migrationTableName: 'celerity_migrations', migrationLockTableName: 'celerity_migrations_lock', ...(schema ? { migrationTableSchema: schema } : {}) });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    throw new Error(`Migration ${failed?.migrationName ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}
