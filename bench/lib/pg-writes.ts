/**
 * How many row writes the history's `jobs` table took on PostgreSQL:
 * inserts, updates, and of those the HOT ones (migration 0014). Over an
 * enqueue and a drain, updates per job tell how often a job's start and
 * end were written apart (two batches, or two recorders) instead of folded
 * into one update, or its row inserted already finished.
 *
 * Read from `pg_stat_user_tables`, which each backend feeds when its
 * transaction ends, at most once a second and otherwise when it goes idle:
 * a reading waits a little past that first.
 */
import { sql } from 'kysely';
import type { App } from '../../packages/celerity/src/app.ts';
import { sleep } from './measure.ts';

export interface TableWrites {
  inserted: number;
  updated: number;
  hot_updated: number;
}

/** The writes the app's `jobs` table has taken so far (PostgreSQL; null on SQLite). */
export async function jobsTableWrites(app: App, settleMs = 2_000): Promise<TableWrites | null> {
  if (app.store.sqlite) return null;
  await sleep(settleMs);
  const { rows } = await sql<{ ins: string; upd: string; hot: string }>`
    select n_tup_ins as ins, n_tup_upd as upd, n_tup_hot_upd as hot
    from pg_stat_user_tables where schemaname = current_schema() and relname = 'jobs'`.execute(app.store.db);
  const row = rows[0];
  return row ? { inserted: Number(row.ins), updated: Number(row.upd), hot_updated: Number(row.hot) } : null;
}

/** The writes between two readings, per job, to two decimals. */
export function writesPerJob(before: TableWrites | null, after: TableWrites | null, jobs: number): TableWrites | null {
  if (!before || !after) return null;
  const per = (n: number) => Math.round((n / jobs) * 100) / 100;
  return { inserted: per(after.inserted - before.inserted), updated: per(after.updated - before.updated), hot_updated: per(after.hot_updated - before.hot_updated) };
}
