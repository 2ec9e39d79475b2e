import type { Kysely, Migration } from 'kysely';

/**
 * `key_id`: the public id of the API key that submitted the job (null when
 * none did). Lists filter on it newest first, hence the index's order, as
 * the other list indexes (0003_list_order).
 */
export function migration(): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('jobs').addColumn('key_id', 'text').execute();
      await db.schema.createIndex('jobs_key_created').on('jobs').columns(['key_id', 'created_at', 'id']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropIndex('jobs_key_created').execute();
      await db.schema.alterTable('jobs').dropColumn('key_id').execute();
    },
  };
}
