/**
 * PostgreSQL: the recorder's update of a job that starts or ends is a HOT
 * update, which writes no index entry (migration 0014). That holds while no
 * index of `jobs` covers a column a start or an end changes, and while the
 * new version of the row fits on its page (`fillfactor = 50`).
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import { withTenantScope } from '../src/store/tenant-scope.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startRecorder, startWorker, TEST_DATABASE_URL, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const echo = defineTask({
  name: 'hot.echo',
  input: z.object({ n: z.number() }),
  // A small result: the finished row's version then fits beside the queued one (a result of a few hundred bytes fits for fewer rows of
  // a page; one past ~2 kB is stored apart, TOAST, and the row holds a pointer to it).
  handler: async ({ n }) => ({ doubled: n * 2 }),
});

/** What a job's start and end change in its row (store/batch-upsert.ts); a failure also changes the error columns. */
const CHANGED_BY_START_AND_END = ['status', 'attempts', 'started_at', 'finished_at', 'result', 'progress', 'updated_at', 'event_seq', 'attempt_history', 'max_attempts'];

async function query<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

async function countByStatus(app: Awaited<ReturnType<typeof openTestApp>>, status: string): Promise<number> {
  const row = await withTenantScope(app.store, ALL_TENANTS, (db) =>
    db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('status', '=', status)
      .executeTakeFirstOrThrow(),
  );
  return Number(row.n);
}

describe('HOT updates of the history (postgres store)', () => {
  it('indexes no column that a job start or end changes, and leaves room on each page', async () => {
    const app = await openTestApp('postgres', [echo]);
    const schema = app.env.schema!;
    const indexes = await query<{ indexname: string; indexdef: string }>(`select indexname, indexdef from pg_indexes where schemaname = $1 and tablename = 'jobs'`, [schema]);
    expect(indexes.length).toBeGreaterThan(5);
    for (const { indexname, indexdef } of indexes) {
      for (const column of CHANGED_BY_START_AND_END) expect(indexdef, `${indexname} covers ${column}`).not.toMatch(new RegExp(`\\b${column}\\b`));
    }
    const [table] = await query<{ reloptions: string[] | null }>(`select c.reloptions from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = 'jobs'`, [
      schema,
    ]);
    expect(table?.reloptions).toContain('fillfactor=50');
  });

  it('moves queued rows to completed without writing a new index entry for most of them', async () => {
    const app = await openTestApp('postgres', [echo], { recorderYield: 0 });
    await startRecorder(app);
    const n = 300;
    for (let i = 0; i < n; i++) await app.enqueue(echo, { n: i });
    // Every row written as queued first, so that each completion is an update of it.
    await waitFor(async () => (await countByStatus(app, 'queued')) === n || undefined, 20_000);
    await startWorker(app, { concurrency: 20 });
    await waitFor(async () => (await countByStatus(app, 'completed')) === n || undefined, 30_000);
    // A backend reports its counts when idle (at most every few seconds) or when it ends: closing the app ends the store's connections.
    await app.close();
    const stats = await waitFor(
      async () => {
        const [row] = await query<{ upd: string; hot: string }>(`select n_tup_upd as upd, n_tup_hot_upd as hot from pg_stat_user_tables where schemaname = $1 and relname = 'jobs'`, [app.env.schema!]);
        return row && Number(row.upd) >= n ? { updated: Number(row.upd), hot: Number(row.hot) } : undefined;
      },
      20_000,
      100,
    );
    // Measured here: 80% (a page filled to half by queued rows has room for the finished versions of four in five of them; the
    // bench's no-op jobs, whose finished rows are as small as their queued ones: 90%). With a status index, or pages filled to the
    // brim as before migration 0014, next to none.
    expect(stats.hot / stats.updated).toBeGreaterThan(0.7);
  });
});
