import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { JobFinishedError, JobNotFoundError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import { isolatedTasks, spin, whoami } from './fixtures/isolated-app.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const FIXTURE = new URL('./fixtures/isolated-app.ts', import.meta.url).href;

const nap = defineTask({
  name: 'c.nap',
  input: z.object({ ms: z.number() }),
  retries: 3,
  handler: async ({ ms }, ctx) => {
    await sleep(ms, undefined, { signal: ctx.signal });
    return { ms };
  },
});

const stubborn = defineTask({
  name: 'c.stubborn',
  input: z.object({ ms: z.number() }),
  handler: async ({ ms }) => {
    await sleep(ms); // ignores ctx.signal
    return { ms };
  },
});

/** A second app on the same Redis and store, with its own connections, as an API process would have. */
function otherProcess(app: Awaited<ReturnType<typeof openTestApp>>) {
  const other = createApp({ tasks: [...app.tasks.values()], config: app.config, ...(app.env.schema ? { dbSchema: app.env.schema } : {}) });
  onCleanup(() => other.close());
  return other;
}

describe.each(stores)('cancellation (%s store)', (kind) => {
  it('removes a queued job at once, keeps its record, and records it as cancelled', async () => {
    const app = await openTestApp(kind, [nap]);
    await startRecorder(app);
    const handle = await app.enqueue(nap, { ms: 10 }, { tenant: 't1' });
    expect(await app.cancel(handle.id)).toBe('cancelled');
    expect(await app.broker.queue('default').getJob(handle.id)).toBeUndefined();
    expect(await app.getJob(handle.id)).toMatchObject({ id: handle.id, status: 'cancelled', task: 'c.nap', tenant: 't1', input: { ms: 10 } });
    const stored = await waitFor(async () => {
      const r = await app.store.get(handle.id);
      return r?.status === 'cancelled' ? r : undefined;
    });
    expect(stored).toMatchObject({ task: 'c.nap', tenant: 't1', input: { ms: 10 } });
    expect(stored.finishedAt).toBeGreaterThan(0);
    // Harmless twice; a worker started later never runs it.
    expect(await app.cancel(handle.id)).toBe('cancelled');
    await startWorker(app);
    await sleep(200);
    expect((await app.getJob(handle.id))?.status).toBe('cancelled');
  });

  it('cancels a delayed job', async () => {
    const app = await openTestApp(kind, [nap]);
    const handle = await app.enqueue(nap, { ms: 10 }, { delay: 60_000 });
    expect(await app.cancel(handle.id)).toBe('cancelled');
    expect((await app.getJob(handle.id))?.status).toBe('cancelled');
  });

  it('stops a running job from another process within a second; it is not retried', async () => {
    const app = await openTestApp(kind, [nap]);
    await startWorker(app);
    await startRecorder(app);
    const handle = await app.enqueue(nap, { ms: 30_000 });
    await waitFor(async () => ((await app.getJob(handle.id))?.status === 'started' ? true : undefined));
    const other = otherProcess(app);
    const asked = Date.now();
    expect(await other.cancel(handle.id)).toBe('cancelling');
    const done = await handle.wait({ timeoutMs: 5_000, pollMs: 20 });
    expect(Date.now() - asked).toBeLessThan(1_000);
    expect(done).toMatchObject({ status: 'cancelled', attempts: 1, error: { type: 'JobCancelled' } });
    const stored = await waitFor(async () => {
      const r = await app.store.get(handle.id);
      return r?.status === 'cancelled' ? r : undefined;
    });
    expect(stored.attempts).toBe(1);
    expect(await app.cancel(handle.id)).toBe('cancelled');
  });
});

describe('cancellation of stubborn and isolated jobs', () => {
  it('ends the attempt of a handler that ignores its signal after the grace period', async () => {
    const app = await openTestApp('sqlite', [stubborn], { cancelGrace: 300 });
    await startWorker(app);
    const handle = await app.enqueue(stubborn, { ms: 20_000 });
    await waitFor(async () => ((await app.getJob(handle.id))?.status === 'started' ? true : undefined));
    const asked = Date.now();
    await app.cancel(handle.id);
    const done = await handle.wait({ timeoutMs: 5_000, pollMs: 20 });
    expect(done.status).toBe('cancelled');
    expect(Date.now() - asked).toBeGreaterThanOrEqual(250);
    expect(Date.now() - asked).toBeLessThan(2_000);
  });

  it('terminates an isolated job that never yields after the grace period, and goes on', async () => {
    const app = await openTestApp('sqlite', isolatedTasks, { cancelGrace: 200 });
    app.moduleUrl = FIXTURE;
    await startWorker(app, { concurrency: 1 });
    const handle = await app.enqueue(spin, { ms: 60_000 });
    await waitFor(async () => ((await app.getJob(handle.id))?.status === 'started' ? true : undefined), 10_000);
    await sleep(300); // let the thread get into its loop
    expect(await app.cancel(handle.id)).toBe('cancelling');
    const done = await handle.wait({ timeoutMs: 5_000, pollMs: 20 });
    expect(done).toMatchObject({ status: 'cancelled', error: { type: 'JobCancelled' } });
    // A new thread boots for it (tsx compiles the app and Celerity's source
    // afresh): seconds on a loaded 2-core machine, more than 10 in one CI run.
    expect((await (await app.enqueue(whoami, { n: 1 })).wait({ timeoutMs: 40_000 })).status).toBe('completed');
  }, 60_000);

  it('refuses to cancel a finished job (409) and does not know an unknown one (404)', async () => {
    const app = await openTestApp('sqlite', [nap]);
    await startWorker(app);
    await startRecorder(app);
    const handle = await app.enqueue(nap, { ms: 1 });
    await handle.wait();
    await expect(app.cancel(handle.id)).rejects.toBeInstanceOf(JobFinishedError);
    await expect(app.cancel('01nosuchjob')).rejects.toBeInstanceOf(JobNotFoundError);

    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const finished = await api.inject({ method: 'POST', url: `/v1/jobs/${handle.id}/cancel` });
    expect(finished.statusCode).toBe(409);
    expect(finished.json().error).toMatchObject({ code: 'job_finished', details: { status: 'completed' } });
    expect((await api.inject({ method: 'POST', url: '/v1/jobs/01nosuchjob/cancel' })).statusCode).toBe(404);
    const queued = await app.enqueue(nap, { ms: 1 }, { delay: 60_000 });
    const res = await api.inject({ method: 'POST', url: `/v1/jobs/${queued.id}/cancel` });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ job_id: queued.id, status: 'cancelled' });
    const running = await app.enqueue(nap, { ms: 20_000 });
    await waitFor(async () => ((await app.getJob(running.id))?.status === 'started' ? true : undefined));
    const r2 = await api.inject({ method: 'POST', url: `/v1/jobs/${running.id}/cancel` });
    expect(r2.statusCode).toBe(202);
    expect(r2.json()).toEqual({ job_id: running.id, status: 'cancelling' });
    expect((await running.wait({ timeoutMs: 5_000 })).status).toBe('cancelled');
  });
});
