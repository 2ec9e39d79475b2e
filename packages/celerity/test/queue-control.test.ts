import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { createKey } from '../src/auth/key-store.ts';
import { UnknownQueueError } from '../src/ops/queue-control.ts';
import { defineTask } from '../src/task.ts';
import { deferred, onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({ name: 'q.add', input: z.object({ a: z.number() }), handler: async ({ a }) => ({ a }) });
let gate = deferred();
const hold = defineTask({
  name: 'q.hold',
  queue: 'slow',
  input: z.object({}),
  handler: async () => {
    await gate.promise;
    return { held: true };
  },
});
const later = defineTask({ name: 'q.later', queue: 'slow', input: z.object({ n: z.number() }), handler: async ({ n }) => ({ n }) });
const tasks = [add, hold, later];

describe.each(stores)('queue control (%s)', (kind) => {
  it('keeps a queue paused across worker restarts until it is resumed', async () => {
    const app = await openTestApp(kind, tasks);
    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const paused = await server.inject({ method: 'POST', url: '/v1/queues/default/pause' });
    expect(paused.statusCode).toBe(200);
    expect(paused.json()).toEqual({ queue: 'default', paused: true });
    const job = await app.enqueue(add, { a: 1 });

    // A worker started after the pause, by another process (its own app on the same Redis), runs nothing.
    const other = createApp({ tasks, config: app.config, ...(app.env.schema ? { dbSchema: app.env.schema } : {}) });
    onCleanup(() => other.close());
    expect(await other.isQueuePaused('default')).toBe(true);
    const worker = await startWorker(other);
    await sleep(800);
    expect((await app.getJob(job.id))?.status).toBe('queued');
    await worker.close(0);
    await startWorker(other);
    await sleep(300);
    expect((await app.getJob(job.id))?.status).toBe('queued');
    const queues = (await server.inject({ url: '/v1/queues' })).json().queues as { name: string; paused: boolean }[];
    expect(queues.find((q) => q.name === 'default')?.paused).toBe(true);

    const resumed = await server.inject({ method: 'POST', url: '/v1/queues/default/resume' });
    expect(resumed.json()).toEqual({ queue: 'default', paused: false });
    expect((await job.wait({ timeoutMs: 5_000 })).status).toBe('completed');

    const unknown = await server.inject({ method: 'POST', url: '/v1/queues/nope/pause' });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error).toMatchObject({ code: 'queue_not_found', details: { queue: 'nope' } });
    const bad = await server.inject({ method: 'POST', url: '/v1/queues/no%20spaces/drain' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details.issues[0].path).toBe('params.name');
    await expect(app.pauseQueue('nope')).rejects.toBeInstanceOf(UnknownQueueError);
  });

  it('drains waiting and delayed jobs, which end cancelled in Redis and in the history; a running job goes on', async () => {
    gate = deferred();
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    await startWorker(app, { queues: ['slow'], concurrency: 1 });
    const running = await app.enqueue(hold, {});
    await waitFor(async () => (await app.getJob(running.id))?.status === 'started');
    const waiting = await Promise.all([1, 2, 3].map((n) => app.enqueue(later, { n })));
    const delayed = await app.enqueue(later, { n: 4 }, { delay: 3_600_000, tenant: 'acme' });
    // The history has seen them queued before the drain.
    for (const j of [...waiting, delayed])
      await waitFor(
        async () => {
          const r = await app.store.get(j.id);
          console.log(j.id, r?.status, (await app.getJob(j.id))?.status);
          return r?.status === 'queued';
        },
        3000,
        500,
      );

    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const res = await server.inject({ method: 'POST', url: '/v1/queues/slow/drain' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ queue: 'slow', removed: 4 });
    for (const j of [...waiting, delayed]) {
      expect(await app.broker.queue('slow').getJob(j.id)).toBeUndefined();
      expect((await app.getJob(j.id))?.status).toBe('cancelled');
      const row = await waitFor(async () => {
        const r = await app.store.get(j.id);
        return r?.status === 'cancelled' ? r : undefined;
      });
      expect(row.finishedAt).toBeGreaterThan(0);
    }
    expect((await app.store.get(delayed.id))?.tenant).toBe('acme');
    gate.resolve();
    expect((await running.wait({ timeoutMs: 5_000 })).status).toBe('completed');
    // Nothing drained runs afterwards, and the rows stay cancelled once the recorder has caught up.
    await sleep(500);
    for (const j of waiting) expect((await app.store.get(j.id))?.status).toBe('cancelled');
    expect((await server.inject({ method: 'POST', url: '/v1/queues/slow/drain' })).json()).toEqual({ queue: 'slow', removed: 0 });
  });
});

describe('queue control and API keys', () => {
  it('is for admin keys only', async () => {
    const app = await openTestApp('sqlite', tasks, { auth: 'keys' });
    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const tenantKey = await createKey(app.store, { name: 'acme', tenant: 'acme', scopes: ['jobs:submit', 'jobs:read', 'jobs:cancel', 'jobs:retry', 'jobs:delete', 'ops:read'] });
    const admin = await createKey(app.store, { name: 'ops', scopes: ['admin'] });
    for (const action of ['pause', 'resume', 'drain']) {
      const refused = await server.inject({ method: 'POST', url: `/v1/queues/default/${action}`, headers: { authorization: `Bearer ${tenantKey.token}` } });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().error.details.scope).toBe('admin');
    }
    expect(await app.isQueuePaused('default')).toBe(false);
    const ok = await server.inject({ method: 'POST', url: '/v1/queues/default/pause', headers: { authorization: `Bearer ${admin.token}` } });
    expect(ok.statusCode).toBe(200);
    expect(await app.isQueuePaused('default')).toBe(true);
  });
});
