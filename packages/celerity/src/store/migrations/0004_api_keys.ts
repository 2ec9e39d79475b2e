import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from '../db.ts';

/**
 * API keys: only the SHA-256 of each key's secret is kept (the key itself is
 * shown once, by `celerity keys create`). A revoked key keeps its row, so
 * that the jobs it submitted still name it.
 */
export function migration(dialect: Dialect): Migration {
  const bigint = sql.raw(dialect === 'postgres' ? 'bigint' : 'integer');
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('tenant', 'text')
        // JSON arrays: scopes, and task-name patterns (null: every task).
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('tasks', 'text')
        .addColumn('secret_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', bigint, (c) => c.notNull())
        .addColumn('revoked_at', bigint)
        .addColumn('last_used_at', bigint)
        .execute();
      await db.schema.createIndex('api_keys_name').on('api_keys').columns(['name']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('api_keys').execute();
    },
  };
}
