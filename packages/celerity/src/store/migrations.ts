import { type Kysely, Migrator, sql, type Migration, type MigrationProvider } from 'kysely';
import type { Dialect } from './db.ts';
import { migration as listOrder } from './migrations/0003_list_order.ts';
import { migration as apiKeys } from './migrations/0004_api_keys.ts';
import { migration as jobKeyId } from './migrations/0005_job_key_id.ts';
import { migration as rowLevelSecurity } from './migrations/0006_row_level_security.ts';
import { migration as operatingActions } from './migrations/0007_operating_actions.ts';
import { migration as searchIndexes } from './migrations/0008_search_indexes.ts';
import { migration as jobMetrics } from './migrations/0009_job_metrics.ts';
import { migration as jobLogs } from './migrations/0010_job_logs.ts';
import { migration as leanIndexes } from './migrations/0011_lean_indexes.ts';
import { migration as jobLogsRowSecurity } from './migrations/0012_job_logs_row_security.ts';
import { migration as jobMetricsPending } from './migrations/0013_job_metrics_pending.ts';
import { migration as hotUpdates } from './migrations/0014_hot_updates.ts';
import { setupError } from './setup-errors.ts';

/**
 * Celerity's own migrations, in code so that they ship inside the package,
 * versioned apart from any app's table set (see `defineTables`). Never edit
 * one that has been released: add the next.
 */
export function coreMigrations(dialect: Dialect): Record<string, Migration> {
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
    '0003_list_order': listOrder(),
    '0004_api_keys': apiKeys(dialect),
    '0005_job_key_id': jobKeyId(),
    '0006_row_level_security': rowLevelSecurity(dialect),
    '0007_operating_actions': operatingActions(dialect),
    '0008_search_indexes': searchIndexes(dialect),
    '0009_job_metrics': jobMetrics(dialect),
    '0010_job_logs': jobLogs(dialect),
    '0011_lean_indexes': leanIndexes(),
    '0012_job_logs_row_security': jobLogsRowSecurity(dialect),
    '0013_job_metrics_pending': jobMetricsPending(dialect),
    '0014_hot_updates': hotUpdates(dialect),
  };
}

export interface MigrationTarget {
  /** Names the history table, `<name>_migrations`. */
  name: string;
  /** PostgreSQL schema that holds the tables and their history; created if missing. */
  schema: string | undefined;
  /** What a clash (a table of the same name that is not ours) names: the setting at fault and the fix. */
  clash: { setting: string; fix: string };
}

/**
 * Brings one migration history to its latest version. Two processes starting
 * together on a fresh store may collide (Kysely has no migration lock for
 * SQLite, and on PostgreSQL two racing `create table if not exists` of its
 * lock table can still conflict): the loser retries and finds the work done.
 * Failures a user must fix (no database, refused credentials, a table of the
 * same name) come out as one-line {@link StoreSetupError}s.
 */
export async function migrate(db: Kysely<any>, migrations: Record<string, Migration>, target: MigrationTarget): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      if (target.schema) {
        // Two processes creating the schema at once: the loser gets a unique violation.
        await sql`create schema if not exists ${sql.id(target.schema)}`.execute(db).catch((err: { code?: string }) => {
          if (err.code !== '23505' && err.code !== '42P06') throw err;
        });
      }
      return await migrateOnce(db, migrations, target);
    } catch (err) {
      // A clash can also be a race (two processes creating the same table on
      // SQLite): only one that outlives the retries is a real clash.
      const fatal = setupError(err, target);
      if (fatal && (!fatal.details.clash || attempt >= 5)) throw fatal;
      if (attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

/**
 * Runs the pending migrations; returns the names of migrations the store has
 * run that this version does not know, all after its own last one: a newer
 * version migrated the store (a rolling deploy under way, a restart of an
 * old process, a rollback). Migrations only add to the schema (docs/deploy.md,
 * "Migrations first"), so this version works on it as it is, where Kysely
 * would refuse to start ("previously executed migration … is missing"). An
 * unknown name among this version's own is still refused.
 */
async function migrateOnce(db: Kysely<any>, migrations: Record<string, Migration>, target: MigrationTarget): Promise<string[]> {
  const known = Object.keys(migrations).sort();
  const last = known.at(-1) ?? '';
  const newer = (await executedMigrations(db, target)).filter((name) => !(name in migrations) && name > last);
  // Already run, so never run again: they only keep Kysely's check quiet.
  const provider: MigrationProvider = { getMigrations: async () => ({ ...migrations, ...Object.fromEntries(newer.map((name) => [name, { up: async () => {} }])) }) };
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: `${target.name}_migrations`,
    migrationLockTableName: `${target.name}_migrations_lock`,
    ...(target.schema ? { migrationTableSchema: target.schema } : {}),
  });
  const { error, results } = await migrator.migrateToLatest();
  if (!error) return newer;
  const failed = results?.find((r) => r.status === 'Error');
  // The driver's error keeps its code (for setupError); the migration's name rides along.
  if (error instanceof Error && failed) error.message = `migration ${target.name}/${failed.migrationName}: ${error.message}`;
  throw error;
}

/** The migrations a store's history says were run; none when it has no history yet. */
async function executedMigrations(db: Kysely<any>, target: MigrationTarget): Promise<string[]> {
  const table = target.schema ? db.withSchema(target.schema) : db;
  try {
    const rows = await table.selectFrom(`${target.name}_migrations`).select('name').execute();
    return rows.map((r: { name: string }) => r.name);
  } catch {
    // No history table yet (a fresh store), or the store is unreachable: the migrator says which.
    return [];
  }
}
