import { sql } from 'kysely';
import { ALL_TENANTS, type TenantScope } from '../auth/principal.ts';
import { jobLogLines, type JobLogRow } from '../job-record.ts';
import type { JobStore } from './job-store.ts';
import { withTenantScope } from './tenant-scope.ts';

/** A job's log rows as read from Redis, to keep. */
export interface KeptLogs {
  id: string;
  /** The job's BullMQ log rows (attempt rows among them: only log lines are kept). */
  rows: readonly string[];
}

/**
 * Copies jobs' log lines into `job_logs` (migration 0010). A job's lines
 * only grow (its BullMQ log is append-only, capped), so a longer list is a
 * newer one: a recorder that read the list earlier and writes later cannot
 * replace it with fewer lines. Jobs without lines write nothing. Rows are
 * sorted by id, so concurrent recorders lock in the same order. Written in
 * the every-tenant scope, the only one row-level security lets write
 * (migration 0012).
 */
export async function keepJobLogs(store: JobStore, jobs: readonly KeptLogs[], now: number = Date.now()): Promise<number> {
  const values = jobs
    .map((j) => ({ id: j.id, lines: jobLogLines(j.rows) }))
    .filter((j) => j.lines.length > 0)
    .map((j) => ({ id: j.id, lines: JSON.stringify(j.lines), updated_at: now }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (values.length === 0) return 0;
  await withTenantScope(store, ALL_TENANTS, (db) =>
    db
      .insertInto('job_logs')
      .values(values)
      .onConflict((oc) =>
        oc
          .column('id')
          .doUpdateSet({ lines: (eb) => eb.ref('excluded.lines'), updated_at: (eb) => eb.ref('excluded.updated_at') })
          .where(sql<boolean>`length(excluded.lines) > length(job_logs.lines)`),
      )
      .execute(),
  );
  return values.length;
}

/**
 * The kept lines of a job, oldest first; null when none were kept. The
 * caller checks that the job is the reader's to see; on PostgreSQL,
 * row-level security checks it again: outside `scope`, no lines.
 */
export async function readKeptLogs(store: JobStore, id: string, scope: TenantScope): Promise<JobLogRow[] | null> {
  const row = await withTenantScope(store, scope, (db) => db.selectFrom('job_logs').select('lines').where('id', '=', id).executeTakeFirst());
  return row ? (JSON.parse(row.lines) as JobLogRow[]) : null;
}

/** Forgets a deleted job's lines. */
export async function forgetJobLogs(store: JobStore, id: string): Promise<void> {
  await withTenantScope(store, ALL_TENANTS, (db) => db.deleteFrom('job_logs').where('id', '=', id).execute());
}

/** Removes lines kept before `cutoff` (ms): the history's retention, applied by the purge. */
export async function purgeJobLogs(store: JobStore, cutoff: number): Promise<number> {
  const res = await withTenantScope(store, ALL_TENANTS, (db) => db.deleteFrom('job_logs').where('updated_at', '<', cutoff).executeTakeFirst());
  return Number(res.numDeletedRows);
}
