/**
 * PostgreSQL: the recorders vacuum the metrics' pending table themselves
 * (store/job-metrics.ts, vacuumPendingMetrics), so that a server without
 * autovacuum does not leave its folds scanning ever more dead rows.
 */
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { readTotals } from '../src/store/job-metrics.ts';
import type { App } from '../src/index.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startCustomRecorder, startWorker, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const echo = defineTask({ name: 'vacuum.echo', input: z.object({ n: z.number() }), handler: async ({ n }) => n });

/** The pending table's statistics, read on the store's own connection. */
async function pendingStats(app: App, schema: string): Promise<{ vacuums: number } | undefined> {
  const { rows } = await sql<{ vacuum_count: string }>`select vacuum_count from pg_stat_user_tables where schemaname = ${schema} and relname = 'job_metrics_pending'`.execute(app.store.db);
  return rows[0] && { vacuums: Number(rows[0].vacuum_count) };
}

describe('the metrics pending table (postgres store)', () => {
  it('is vacuumed by the recorder after every so many entries, whether autovacuum runs or not', async () => {
    const app = await openTestApp('postgres', [echo], { recorderYield: 0 });
    const schema = app.env.schema!;
    const recorder = await startCustomRecorder(app, { vacuumEveryEntries: 200 });
    await startWorker(app, { concurrency: 20 });
    const n = 300;
    const vacuumed = (count: number) =>
      waitFor(async () => {
        const stats = await pendingStats(app, schema);
        return stats && stats.vacuums >= count ? stats : undefined;
      }, 20_000);
    // Twice: a vacuum is due once a recorder has recorded 200 entries since its last, after its next fold (at most once a second).
    for (const round of [1, 2]) {
      for (let i = 0; i < n; i++) await app.enqueue(echo, { n: i });
      // Four entries a job (added, waiting, active, completed): 1,200 entries a round.
      await waitFor(async () => (recorder.recorded >= 4 * n * round ? true : undefined), 30_000);
      // `vacuum_count` counts VACUUM commands only (autovacuum has a count of its own).
      expect((await vacuumed(round)).vacuums).toBeGreaterThanOrEqual(round);
    }
    // The jobs were counted, none twice: what was folded before each vacuum is in the metrics, what followed too.
    await waitFor(async () => ((await readTotals(app.store)).find((t) => t.task === echo.name)?.completed === 2 * n ? true : undefined), 15_000);
  });
});
