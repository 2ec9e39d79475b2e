import type { Kysely, Migration } from 'kysely';
import type { Dialect } from 'celerity';

/**
 * `documents.tenant`: the tenant of the `pdf.ingest` job that indexed the
 * document (null: a job without a tenant). A search or an assessment reads a
 * document only within its caller's tenant; pages and chunks are reached
 * through their document, so the one column scopes them too. Documents
 * indexed before this migration have no tenant.
 *
 * No index: every read finds documents by id (primary key) or from the
 * full-text match, then checks the tenant of those rows; none lists a
 * tenant's documents.
 */
export function migration(_dialect: Dialect): Migration {
  return {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('documents').addColumn('tenant', 'text').execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.alterTable('documents').dropColumn('tenant').execute();
    },
  };
}
