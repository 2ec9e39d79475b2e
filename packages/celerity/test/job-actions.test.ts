import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createKey } from '../src/auth/key-store.ts';
import { JobActiveError, JobNotDelayedError, JobNotRetryableError, RetryInProgressError } from '../src/client/job-actions.ts';
import { JobNotFoundError, NonRetryableError } from '../src/errors.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { defineTask } from '../src/task.ts';
import { group, step } from '../src/workflows/workflow.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

/** Fails while `n` is odd: a first run fails, a retry with an edited input succeeds. */
const parity = defineTask({
  name: 'a.parity',
  input: z.object({ n: z.number().int() }),
  retries: 0,
  handler: async ({ n }) => {
    if (n % 2 === 1) throw new NonRetryableError(`odd ${n}`);
    return { half: n / 2 };
  },
});

const nap = defineTask({
  name: 'a.nap',
  input: z.object({ ms: z.number() }),
  retries: 0,
  handler: async ({ ms }, ctx) => {
    await sleep(ms, undefined, { signal: ctx.signal });
    return { ms };
  },
});

const tasks = [parity, nap];

async function api(app: Awaited<ReturnType<typeof openTestApp>>) {
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  return server;
}

async function stored(app: Awaited<ReturnType<typeof openTestApp>>, id: string, status: string) {
  return waitFor(async () => {
    const r = await app.store.get(id);
    return r?.status === status ? r : undefined;
  });
}

describe.each(stores)('operating actions on one job (%s)', (kind) => {
  it('retries a failed job as a new job linked to it, with its input or an edited one, once at a time', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const server = await api(app);
    const failed = await app.enqueue(parity, { n: 3 }, { tenant: 'acme' });
    await startWorker(app);
    expect((await failed.wait()).status).toBe('failed');

    // An edited input is validated by the task's schema, naming the field; nothing is enqueued.
    const bad = await server.inject({ method: 'POST', url: `/v1/jobs/${failed.id}/retry`, payload: { input: { n: 'x' } } });
    expect(bad.statusCode).toBe(422);
    expect(bad.json().error.details.issues[0].path).toBe('input.n');
    expect((await app.listJobs({ limit: 10 })).jobs.filter((j) => j.retryOf === failed.id)).toEqual([]);

    // Retry with the original input: a new job, linked, that fails again.
    const first = await server.inject({ method: 'POST', url: `/v1/jobs/${failed.id}/retry` });
    expect(first.statusCode).toBe(202);
    const { job_id: firstRetry, retry_of } = first.json();
    expect(retry_of).toBe(failed.id);
    expect(firstRetry).not.toBe(failed.id);
    const view = await waitFor(async () => {
      const r = (await server.inject({ url: `/v1/jobs/${firstRetry}` })).json();
      return r.status === 'failed' ? r : undefined;
    });
    expect(view).toMatchObject({ task: 'a.parity', tenant: 'acme', retry_of: failed.id, error: { message: 'odd 3' } });
    expect((await stored(app, firstRetry, 'failed')).retryOf).toBe(failed.id);
    // The original keeps its own history.
    const original = await app.getJob(failed.id);
    expect(original).toMatchObject({ status: 'failed', input: { n: 3 } });
    expect(original?.retryOf).toBeUndefined();
    expect((await server.inject({ url: `/v1/jobs/${failed.id}` })).json()).toMatchObject({ retry_of: null, retried_by: [firstRetry] });

    // Retried again, with an edited input; a second click while it runs is refused, naming it.
    await app.pauseQueue('default');
    const second = await server.inject({ method: 'POST', url: `/v1/jobs/${failed.id}/retry`, payload: { input: { n: 4 } } });
    expect(second.statusCode).toBe(202);
    const secondRetry = second.json().job_id as string;
    const clicks = await Promise.all([1, 2].map(() => server.inject({ method: 'POST', url: `/v1/jobs/${failed.id}/retry`, payload: {} })));
    for (const click of clicks) {
      expect(click.statusCode).toBe(409);
      expect(click.json().error).toMatchObject({ code: 'retry_in_progress', details: { job_id: failed.id, retry_id: secondRetry } });
    }
    await expect(app.retry(failed.id)).rejects.toBeInstanceOf(RetryInProgressError);
    await app.resumeQueue('default');
    const done = await waitFor(async () => {
      const r = await app.getJob(secondRetry);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(done).toMatchObject({ input: { n: 4 }, result: { half: 2 }, retryOf: failed.id });
    // The original names its retries, oldest first; a job nobody retried names none, and only a failed or cancelled job's read looks.
    expect((await server.inject({ url: `/v1/jobs/${failed.id}` })).json().retried_by).toEqual([firstRetry, secondRetry]);
    expect((await server.inject({ url: `/v1/jobs/${firstRetry}` })).json().retried_by).toEqual([]);
    expect((await server.inject({ url: `/v1/jobs/${secondRetry}` })).json().retried_by).toBeUndefined();

    // Only failed or cancelled jobs: a completed one is refused.
    const res = await server.inject({ method: 'POST', url: `/v1/jobs/${secondRetry}/retry` });
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatchObject({ code: 'job_not_retryable', details: { status: 'completed' } });
    expect((await server.inject({ method: 'POST', url: '/v1/jobs/01nosuchjob/retry' })).statusCode).toBe(404);
  });

  it('retries a job that Redis no longer holds, from the history, and a cancelled one', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const failed = await app.enqueue(parity, { n: 5 });
    await startWorker(app);
    await failed.wait();
    await stored(app, failed.id, 'failed');
    // Retention let it go: only the SQL row is left.
    await app.broker.redis.del(app.broker.queue('default').toKey(failed.id));
    await app.broker.redis.zrem(app.broker.queue('default').keys.failed!, failed.id);
    expect(await app.broker.queue('default').getJob(failed.id)).toBeUndefined();
    const again = await app.retry(failed.id, { input: { n: 6 } });
    expect((await again.wait()).status).toBe('completed');

    const delayed = await app.enqueue(nap, { ms: 1 }, { delay: 60_000 });
    await app.cancel(delayed.id);
    const revived = await app.retry(delayed.id);
    expect(await revived.wait()).toMatchObject({ status: 'completed', retryOf: delayed.id, input: { ms: 1 } });
    await expect(app.retry(revived.id)).rejects.toBeInstanceOf(JobNotRetryableError);
  });

  it('retries a job cancelled while queued, or drained with its queue, with its priority and time limits', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const queue = app.broker.queue('default');
    // Both originals leave Redis before they run: the retry finds their options in their cancel markers.
    const cancelled = await app.enqueue(nap, { ms: 1 }, { delay: 60_000, priority: 7, timeLimits: { soft: 5_000, hard: 9_000 } });
    expect(await app.cancel(cancelled.id)).toBe('cancelled');
    expect(await queue.getJob(cancelled.id)).toBeUndefined();
    const drained = await app.enqueue(nap, { ms: 2 }, { priority: 3, timeLimits: { hard: 8_000 } });
    expect(await app.drainQueue('default')).toEqual({ removed: 1 });

    for (const [original, priority, limits] of [
      [cancelled, 7, { soft: 5_000, hard: 9_000 }],
      [drained, 3, { hard: 8_000 }],
    ] as const) {
      await stored(app, original.id, 'cancelled');
      const retry = await app.retry(original.id);
      const job = await queue.getJob(retry.id);
      expect(job?.opts.priority).toBe(priority);
      expect(job?.data).toMatchObject({ retryOf: original.id, limits });
    }
  });

  it('deletes a job from Redis and the history for good, even against a lagging recorder; a running one is refused', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const server = await api(app);
    await startWorker(app);
    const job = await app.enqueue(parity, { n: 2 }, { tenant: 'acme' });
    await job.wait();
    const before = await stored(app, job.id, 'completed');

    const res = await server.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}` });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ job_id: job.id, deleted: true });
    expect(await app.broker.queue('default').getJob(job.id)).toBeUndefined();
    expect((await server.inject({ url: `/v1/jobs/${job.id}` })).statusCode).toBe(404);
    expect((await app.listJobs({ limit: 50 })).jobs.map((j) => j.id)).not.toContain(job.id);

    // A recorder that read the job before the removal writes it after: refused by the tombstone's position.
    await app.store.write([{ record: before, eventSeq: padStreamId(`${Date.now() - 1000}-0`) }]);
    // And the recorder running meanwhile (the job's `removed` event) brings nothing back.
    await sleep(300);
    expect(await app.getJob(job.id)).toBeNull();
    expect(await app.store.get(job.id)).toBeNull();
    const raw = await app.store.db.selectFrom('jobs').select(['status', 'input', 'result']).where('id', '=', job.id).execute();
    if (kind === 'sqlite') expect(raw).toEqual([{ status: 'deleted', input: null, result: null }]);
    expect((await server.inject({ method: 'DELETE', url: `/v1/jobs/${job.id}` })).statusCode).toBe(404);

    // A job that was never recorded (no recorder had caught up) stays deleted when the recorder reads its events.
    const queued = await app.enqueue(nap, { ms: 1 }, { delay: 60_000 });
    await app.deleteJob(queued.id);
    await sleep(300);
    expect(await app.getJob(queued.id)).toBeNull();

    // A cancelled job lives on in its cancel marker: deleted with it.
    const cancelled = await app.enqueue(nap, { ms: 1 }, { delay: 60_000 });
    await app.cancel(cancelled.id);
    await app.deleteJob(cancelled.id);
    await sleep(300);
    expect(await app.getJob(cancelled.id)).toBeNull();

    const running = await app.enqueue(nap, { ms: 20_000 });
    await waitFor(async () => (await app.getJob(running.id))?.status === 'started');
    const refused = await server.inject({ method: 'DELETE', url: `/v1/jobs/${running.id}` });
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error).toMatchObject({ code: 'job_active', details: { job_id: running.id } });
    expect(refused.json().error.message).toContain('cancel it first');
    await expect(app.deleteJob(running.id)).rejects.toBeInstanceOf(JobActiveError);
    await app.cancel(running.id);
    await running.wait();
    await app.deleteJob(running.id);
    expect(await app.getJob(running.id)).toBeNull();
  });

  it('deletes a workflow with its steps, and refuses to retry one', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    await startWorker(app);
    const wf = await app.workflow(group(step(parity, { n: 2 }), step(parity, { n: 4 })));
    const done = await wf.wait();
    expect(done.status).toBe('completed');
    const stepIds = (await app.getJob(wf.id))!.steps!.map((s) => s.id);
    await stored(app, wf.id, 'completed');
    for (const id of stepIds) await stored(app, id, 'completed');
    const failedRoot = await app.workflow(group(step(parity, { n: 1 }), step(parity, { n: 4 })));
    expect((await failedRoot.wait()).status).toBe('failed');
    await expect(app.retry(failedRoot.id)).rejects.toBeInstanceOf(JobNotRetryableError);

    await app.deleteJob(wf.id);
    await sleep(300);
    for (const id of [wf.id, ...stepIds]) {
      expect(await app.getJob(id)).toBeNull();
      expect(await app.store.get(id)).toBeNull();
    }
    expect((await app.listJobs({ limit: 50 })).jobs.map((j) => j.id)).not.toContain(stepIds[0]);
  });

  it('promotes a delayed job, and refuses any other', async () => {
    const app = await openTestApp(kind, tasks);
    const server = await api(app);
    await startWorker(app);
    const before = Date.now();
    const delayed = await app.enqueue(nap, { ms: 1 }, { delay: 3_600_000 });
    // The view says when a delayed job is due (what the dashboard's "Run now" needs); a waiting job has no run_at.
    const due = Date.parse((await server.inject({ url: `/v1/jobs/${delayed.id}` })).json().run_at);
    expect(due).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(due).toBeLessThanOrEqual(Date.now() + 3_600_000);
    const res = await server.inject({ method: 'POST', url: `/v1/jobs/${delayed.id}/promote` });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ job_id: delayed.id, status: 'queued' });
    expect((await delayed.wait({ timeoutMs: 5_000 })).status).toBe('completed');
    expect((await server.inject({ url: `/v1/jobs/${delayed.id}` })).json().run_at).toBeNull();
    const again = await server.inject({ method: 'POST', url: `/v1/jobs/${delayed.id}/promote` });
    expect(again.statusCode).toBe(409);
    expect(again.json().error).toMatchObject({ code: 'job_not_delayed', details: { status: 'completed' } });
    await expect(app.promote(delayed.id)).rejects.toBeInstanceOf(JobNotDelayedError);
    await expect(app.promote('01nosuchjob')).rejects.toBeInstanceOf(JobNotFoundError);
  });
});

describe('operating actions and API keys', () => {
  it("records the retrying key, and answers another tenant's or another task's job as missing", async () => {
    const app = await openTestApp('postgres', tasks, { auth: 'keys' });
    await startRecorder(app);
    const server = await api(app);
    const acme = await createKey(app.store, { name: 'acme', tenant: 'acme', scopes: ['jobs:retry', 'jobs:read', 'jobs:delete'] });
    const globex = await createKey(app.store, { name: 'globex', tenant: 'globex', scopes: ['jobs:retry', 'jobs:delete'] });
    const naps = await createKey(app.store, { name: 'naps', tenant: 'acme', scopes: ['jobs:retry'], tasks: ['a.nap'] });
    const cancelOnly = await createKey(app.store, { name: 'cancel', tenant: 'acme', scopes: ['jobs:cancel'] });
    const failed = await app.enqueue(parity, { n: 1 }, { tenant: 'acme' });
    await startWorker(app);
    await failed.wait();
    const as = (key: { token: string }, method: 'POST' | 'DELETE', url: string) => server.inject({ method, url, headers: { authorization: `Bearer ${key.token}` } });
    const missing = (await as(globex, 'POST', '/v1/jobs/01nosuchjob0000000000000000/retry')).json();
    for (const [key, method, suffix] of [
      [globex, 'POST', '/retry'],
      [naps, 'POST', '/retry'],
      [globex, 'DELETE', ''],
    ] as const) {
      const res = await as(key, method, `/v1/jobs/${failed.id}${suffix}`);
      expect(res.statusCode).toBe(404);
      expect(res.json().error.code).toBe(missing.error.code);
    }
    expect((await as(cancelOnly, 'POST', `/v1/jobs/${failed.id}/retry`)).statusCode).toBe(403);
    expect((await as(cancelOnly, 'DELETE', `/v1/jobs/${failed.id}`)).statusCode).toBe(403);
    const ok = await as(acme, 'POST', `/v1/jobs/${failed.id}/retry`);
    expect(ok.statusCode).toBe(202);
    const retried = await app.getJob(ok.json().job_id);
    expect(retried).toMatchObject({ tenant: 'acme', keyId: acme.key.id, retryOf: failed.id });
  });
});
