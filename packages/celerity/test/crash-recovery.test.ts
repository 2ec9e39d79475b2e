import { afterAll, describe, it } from 'vitest';
import { relSleep, tasks } from './fixtures/reliability-app.ts';
import { cleanup, openTestApp, stores, waitFor } from './helpers.ts';
import { spawnWorker, waitForWorkers } from './process-helpers.ts';

/**
 * A worker process dies (SIGKILL: no shutdown code runs) holding 20 running
 * jobs. BullMQ's stalled-job check in another worker process finds their
 * expired locks and runs them again: none is lost, each runs a second time
 * (attempt 2) without being charged a retry (the task has none), within about
 * lock duration + stalled interval of the crash, and the SQL history agrees.
 */
// Once, after both stores' tests: they run concurrently, and a cleanup after the first to end
// would kill the other's workers.
afterAll(cleanup);

const LOCK_MS = 2_000;
const STALLED_MS = 1_000;
/** The README's bound ("about lock duration + stalled interval"), with slack for process scheduling. */
const RERUN_BOUND_MS = 8_000;
const JOBS = 20;

// Concurrent: each store's test has its own prefix, store and worker processes, and mostly waits
// on BullMQ's lock and stalled-check timers.
describe.concurrent.each(stores)('crash recovery (%s store)', (kind) => {
  it('runs every job of a SIGKILLed worker to completion in another worker, within the documented bound', async ({ expect }) => {
    const app = await openTestApp(kind, tasks);
    const queue = app.broker.queue(relSleep.queue);
    const opts = { concurrency: JOBS, lockDuration: LOCK_MS, stalledInterval: STALLED_MS };

    const first = spawnWorker(app.env, { ...opts, name: 'worker-1' });
    await waitForWorkers(queue, 1, 20_000, [first]);
    // First runs never end on their own; re-runs take half a second.
    const handles = await Promise.all(Array.from({ length: JOBS }, () => app.enqueue(relSleep, { ms: 600_000, rerun_ms: 500 })));
    const ids = handles.map((h) => h.id).sort();
    await waitFor(async () => (await queue.getActiveCount()) === JOBS, 15_000);
    // The recorder of worker-1 has written them as started.
    await waitFor(async () => {
      const started = await app.listJobs({ status: 'started', limit: 100 });
      return started.jobs.length === JOBS;
    }, 15_000);

    // The second worker is up before the crash, so the bound measures recovery, not start-up.
    const second = spawnWorker(app.env, { ...opts, name: 'worker-2' });
    await waitForWorkers(queue, 2, 20_000, [first, second]);
    const killedAt = Date.now();
    await first.kill('SIGKILL');
    expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });

    const done = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 30_000, pollMs: 50 })));
    for (const job of done) {
      expect(job).toMatchObject({ status: 'completed', attempts: 2, error: null, result: { attempt: 2, pid: second.pid } });
      expect(job.result!.started_at).toBeGreaterThanOrEqual(killedAt);
    }
    const rerunDelays = done.map((j) => j.result!.started_at - killedAt);
    expect(Math.max(...rerunDelays)).toBeLessThan(RERUN_BOUND_MS);

    // BullMQ agrees: all completed, nothing left anywhere else, no attempt spent on the crash.
    expect(await queue.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized')).toEqual({
      completed: JOBS,
      failed: 0,
      active: 0,
      waiting: 0,
      delayed: 0,
      prioritized: 0,
    });
    for (const id of ids) {
      const job = (await queue.getJob(id))!;
      expect(job.attemptsStarted).toBe(2);
      expect(job.stalledCounter).toBe(1);
    }

    // The SQL history (written by worker-2's recorder; worker-1's died with it) catches up.
    const history = await waitFor(async () => {
      const page = await app.listJobs({ status: 'completed', limit: 100 });
      return page.jobs.length === JOBS ? page.jobs : undefined;
    }, 15_000);
    expect(history.map((j) => j.id).sort()).toEqual(ids);
    for (const id of ids) {
      const row = await app.store.get(id);
      expect(row).toMatchObject({ id, task: 'rel.sleep', status: 'completed', attempts: 2, error: null, result: { attempt: 2, pid: second.pid } });
      expect(row!.finishedAt).toBeGreaterThanOrEqual(killedAt);
      // docs/semantics.md: the crashed attempt shows as interrupted.
      expect(row!.attemptHistory).toMatchObject([
        { attempt: 1, status: 'interrupted', error: null },
        { attempt: 2, status: 'completed', error: null },
      ]);
    }
    expect((await app.listJobs({ status: 'started', limit: 100 })).jobs).toEqual([]);

    // The surviving worker still stops cleanly.
    await second.kill('SIGTERM');
    expect(await second.waitExit(10_000)).toEqual({ code: 0, signal: null });
  }, 60_000);
});
