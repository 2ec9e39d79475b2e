import type { Kysely, Migration } from 'kysely';

/**
 * Lists page by creation time, not by id: ids are time-ordered only when
 * Celerity makes them (a caller's job_id, or a scheduler's
 * `repeat:<id>:<tick>`, sorts anywhere). And the purge finds old rows by
 * `finished_at`.
 */
export function migration(): Migration {
  const lists = [
    ['jobs_created', ['created_at', 'id']],
    ['jobs_status_created', ['status', 'created_at', 'id']],
    ['jobs_task_created', ['task', 'created_at', 'id']],
    ['jobs_tenant_created', ['tenant', 'created_at', 'id']],
  ] as const;
  return {
    async up(db: Kysely<any>) {
      for (const [name, columns] of lists)
        await db.schema
          .createIndex(name)
          .on('jobs')
          .columns([...columns])
          .execute();
      await db.schema.createIndex('jobs_finished').on('jobs').column('finished_at').execute();
      for (const old of ['jobs_status_id', 'jobs_task_id', 'jobs_tenant_id']) await db.schema.dropIndex(old).execute();
    },
    async down(db: Kysely<any>) {
      await db.schema.createIndex('jobs_status_id').on('jobs').columns(['status', 'id']).execute();
      await db.schema.createIndex('jobs_task_id').on('jobs').columns(['task', 'id']).execute();
      await db.schema.createIndex('jobs_tenant_id').on('jobs').columns(['tenant', 'id']).execute();
      for (const [name] of lists) await db.schema.dropIndex(name).execute();
      await db.schema.dropIndex('jobs_finished').execute();
    },
  };
}
