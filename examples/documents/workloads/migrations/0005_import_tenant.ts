import type { Kysely, Migration } from 'kysely';
import type { Dialect } from 'celerity';

/**
 * `imported_records.tenant`: the tenant of the `csv.import` job that stored
 * the row (null: a job without a tenant), so that a read of a job's rows can
 * be held to its caller's tenant. Rows imported before this migration have
 * no tenant. No index: rows are read by job id, the primary key's prefix.
 */
export function migration(_dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('imported_records').addColumn('tenant', 'text').execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.alterTable('imported_records').dropColumn('tenant').execute();
    },
  };
}
