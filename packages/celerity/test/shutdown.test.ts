import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import type { App } from '../src/app.ts';
import { relSleep, tasks } from './fixtures/reliability-app.ts';
import { openTestApp, useCleanup, waitFor } from './helpers.ts';
import { PrivateRedis, spawnWorker, waitForWorkers, type Proc } from './process-helpers.ts';

/**
 * Stopping a worker process (README, Running; docs/semantics.md, Graceful
 * shutdown): SIGTERM stops taking jobs, lets running ones finish for
 * CELERITY_SHUTDOWN_GRACE, hands the rest back to their queue without
 * spending an attempt, flushes the recorder and exits 0; a second signal
 * exits at once. And a stop while Redis is unreachable still ends.
 */
useCleanup();

const LOCK_MS = 2_000;
const STALLED_MS = 1_000;

async function enqueueSleeps(app: App, count: number, input: { ms: number; rerun_ms?: number }): Promise<string[]> {
  const handles = await Promise.all(Array.from({ length: count }, () => app.enqueue(relSleep, input)));
  return handles.map((h) => h.id);
}

async function waitActive(queue: Queue, ids: string[], worker: Proc): Promise<void> {
  await waitFor(async () => {
    if (!worker.running) throw new Error(`${worker.name} exited; output:\n${worker.output}`);
    const states = await Promise.all(ids.map((id) => queue.getJobState(id)));
    return states.every((s) => s === 'active');
  }, 20_000);
}

/** Sends `signal` and returns the exit and how long it took. */
async function stopWith(worker: Proc, signal: NodeJS.Signals, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const sentAt = Date.now();
  await worker.kill(signal);
  const exit = await worker.waitExit(timeoutMs);
  return { ...exit, ms: worker.exitedAt! - sentAt };
}

describe('worker shutdown (SQLite store)', () => {
  it('hands jobs still running after the grace back to their queue without spending an attempt, and exits 0', async () => {
    const GRACE = 500;
    const app = await openTestApp('sqlite', tasks);
    const queue = app.broker.queue(relSleep.queue);
    const first = spawnWorker(app.env, { name: 'worker-1', concurrency: 4, shutdownGrace: GRACE, lockDuration: LOCK_MS, stalledInterval: STALLED_MS });
    // Running in worker-1 they would take ten minutes; a re-run takes 200 ms.
    const running = await enqueueSleeps(app, 4, { ms: 600_000, rerun_ms: 200 });
    await waitActive(queue, running, first);
    const waiting = await enqueueSleeps(app, 2, { ms: 200 });

    const exit = await stopWith(first, 'SIGTERM', 15_000);
    expect(exit, first.output).toMatchObject({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(GRACE + 4_000);

    for (const id of [...running, ...waiting]) {
      const job = (await queue.getJob(id))!;
      expect(await job.getState()).toBe('waiting');
      expect(job.attemptsMade).toBe(0);
      expect(job.failedReason ?? null).toBeNull();
      expect(job.stacktrace ?? []).toEqual([]);
    }
    // The jobs waiting when the signal came were never started.
    for (const id of waiting) expect((await queue.getJob(id))!.attemptsStarted ?? 0).toBe(0);

    // rel.sleep has no retries: had the hand-back spent an attempt, these would fail.
    const second = spawnWorker(app.env, { name: 'worker-2', concurrency: 4, lockDuration: LOCK_MS, stalledInterval: STALLED_MS });
    for (const id of [...running, ...waiting]) {
      const job = await waitFor(async () => {
        const record = await app.getJob(id);
        return record && record.status !== 'queued' && record.status !== 'started' ? record : undefined;
      }, 20_000);
      expect(job).toMatchObject({ status: 'completed', error: null, result: { pid: second.pid } });
      // The handed-back run counts as an interrupted attempt, not a failed one.
      const history = running.includes(id)
        ? [
            { attempt: 1, status: 'interrupted', error: null },
            { attempt: 2, status: 'completed', error: null },
          ]
        : [{ attempt: 1, status: 'completed', error: null }];
      expect(job.attemptHistory).toMatchObject(history);
    }
    // And the SQL history, written by worker-2's recorder, agrees.
    await waitFor(async () => {
      const page = await app.listJobs({ status: 'completed', limit: 100 });
      expect(page.jobs.map((j) => j.id).sort()).toEqual([...running, ...waiting].sort());
      return true;
    }, 15_000);
    for (const id of running) {
      expect((await app.store.get(id))!.attemptHistory).toMatchObject([
        { attempt: 1, status: 'interrupted' },
        { attempt: 2, status: 'completed' },
      ]);
    }
  }, 60_000);

  it('lets jobs shorter than the grace finish in the stopping worker, takes no new ones, and records them before exiting', async () => {
    const GRACE = 10_000;
    const JOB_MS = 1_500;
    const app = await openTestApp('sqlite', tasks);
    const queue = app.broker.queue(relSleep.queue);
    const first = spawnWorker(app.env, { name: 'worker-1', concurrency: 4, shutdownGrace: GRACE, lockDuration: LOCK_MS, stalledInterval: STALLED_MS });
    const running = await enqueueSleeps(app, 4, { ms: JOB_MS });
    await waitActive(queue, running, first);
    const waiting = await enqueueSleeps(app, 2, { ms: JOB_MS });
    // The recorder has caught up with the starts: what is checked below is the shutdown's flush.
    await waitFor(async () => (await app.listJobs({ status: 'started', limit: 100 })).jobs.length === running.length, 10_000);

    const exit = await stopWith(first, 'SIGTERM', GRACE + 10_000);
    expect(exit, first.output).toMatchObject({ code: 0, signal: null });
    // It left as soon as its jobs were done, not at the end of the grace.
    expect(exit.ms).toBeLessThan(JOB_MS + 4_000);

    for (const id of running) {
      const job = (await queue.getJob(id))!;
      expect(await job.getState()).toBe('completed');
      expect(job.returnvalue).toMatchObject({ attempt: 1, pid: first.pid });
    }
    for (const id of waiting) {
      const job = (await queue.getJob(id))!;
      expect(await job.getState()).toBe('waiting');
      expect(job.attemptsStarted ?? 0).toBe(0);
    }
    // "flushes the recorder": with no recorder left running, SQL already has the outcomes.
    for (const id of running) {
      expect(await app.store.get(id)).toMatchObject({ status: 'completed', attempts: 1, result: { attempt: 1, pid: first.pid } });
    }
    for (const id of waiting) expect(await app.store.get(id)).toMatchObject({ status: 'queued', attempts: 0 });
  }, 60_000);

  it('exits at once on a second signal during a long grace; the jobs it held run again elsewhere', async () => {
    const app = await openTestApp('sqlite', tasks);
    const queue = app.broker.queue(relSleep.queue);
    const first = spawnWorker(app.env, {
      name: 'worker-1',
      concurrency: 2,
      shutdownGrace: 30_000,
      lockDuration: LOCK_MS,
      stalledInterval: STALLED_MS,
      // Info level, to see when the first signal has been taken.
      env: { LOG_LEVEL: 'info' },
    });
    const running = await enqueueSleeps(app, 2, { ms: 600_000, rerun_ms: 200 });
    await waitActive(queue, running, first);

    await first.kill('SIGTERM');
    await waitFor(() => first.output.includes('"msg":"shutting down"'), 10_000);
    // Well inside the 30 s grace: the worker is waiting for its jobs.
    expect(first.running).toBe(true);
    const exit = await stopWith(first, 'SIGINT', 5_000);
    expect(exit.ms).toBeLessThan(2_000);
    // docs/semantics.md: "A second signal exits at once (exit code 1)".
    expect(exit).toMatchObject({ code: 1, signal: null });

    // Its jobs were still locked by the dead worker: the stalled check of another one runs them again.
    const second = spawnWorker(app.env, { name: 'worker-2', concurrency: 2, lockDuration: LOCK_MS, stalledInterval: STALLED_MS });
    await waitForWorkers(queue, 1, 20_000, [second]);
    for (const id of running) {
      const job = await waitFor(async () => {
        const record = await app.getJob(id);
        return record?.status === 'completed' || record?.status === 'failed' ? record : undefined;
      }, 20_000);
      expect(job).toMatchObject({ status: 'completed', result: { attempt: 2, pid: second.pid } });
    }
  }, 60_000);

  it('still exits, within a bound, when told to stop while Redis is down; its jobs run again once Redis is back', async () => {
    const GRACE = 1_000;
    const redis = await PrivateRedis.start();
    const app = await openTestApp('sqlite', tasks, { redisUrl: redis.url });
    const queue = app.broker.queue(relSleep.queue);
    const opts = { concurrency: 2, lockDuration: LOCK_MS, stalledInterval: STALLED_MS };
    const first = spawnWorker(app.env, { ...opts, name: 'worker-1', shutdownGrace: GRACE });
    const running = await enqueueSleeps(app, 2, { ms: 600_000, rerun_ms: 200 });
    await waitActive(queue, running, first);

    await redis.shutdown();
    // The jobs cannot be handed back nor the recorder flushed; the process must not wait for Redis for ever
    // (an orchestrator would have to SIGKILL it). Exit code: whatever it chooses.
    // Redis comes back once the worker is gone (or has been waited for long enough).
    const exit = await stopWith(first, 'SIGTERM', GRACE + 15_000).finally(() => redis.start());
    expect(exit.signal).toBeNull();
    expect(exit.ms).toBeLessThan(GRACE + 8_000);

    // Its jobs were left locked, as after a crash: another worker runs them.
    const second = spawnWorker(app.env, { ...opts, name: 'worker-2' });
    for (const id of running) {
      const job = await waitFor(
        async () => {
          const record = await app.getJob(id);
          return record?.status === 'completed' || record?.status === 'failed' ? record : undefined;
        },
        30_000,
        100,
      );
      expect(job).toMatchObject({ status: 'completed', result: { pid: second.pid } });
    }
  }, 60_000);
});
