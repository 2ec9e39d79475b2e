import { sql, type Kysely, type Migration } from 'kysely';
import type { Dialect } from 'celerity';

/**
 * `ticket_enhancements`: one row per `ticket.enhance` job (pending →
 * completed | failed), the history a support tool reads back.
 */
export function migration(dialect: Dialect): Migration {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  return {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('ticket_enhancements')
        .addColumn('job_id', 'text', (c) => c.primaryKey())
        .addColumn('ticket_id', 'text', (c) => c.notNull())
        .addColumn('tenant_id', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('priority', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('enhancement', 'text')
        .addColumn('error', 'text')
        .addColumn('created_at', sql.raw(bigint), (c) => c.notNull())
        .addColumn('updated_at', sql.raw(bigint), (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ticket_enhancements_ticket').on('ticket_enhancements').columns(['tenant_id', 'ticket_id']).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.dropTable('ticket_enhancements').execute();
    },
  };
}
