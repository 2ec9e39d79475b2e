import type { Database } from 'better-sqlite3';
import { type Migration, type MigrationResultSet, Migrator, sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import type { JobRecord } from '../src/job-record.ts';
import { BUCKET_COUNT, BUCKET_LOWER, bucketEstimate, bucketOf, percentile } from '../src/ops/histogram.ts';
import { purgeHistory } from '../src/schedules/maintenance.ts';
import { foldJobMetrics, MINUTE_RETENTION_MS, pruneMetrics, readStats, readTotals } from '../src/store/job-metrics.ts';
import { JobStore, type RecordedState } from '../src/store/job-store.ts';
import { coreMigrations } from '../src/store/migrations.ts';
import { RECORDER_GROUP } from '../src/store/recorder.ts';
import { defineTask } from '../src/task.ts';
import { NonRetryableError } from '../src/errors.ts';
import { onCleanup, openTestApp, startCustomRecorder, startWorker, stores, testEnv, testRedis, useCleanup, waitFor, type StoreKind } from './helpers.ts';

useCleanup();

function openStore(kind: StoreKind): JobStore {
  const env = testEnv(kind);
  const store = new JobStore({ databaseUrl: env.config.databaseUrl, sqlitePath: env.sqlitePath, ...(env.schema ? { schema: env.schema } : {}) });
  onCleanup(() => store.close());
  return store;
}

/**
 * Runs a step of Kysely's migrator again when it fails with 3F000 ("schema
 * … does not exist"): before it migrates, its introspection reads the
 * tables of every schema in the database, and a schema that a test beside
 * this one drops meanwhile ends that read. No migration has run then. The
 * store's own migrate retries the same way (src/store/migrations.ts).
 */
async function migrating(step: () => Promise<MigrationResultSet>): Promise<MigrationResultSet> {
  for (let attempt = 1; ; attempt++) {
    const result = await step();
    if (attempt >= 5 || (result.error as { code?: string } | undefined)?.code !== '3F000') return result;
  }
}

const T0 = Date.UTC(2026, 10, 30, 10, 0, 0);

function state(id: string, seq: number, over: Partial<JobRecord> = {}): RecordedState {
  const record: JobRecord = {
    id,
    task: 'm.ok',
    queue: 'default',
    tenant: null,
    keyId: null,
    status: 'completed',
    attempts: 1,
    maxAttempts: 3,
    input: {},
    result: null,
    error: null,
    progress: null,
    createdAt: T0,
    startedAt: T0 + 10,
    finishedAt: T0 + 110,
    ...over,
  };
  return { record, eventSeq: `${String(T0 + seq).padStart(13, '0')}-${String(seq).padStart(10, '0')}` };
}

type Row = Record<string, number | string>;

async function rows(store: JobStore, table: string): Promise<Row[]> {
  await foldJobMetrics(store);
  const { rows } = await sql<Row>`select * from ${sql.table(table)}`.execute(store.db);
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, k === 'queue' || k === 'task' ? v : Number(v)])));
}

const numeric = (r: Row) => Object.entries(r).filter(([k]) => k !== 'period' && k !== 'queue' && k !== 'task');

describe('histogram', () => {
  it('puts every whole ms in exactly one bucket, two per doubling, and reports percentiles within 19%', () => {
    expect(BUCKET_LOWER.slice(0, 8)).toEqual([0, 1, 2, 2, 3, 4, 6, 8]);
    expect(bucketOf(0)).toBe(0);
    expect(bucketOf(-5)).toBe(0);
    expect(bucketOf(1)).toBe(1);
    expect(bucketOf(2)).toBe(3);
    expect(bucketOf(5)).toBe(5);
    expect(bucketOf(2 ** 26)).toBe(BUCKET_COUNT - 1);
    expect(bucketOf(1e12)).toBe(BUCKET_COUNT - 1);
    for (let v = 0; v < 200_000; v += v < 100 ? 1 : 37) {
      const k = bucketOf(v);
      expect(v).toBeGreaterThanOrEqual(BUCKET_LOWER[k]!);
      if (k < BUCKET_COUNT - 1) expect(v).toBeLessThan(BUCKET_LOWER[k + 1]!);
      const e = bucketEstimate(k);
      if (v < 4) expect(e).toBe(v);
      else expect(Math.abs(e - v) / v).toBeLessThan(0.19);
    }
  });

  it('nearest-rank percentiles from counts; empty is null', () => {
    const counts = new Array(BUCKET_COUNT).fill(0);
    expect(percentile(counts, 0.5)).toBeNull();
    // 90 jobs of 3 ms, 10 of 1000 ms: p50 is 3, p95 about 1000.
    counts[bucketOf(3)] = 90;
    counts[bucketOf(1000)] = 10;
    expect(percentile(counts, 0.5)).toBe(3);
    expect(percentile(counts, 0.9)).toBe(3);
    expect(Math.abs(percentile(counts, 0.95)! - 1000) / 1000).toBeLessThan(0.19);
  });
});

describe.each(stores)('job metrics in SQL (%s)', (kind) => {
  it('counts a job once when its row becomes final, whatever is written again', async () => {
    const store = openStore(kind);
    await store.migrate();
    // Queued, then started, then completed: counted on the last write only.
    await store.write([state('a', 1, { status: 'queued', startedAt: null, finishedAt: null, attempts: 0 })]);
    await store.write([state('a', 2, { status: 'started', finishedAt: null })]);
    expect(await readTotals(store)).toEqual([]);
    await store.write([state('a', 3)]);
    // The same event delivered again, an older one, and a rewrite of the final row at a newer position.
    await store.write([state('a', 3)]);
    await store.write([state('a', 2, { status: 'started', finishedAt: null })]);
    await store.write([state('a', 4)]);
    // Inserted final at once (a job first seen ended), failed after 3 attempts, cancelled while queued.
    await store.write([
      state('b', 1, { createdAt: T0 + 60_000, startedAt: T0 + 60_010, finishedAt: T0 + 60_110 }),
      state('c', 1, { status: 'failed', attempts: 3, createdAt: T0, startedAt: T0 + 5_000, finishedAt: T0 + 5_020 }),
      state('d', 1, { status: 'cancelled', attempts: 0, startedAt: null, finishedAt: T0 + 7 }),
    ]);
    // The happy path's update moves a started row to completed: counted too.
    await store.write([state('e', 1, { status: 'started', finishedAt: null })]);
    const { moved } = await store.advance([
      {
        id: 'e',
        seq: state('e', 2).eventSeq,
        status: 'completed',
        from: 'queued-or-started',
        startedAt: null,
        finishedAt: T0 + 200,
        result: 'null',
        progress: null,
        updatedAt: T0 + 200,
      },
    ]);
    expect([...moved]).toEqual(['e']);
    // A second, identical happy update (a redelivery) does not apply: the row is already there.
    expect(
      await store.advance([
        {
          id: 'e',
          seq: state('e', 2).eventSeq,
          status: 'completed',
          from: 'queued-or-started',
          startedAt: null,
          finishedAt: T0 + 200,
          result: 'null',
          progress: null,
          updatedAt: T0 + 200,
        },
      ]),
    ).toEqual({ moved: new Set(), settled: new Set(['e']) });

    const runBuckets = new Array(BUCKET_COUNT).fill(0);
    for (const run of [100, 100, 20, 190]) runBuckets[bucketOf(run)] += 1;
    expect(await readTotals(store)).toEqual([{ queue: 'default', task: 'm.ok', completed: 3, failed: 1, cancelled: 1, retries: 2, runCount: 4, runSumMs: 100 + 100 + 20 + 190, runBuckets }]);
    const minutes = (await rows(store, 'job_metrics_minute')).sort((x, y) => Number(x.period) - Number(y.period));
    expect(minutes.map((m) => [m.period, m.completed, m.failed, m.cancelled, m.retries])).toEqual([
      [T0, 2, 1, 1, 2],
      [T0 + 60_000, 1, 0, 0, 0],
    ]);
    // Waits: a (10 ms), b (10), e (10); c was retried (its start is its last attempt's) and d never started.
    expect(minutes[0]!.wait_count).toBe(2);
    expect(minutes[0]!.wait_sum_ms).toBe(20);
    expect(minutes[0]![`wait_b${String(bucketOf(10)).padStart(2, '0')}`]).toBe(2);
    expect(minutes[0]!.run_count).toBe(3);

    const stats = await readStats(store, { from: T0, to: T0 + 3_600_000 }, T0 + 3_600_000);
    expect(stats.series).toHaveLength(1);
    expect(stats.series[0]!.points).toEqual([
      {
        t: new Date(T0).toISOString(),
        completed: 2,
        failed: 1,
        cancelled: 1,
        retries: 2,
        wait_p50: bucketEstimate(bucketOf(10)),
        wait_p95: bucketEstimate(bucketOf(10)),
        run_p50: bucketEstimate(bucketOf(100)),
        run_p95: bucketEstimate(bucketOf(190)),
      },
      {
        t: new Date(T0 + 60_000).toISOString(),
        completed: 1,
        failed: 0,
        cancelled: 0,
        retries: 0,
        wait_p50: bucketEstimate(bucketOf(10)),
        wait_p95: bucketEstimate(bucketOf(10)),
        run_p50: bucketEstimate(bucketOf(100)),
        run_p95: bucketEstimate(bucketOf(100)),
      },
    ]);
  });

  it('the migration adds the jobs the history already held as ended, once', async () => {
    const store = openStore(kind);
    // The store as it was before 0009, with a history.
    const migrations = coreMigrations(store.dialect);
    const before = Object.fromEntries(Object.entries(migrations).filter(([name]) => name < '0009'));
    if (store.dialect === 'postgres') await sql`create schema if not exists ${sql.id(store.schema)}`.execute(store.db);
    const migrator = new Migrator({
      db: store.db,
      provider: { getMigrations: async () => before },
      migrationTableName: 'celerity_migrations',
      migrationLockTableName: 'celerity_migrations_lock',
      ...(store.dialect === 'postgres' ? { migrationTableSchema: store.schema } : {}),
    });
    expect((await migrating(() => migrator.migrateToLatest())).error).toBeUndefined();
    await store.write([state('a', 1), state('b', 1, { status: 'failed', tenant: 'acme' }), state('c', 1, { status: 'started', finishedAt: null })]);
    await store.migrate();
    expect(await readTotals(store)).toEqual([
      { queue: 'default', task: 'm.ok', completed: 1, failed: 1, cancelled: 0, retries: 0, runCount: 2, runSumMs: 200, runBuckets: expect.arrayContaining([2]) },
    ]);
    // From then on, the triggers: c ends.
    await store.write([state('c', 2)]);
    expect((await readTotals(store))[0]).toMatchObject({ completed: 2, failed: 1 });
    expect((await rows(store, 'job_metrics_hour'))[0]).toMatchObject({ period: T0, completed: 2, failed: 1 });
  });

  it('0013 moves the counting to the pending table, and back on its way down, without losing or doubling a job', async () => {
    const store = openStore(kind);
    const migrations = coreMigrations(store.dialect);
    const upTo = (last: string) => Object.fromEntries(Object.entries(migrations).filter(([name]) => name <= last));
    if (store.dialect === 'postgres') await sql`create schema if not exists ${sql.id(store.schema)}`.execute(store.db);
    const migrator = (provided: Record<string, Migration>) =>
      new Migrator({
        db: store.db,
        provider: { getMigrations: async () => provided },
        migrationTableName: 'celerity_migrations',
        migrationLockTableName: 'celerity_migrations_lock',
        ...(store.dialect === 'postgres' ? { migrationTableSchema: store.schema } : {}),
      });
    expect((await migrating(() => migrator(upTo('0012')).migrateToLatest())).error).toBeUndefined();
    // Ended under 0009's triggers (on PostgreSQL, added in place), and one still running.
    await store.write([state('a', 1), state('b', 1, { status: 'started', finishedAt: null }), state('c', 1, { status: 'started', finishedAt: null })]);
    await store.migrate();
    // b ends under 0013's: appended, then added by the fold before the read.
    await store.write([state('b', 2)]);
    expect((await readTotals(store))[0]).toMatchObject({ completed: 2, runCount: 2 });
    // c ends and waits in the pending table when 0013 goes down: the way down adds it, and the triggers add in place again.
    await store.write([state('c', 2)]);
    if (store.dialect === 'postgres') {
      // Down past 0014 (which leaves the metrics alone) and 0013.
      expect((await migrating(() => migrator(migrations).migrateTo('0012_job_logs_row_security'))).error).toBeUndefined();
      const { rows: pending } = await sql<{ n: string }>`select count(*) as n from pg_tables where schemaname = ${store.schema} and tablename = 'job_metrics_pending'`.execute(store.db);
      expect(Number(pending[0]!.n)).toBe(0);
      const counted = async () => Number((await sql<{ n: string }>`select coalesce(sum(completed), 0) as n from job_metrics_total`.execute(store.db)).rows[0]!.n);
      expect(await counted()).toBe(3);
      await store.write([state('d', 1)]);
      expect(await counted()).toBe(4);
    } else {
      expect((await readTotals(store))[0]).toMatchObject({ completed: 3 });
    }
  });

  it('concurrent writers (several recorders) add into the same rows without losing or deadlocking', async () => {
    const env = testEnv(kind);
    const open = () => {
      const s = new JobStore({ databaseUrl: env.config.databaseUrl, sqlitePath: env.sqlitePath, ...(env.schema ? { schema: env.schema } : {}) });
      onCleanup(() => s.close());
      return s;
    };
    const writers = [open(), open(), open(), open()];
    await writers[0]!.migrate();
    for (const w of writers.slice(1)) await w.migrate();
    const tasks = ['t.a', 't.b', 't.c', 't.d', 't.e'];
    // Each writer's batches interleave every task, in an order of its own, in the same minutes.
    await Promise.all(
      writers.map(async (w, n) => {
        for (let b = 0; b < 10; b++) {
          const batch = Array.from({ length: 50 }, (_, i) => state(`w${n}-${b}-${String(i).padStart(2, '0')}`, 1, { task: tasks[(i + n) % tasks.length]!, finishedAt: T0 + 110 + (i % 3) * 60_000 }));
          await w.write(batch);
          // Folds race each other and the other writers' batches.
          if (b % 3 === n % 3) await foldJobMetrics(w);
        }
      }),
    );
    const totals = await readTotals(writers[0]!);
    expect(totals.map((t) => [t.task, t.completed]).sort()).toEqual(tasks.map((t) => [t, 400]));
    const minutes = await rows(writers[0]!, 'job_metrics_minute');
    expect(minutes.reduce((n, m) => n + Number(m.completed), 0)).toBe(2000);
  });

  it("the store's buckets are the histogram's, at every bound", async () => {
    const store = openStore(kind);
    await store.migrate();
    const runs = [...new Set(BUCKET_LOWER.flatMap((lo) => [lo - 1, lo, lo + 1]).filter((v) => v >= 0)), 2 ** 30];
    await store.write(runs.map((run, i) => state(`b${i}`, 1, { startedAt: T0, finishedAt: T0 + run })));
    const [total] = await rows(store, 'job_metrics_total');
    const expected = new Array(BUCKET_COUNT).fill(0);
    for (const run of runs) expected[bucketOf(run)] += 1;
    expect(Array.from({ length: BUCKET_COUNT }, (_, k) => total![`run_b${String(k).padStart(2, '0')}`])).toEqual(expected);
    expect(total!.run_sum_ms).toBe(runs.reduce((a, b) => a + b, 0));
  });

  it('a batch that fails leaves no metrics behind', async () => {
    const store = openStore(kind);
    await store.migrate();
    // The second row is refused (task is NOT NULL) after the first became final in the same transaction.
    await expect(store.write([state('a', 1), state('b', 1, { task: null as unknown as string })])).rejects.toThrow();
    expect(await readTotals(store)).toEqual([]);
    expect(await rows(store, 'job_metrics_minute')).toEqual([]);
  });

  it('each hour is exactly the sum of its minutes; percentiles and filters per task and queue', async () => {
    const store = openStore(kind);
    await store.migrate();
    // 200 jobs over two hours and two tasks, with known run times.
    const runs: Record<string, number[]> = { 'm.ok': [], 'm.slow': [] };
    const states: RecordedState[] = [];
    for (let i = 0; i < 200; i++) {
      const task = i % 4 === 0 ? 'm.slow' : 'm.ok';
      const run = task === 'm.slow' ? 1_000 + i * 10 : 5 + (i % 7);
      const start = T0 + i * 37_000;
      runs[task]!.push(run);
      states.push(state(`j${String(i).padStart(3, '0')}`, 1, { task, status: i % 10 === 8 ? 'failed' : 'completed', createdAt: start - 3, startedAt: start, finishedAt: start + run }));
    }
    // Written in several batches, as several recorders would.
    for (let i = 0; i < states.length; i += 30) await store.write(states.slice(i, i + 30));

    const minutes = await rows(store, 'job_metrics_minute');
    const hours = await rows(store, 'job_metrics_hour');
    const hourOf = (p: number) => p - (p % 3_600_000);
    expect(hours.length).toBeGreaterThanOrEqual(4);
    for (const hour of hours) {
      const within = minutes.filter((m) => hourOf(Number(m.period)) === hour.period && m.task === hour.task && m.queue === hour.queue);
      for (const [column, value] of numeric(hour)) expect([column, within.reduce((sum, m) => sum + Number(m[column]), 0)]).toEqual([column, value]);
    }
    const totals = await readTotals(store);
    expect(totals.find((t) => t.task === 'm.slow')).toMatchObject({ completed: 40, failed: 10, runCount: 50 });

    const byHour = await readStats(store, { from: new Date(T0), to: new Date(T0 + 3 * 3_600_000), granularity: 'hour', task: 'm.slow' }, T0 + 4 * 3_600_000);
    expect(byHour.series.map((s) => s.task)).toEqual(['m.slow']);
    const firstHour = runs['m.slow']!.filter((_, i) => T0 + i * 4 * 37_000 < T0 + 3_600_000).sort((a, b) => a - b);
    const p95 = firstHour[Math.ceil(0.95 * firstHour.length) - 1]!;
    const p50 = firstHour[Math.ceil(0.5 * firstHour.length) - 1]!;
    const point = byHour.series[0]!.points[0]!;
    expect(point.completed + point.failed).toBe(firstHour.length);
    expect(Math.abs(point.run_p95! - p95) / p95).toBeLessThan(0.19);
    expect(Math.abs(point.run_p50! - p50) / p50).toBeLessThan(0.19);
    expect(point.wait_p50).toBe(3);

    // Summed per queue, or all together: counts add up, histograms too.
    const perTask = await readStats(store, { from: T0, to: T0 + 3 * 3_600_000, granularity: 'hour' }, T0 + 4 * 3_600_000);
    const perQueue = await readStats(store, { from: T0, to: T0 + 3 * 3_600_000, granularity: 'hour', by: 'queue' }, T0 + 4 * 3_600_000);
    const all = await readStats(store, { from: T0, to: T0 + 3 * 3_600_000, granularity: 'hour', by: 'all' }, T0 + 4 * 3_600_000);
    expect(perTask.series.map((x) => x.task)).toEqual(['m.ok', 'm.slow']);
    expect(perQueue.series.map((x) => [x.queue, x.task])).toEqual([['default', null]]);
    expect(all.series.map((x) => [x.queue, x.task])).toEqual([[null, null]]);
    expect(all.by).toBe('all');
    const hourTotals = (r: typeof perTask) => r.series.flatMap((x) => x.points).reduce((n, p) => n + p.completed + p.failed, 0);
    expect(hourTotals(perTask)).toBe(200);
    expect(hourTotals(perQueue)).toBe(200);
    expect(hourTotals(all)).toBe(200);
    expect(all.series[0]!.points).toEqual(perQueue.series[0]!.points);
    // The slow task is a quarter of the jobs: the 95th percentile of them all is one of its runs, the median one of the quick task's.
    expect(all.series[0]!.points[0]!.run_p95).toBeGreaterThan(900);
    expect(all.series[0]!.points[0]!.run_p50).toBeLessThan(15);

    const none = await readStats(store, { from: T0, to: T0 + 3_600_000, queue: 'elsewhere' }, T0 + 3_600_000);
    expect(none.series).toEqual([]);
  });

  it('retention prunes minutes past 48 h and hours past the retention; the totals stay', async () => {
    const store = openStore(kind);
    await store.migrate();
    const now = T0 + 40 * 86_400_000;
    const at = (ms: number, id: string) => state(id, 1, { createdAt: ms - 10, startedAt: ms - 5, finishedAt: ms });
    await store.write([at(now - 31 * 86_400_000, 'old'), at(now - 3 * 86_400_000, 'days'), at(now - 3_600_000, 'recent')]);
    const result = await pruneMetrics(store, 30, now);
    expect(result).toEqual({ minutes: 2, hours: 1 });
    expect((await rows(store, 'job_metrics_minute')).map((r) => r.period)).toEqual([now - 3_600_000 - ((now - 3_600_000) % 60_000)]);
    expect((await rows(store, 'job_metrics_hour')).length).toBe(2);
    expect(MINUTE_RETENTION_MS).toBe(48 * 3_600_000);
    // The counters never go down.
    expect((await readTotals(store))[0]).toMatchObject({ completed: 3 });
    // Purging the history itself does not touch the metrics.
    await purgeHistory(store, 1, now);
    expect((await readTotals(store))[0]).toMatchObject({ completed: 3 });
  });
});

const ok = defineTask({ name: 'jm.ok', input: z.object({ ms: z.number().int().min(0).default(0) }), handler: async ({ ms }) => new Promise((r) => setTimeout(() => r({ ok: true }), ms)) });
const fail = defineTask({
  name: 'jm.fail',
  input: z.object({}),
  handler: async () => {
    throw new NonRetryableError('no');
  },
});

describe('job metrics on SQLite', () => {
  it('a fold takes the write lock first: another connection committing in the middle of it cannot make it fail', async () => {
    const env = testEnv('sqlite');
    const folder = new JobStore({ sqlitePath: env.sqlitePath });
    const other = new JobStore({ sqlitePath: env.sqlitePath });
    onCleanup(() => folder.close());
    onCleanup(() => other.close());
    await folder.migrate();
    await other.migrate();
    // The first fold prepares the connection's temporary table; then, inside
    // every fold, once it has read the pending rows into that table, the other
    // connection tries to write (and does not wait for locks).
    await foldJobMetrics(folder);
    const db = folder.sqlite as unknown as Database;
    const otherDb = other.sqlite as unknown as Database;
    otherDb.exec('CREATE TABLE interleaved (n integer)');
    otherDb.pragma('busy_timeout = 0');
    const outcomes: string[] = [];
    db.function('interleave', () => {
      try {
        otherDb.prepare('INSERT INTO interleaved VALUES (1)').run();
        outcomes.push('committed');
      } catch (err) {
        outcomes.push((err as { code?: string }).code ?? String(err));
      }
      return 0;
    });
    db.exec('CREATE TEMP TRIGGER interleave AFTER INSERT ON temp.job_metrics_fold BEGIN SELECT interleave(); END');
    await folder.write([state('a', 1)]);
    await foldJobMetrics(folder);
    // The other connection waited for the fold (here: gave up at once); the fold went through.
    expect(outcomes).toEqual(['SQLITE_BUSY']);
    db.exec('DROP TRIGGER temp.interleave');
    expect((await readTotals(folder))[0]).toMatchObject({ completed: 1 });
  });
});

describe.each(stores)('job metrics from the recorders (%s)', (kind) => {
  it('two recorders sharing the streams, and a redelivery of everything after a crash, count each job once', async () => {
    const app = await openTestApp(kind, [ok, fail]);
    await startWorker(app, { concurrency: 8 });
    // Two recorders in the same consumer group share the events.
    const recorders = [await startCustomRecorder(app, { lingerMs: 5 }), await startCustomRecorder(app, { lingerMs: 5 })];
    const handles = [...(await Promise.all(Array.from({ length: 60 }, (_, i) => app.enqueue(ok, { ms: i % 3 })))), ...(await Promise.all(Array.from({ length: 6 }, () => app.enqueue(fail, {}))))];
    for (const h of handles) await h.wait({ timeoutMs: 20_000, pollMs: 20 });
    const store = await app.openStore();
    const expected = [
      { queue: 'default', task: 'jm.fail', completed: 0, failed: 6, cancelled: 0, retries: 0 },
      { queue: 'default', task: 'jm.ok', completed: 60, failed: 0, cancelled: 0, retries: 0 },
    ];
    const totals = async () => (await readTotals(store)).map(({ runCount: _r, runSumMs: _s, runBuckets: _b, ...t }) => t).sort((a, b) => a.task.localeCompare(b.task));
    await waitFor(async () => {
      expect(await totals()).toEqual(expected);
      return true;
    }, 20_000);
    expect(recorders[0]!.recorded + recorders[1]!.recorded).toBeGreaterThan(0);

    // A crash after the SQL commit and before XACK: every event comes back.
    // Moving the group back to the start redelivers them all, to recorders
    // whose writes are refused as old (no transition, no count).
    const redis = testRedis();
    const stream = app.broker.queue('default').keys.events!;
    const before = await rows(store, 'job_metrics_minute');
    await redis.xgroup('SETID', stream, RECORDER_GROUP, '0');
    const delivered = recorders[0]!.recorded + recorders[1]!.recorded;
    const length = await redis.xlen(stream);
    expect(length).toBeGreaterThan(0);
    await waitFor(() => recorders[0]!.recorded + recorders[1]!.recorded >= delivered + length || undefined, 20_000);
    expect(await totals()).toEqual(expected);
    expect(await rows(store, 'job_metrics_minute')).toEqual(before);

    // The recorders fold what their triggers appended (SQLite after each batch, PostgreSQL within a second): nothing waits for a reader.
    const more = await Promise.all(Array.from({ length: 5 }, () => app.enqueue(ok, {})));
    for (const h of more) await h.wait({ timeoutMs: 20_000, pollMs: 20 });
    await waitFor(async () => {
      const { rows: pending } = await sql<{ n: number }>`select count(*) as n from job_metrics_pending`.execute(store.db);
      const { rows: ended } = await sql<{ n: number }>`select coalesce(sum(completed), 0) as n from job_metrics_total where task = 'jm.ok'`.execute(store.db);
      return Number(pending[0]!.n) === 0 && Number(ended[0]!.n) === 65 ? true : undefined;
    }, 20_000);

    const stats = await app.stats({ task: 'jm.ok' });
    expect(stats.series).toHaveLength(1);
    expect(stats.series[0]!.points.reduce((n, p) => n + p.completed, 0)).toBe(65);
    expect(stats.series[0]!.points[0]!.run_p95).not.toBeNull();
  });
});

describe('GET /v1/stats', () => {
  it('answers series, and 4xx naming the field for bad input', async () => {
    const app = await openTestApp('sqlite', [ok]);
    const api = await buildServer(app, { logger: false });
    const store = await app.openStore();
    const now = Date.now();
    await store.write([state('x1', 1, { task: 'jm.ok', createdAt: now - 1000, startedAt: now - 900, finishedAt: now - 800 })]);
    const get = async (qs: string) => {
      const res = await api.inject({ method: 'GET', url: `/v1/stats${qs}` });
      return { status: res.statusCode, body: JSON.parse(res.body) };
    };
    const ok200 = await get('');
    expect(ok200.status).toBe(200);
    expect(ok200.body.granularity).toBe('minute');
    expect(ok200.body.series).toEqual([{ queue: 'default', task: 'jm.ok', points: [expect.objectContaining({ completed: 1, run_p50: bucketEstimate(bucketOf(100)) })] }]);
    expect((await get('?granularity=hour&task=jm.ok&queue=default')).body.series).toHaveLength(1);
    expect((await get(`?from=${new Date(now - 7_200_000).toISOString()}&to=${now}&task=other`)).body.series).toEqual([]);

    const bad = async (qs: string, field: string) => {
      const res = await get(qs);
      expect([400, 422]).toContain(res.status);
      expect(JSON.stringify(res.body.error)).toContain(field);
      expect(res.body.error.code).toEqual(expect.any(String));
    };
    await bad('?granularity=day', 'granularity');
    await bad('?by=tenant', 'by');
    expect((await get('?by=all')).body.series).toEqual([{ queue: null, task: null, points: [expect.objectContaining({ completed: 1 })] }]);
    await bad('?from=yesterday', 'from');
    await bad('?to=2026-13-45T00:00:00Z', 'to');
    await bad(`?from=${now}&to=${now - 1}`, 'from');
    await bad(`?from=${now - 2 * 86_400_000}&to=${now}`, 'from');
    await bad(`?from=${now - 40 * 86_400_000}&to=${now}&granularity=hour`, 'from');
    await bad('?task=', 'task');
    await bad('?nope=1', 'nope');
  });
});
