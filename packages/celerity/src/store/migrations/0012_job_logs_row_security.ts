import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';
import { TENANT_SETTING } from '../tenant-scope.ts';

/**
 * Row-level security on `job_logs` (PostgreSQL; nothing on SQLite), the
 * defence in depth that 0006 gave `jobs`: a job's kept log lines are
 * visible in a scope exactly when its row in `jobs` is, which the policy
 * asks of `jobs` itself, so `jobs`' own policy decides (one index probe per
 * row read, and reads take one job's lines at a time). The `*` scope also
 * sees lines whose job is gone (the purge deletes the rows first). Only
 * that scope may write: the recorder copies the lines, a delete or the
 * purge removes them, each as every tenant. As on `jobs`, FORCE because
 * the migrating role owns the table.
 */
export function migration(dialect: Dialect): Migration {
  const all = sql.raw(`(select current_setting('${TENANT_SETTING}', true)) = '*'`);
  return {
    async up(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      await sql`alter table job_logs enable row level security`.execute(db);
      await sql`alter table job_logs force row level security`.execute(db);
      await sql`create policy job_logs_tenant_scope on job_logs using (${all} or exists (select 1 from jobs where jobs.id = job_logs.id)) with check (${all})`.execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      await sql`drop policy if exists job_logs_tenant_scope on job_logs`.execute(db);
      await sql`alter table job_logs no force row level security`.execute(db);
      await sql`alter table job_logs disable row level security`.execute(db);
    },
  };
}
