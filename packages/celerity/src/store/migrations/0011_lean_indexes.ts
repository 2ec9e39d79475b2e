import { type Kysely, type Migration, sql } from 'kysely';

/**
 * Leaves out of the history's indexes the rows no query looks up in them.
 *
 * Every recorder write pays for every index it touches: a job is inserted
 * when it is queued and updated when it ends, and that update changes
 * `status`, so it is never a HOT update and adds an entry to every index.
 * Measured on PostgreSQL 15 (20,000 rows, one statement each), the thirteen
 * indexes made an insert 5.6× and an update 6× as costly as the primary key
 * alone; docs/benchmarks.md, run 8.
 *
 * These indexes serve only equality or range conditions on a column that is
 * null for most rows (or for a job until it ends), and such a condition
 * implies the column is not null, so both planners use a partial index for
 * them:
 * - `jobs_key_created`: `key_id = ?` (jobs submitted in-process have no key);
 * - `jobs_retry_of`: `retry_of = ?` (only retries have one);
 * - `jobs_finished`: the purge's `finished_at < ?` (no queued or running job);
 * - `jobs_tenant_created`, `jobs_tenant_status_created` and
 *   `jobs_tenant_errors_created`: `tenant = ?`, a tenant key's scope and the
 *   tenant filter (jobs without a tenant are most jobs of a single-tenant
 *   app). The one query they no longer serve is the scope of a key without
 *   a tenant that is not an admin (`tenant is null`), which reads the status
 *   or creation index and checks the tenant row by row (docs/search.md).
 *
 * On an existing history the upgrade rebuilds these six indexes in the
 * migration's transaction, `jobs` locked until it commits (docs/deploy.md,
 * "Migrations first").
 */
export function migration(): Migration {
  const partial: [name: string, columns: string[], where: string, old: string][] = [
    ['jobs_key_created', ['key_id', 'created_at', 'id'], 'key_id is not null', ''],
    ['jobs_retry_of', ['retry_of', 'created_at'], 'retry_of is not null', ''],
    ['jobs_finished', ['finished_at'], 'finished_at is not null', ''],
    ['jobs_tenant_created', ['tenant', 'created_at', 'id'], 'tenant is not null', ''],
    ['jobs_tenant_status_created', ['tenant', 'status', 'created_at', 'id'], 'tenant is not null', ''],
    ['jobs_tenant_errors_created', ['tenant', 'created_at', 'id'], 'error_message is not null and tenant is not null', 'error_message is not null'],
  ];
  const create = async (db: Kysely<any>, name: string, columns: string[], where: string) => {
    await db.schema.dropIndex(name).execute();
    const index = db.schema.createIndex(name).on('jobs').columns(columns);
    await (where ? index.where(sql.raw<boolean>(where)) : index).execute();
  };
  return {
    async up(db: Kysely<any>) {
      for (const [name, columns, where] of partial) await create(db, name, columns, where);
    },
    async down(db: Kysely<any>) {
      for (const [name, columns, , old] of partial) await create(db, name, columns, old);
    },
  };
}
