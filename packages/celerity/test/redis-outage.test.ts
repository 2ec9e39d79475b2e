import { afterAll, describe, it } from 'vitest';
import { buildServer } from '../src/api/server.ts';
import { relSleep, tasks } from './fixtures/reliability-app.ts';
import { cleanup, onCleanup, openTestApp, sleep, stores, waitFor } from './helpers.ts';
import { PrivateRedis, spawnWorker, waitForWorkers } from './process-helpers.ts';

/**
 * Redis goes away in the middle of a run and comes back on the same data
 * (AOF, fsynced on every write). While it is away the API refuses new jobs
 * with 503 and still answers reads from SQL; once it is back, the worker
 * process (never restarted) and the API reconnect by themselves, and every
 * job that was ever accepted completes, in Redis and in the SQL history.
 */
// Once, after both stores' tests: they run concurrently, and a cleanup after the first to end
// would stop the other's Redis and worker.
afterAll(cleanup);

const OUTAGE_MS = 3_000;

// Concurrent: each store's test has its own redis-server, worker process and store, and spends
// most of its time waiting (on the outage, on 300 ms jobs).
describe.concurrent.each(stores)('Redis outage (%s store)', (kind) => {
  it('loses no accepted job, refuses new ones with 503 while down, and recovers without a restart', async ({ expect }) => {
    const redis = await PrivateRedis.start();
    const app = await openTestApp(kind, tasks, { redisUrl: redis.url });
    const queue = app.broker.queue(relSleep.queue);
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    await api.ready();
    const submit = (jobId?: string) => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'rel.sleep', input: { ms: 300 }, ...(jobId ? { options: { job_id: jobId } } : {}) } });

    const worker = spawnWorker(app.env, { concurrency: 4, lockDuration: 2_000, stalledInterval: 1_000 });
    await waitForWorkers(queue, 1, 20_000, [worker]);

    // 40 jobs of 300 ms, four at a time: about 3 s of work, cut in the middle.
    const accepted: string[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await submit();
      expect(res.statusCode, res.body).toBe(202);
      accepted.push(res.json().job_id);
    }
    const firstDone = await waitFor(async () => {
      const page = await app.listJobs({ status: 'completed', limit: 100 });
      return page.jobs.length >= 4 ? page.jobs[0] : undefined;
    }, 20_000);
    const countsAtOutage = await queue.getJobCounts('completed', 'active', 'waiting');
    expect((countsAtOutage.waiting ?? 0) + (countsAtOutage.active ?? 0)).toBeGreaterThan(0);

    await redis.shutdown();
    expect(await redis.ping()).toBe(false);

    // Down: a submission is refused, and nothing of it is left behind.
    const refused = await submit('refused-during-outage');
    expect(refused.statusCode).toBe(503);
    expect(refused.json().error.code).toBe('broker_unavailable');
    await expect(app.enqueue(relSleep, { ms: 1 })).rejects.toMatchObject({ code: 'broker_unavailable' });
    // Reads fall back to the SQL history.
    const read = await api.inject({ method: 'GET', url: `/v1/jobs/${firstDone.id}` });
    expect(read.statusCode, read.body).toBe(200);
    expect(read.json()).toMatchObject({ job_id: firstDone.id, status: 'completed' });

    await sleep(OUTAGE_MS);
    expect(worker.running, worker.output).toBe(true);
    await redis.start();

    // Back: the API accepts again once its connection is back (it reconnects by itself).
    const firstAfter = await waitFor(
      async () => {
        const res = await submit();
        return res.statusCode === 202 ? (res.json().job_id as string) : undefined;
      },
      15_000,
      100,
    );
    accepted.push(firstAfter);
    for (let i = 0; i < 10; i++) {
      const res = await submit();
      expect(res.statusCode, res.body).toBe(202);
      accepted.push(res.json().job_id);
    }

    // Every accepted job completes (rel.sleep has no retries: none may have spent an attempt to the outage).
    await waitFor(async () => (await queue.getCompletedCount()) === accepted.length, 30_000, 100);
    for (const id of accepted) {
      const job = await app.getJob(id);
      expect(job, id).toMatchObject({ id, status: 'completed', error: null, result: { pid: worker.pid } });
    }
    expect(await queue.getJobCounts('failed', 'active', 'waiting', 'delayed')).toEqual({ failed: 0, active: 0, waiting: 0, delayed: 0 });
    // The same worker process did it all: it reconnected by itself.
    expect(worker.running, worker.output).toBe(true);

    // The refused job was never enqueued.
    expect(await app.getJob('refused-during-outage')).toBeNull();

    // The SQL history, written by the worker's recorder, caught up with all of it.
    await waitFor(
      async () => {
        const page = await app.listJobs({ status: 'completed', limit: 200 });
        expect(page.jobs.map((j) => j.id).sort()).toEqual([...accepted].sort());
        return true;
      },
      20_000,
      100,
    );
    expect(await app.store.get('refused-during-outage')).toBeNull();
  }, 60_000);
});
