import { describe, expect, it, vi } from 'vitest';
import { Job } from 'bullmq';
import { z } from 'zod';
import { InvalidInputError, InvalidOptionsError, NonRetryableError, UnknownTaskError } from '../src/errors.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import type { App, JobHandle } from '../src/app.ts';
import type { JobRecord } from '../src/job-record.ts';
import { defineTask } from '../src/task.ts';
import { createTestApp, deferred, openTestApp, sleep, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

class PaymentDeclined extends Error {
  override name = 'PaymentDeclined';
}

function tasks() {
  const add = defineTask({
    name: 'math.add',
    input: z.object({ a: z.number(), b: z.number() }),
    handler: async ({ a, b }, ctx) => {
      await ctx.progress({ percent: 100, stage: 'done' });
      return { sum: a + b, attempt: ctx.attempt, tenant: ctx.tenant };
    },
  });
  const flaky = defineTask({
    name: 'demo.flaky',
    input: z.object({ failTimes: z.number().int() }),
    retries: 4,
    backoff: { base: 20, max: 40, jitter: 'none' },
    handler: async ({ failTimes }, ctx) => {
      if (ctx.attempt <= failTimes) throw new TypeError(`transient failure ${ctx.attempt}`);
      return { attempt: ctx.attempt, maxAttempts: ctx.maxAttempts };
    },
  });
  const doomed = defineTask({
    name: 'demo.doomed',
    input: z.object({ card: z.string() }),
    retries: 1,
    backoff: { base: 10, max: 10, jitter: 'none' },
    handler: async ({ card }): Promise<never> => {
      throw new PaymentDeclined(`card ${card} declined`);
    },
  });
  const fatal = defineTask({
    name: 'demo.fatal',
    input: z.object({}),
    retries: 5,
    backoff: { base: 10, max: 10, jitter: 'none' },
    handler: async (): Promise<never> => {
      throw new NonRetryableError('do not retry me');
    },
  });
  return { add, flaky, doomed, fatal };
}

async function sqlRecord(app: App, id: string, status: JobRecord['status']): Promise<JobRecord> {
  return waitFor(async () => {
    const record = await app.store.get(id);
    return record?.status === status ? record : null;
  });
}

/**
 * Waits for a terminal status with the public `wait()`, then reads the record
 * again: `wait()` may return a record whose data predates its status (see the
 * "consistent" test below), and the other tests are not about that.
 */
async function finished(app: App, handle: JobHandle): Promise<JobRecord> {
  await handle.wait({ timeoutMs: 10_000, pollMs: 20 });
  const record = await app.getJob(handle.id);
  expect(record).not.toBeNull();
  return record!;
}

async function totalJobs(app: App, queue: string): Promise<number> {
  const counts = await app.broker.queue(queue).getJobCounts();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

describe.each(stores)('core (%s store)', (kind) => {
  it('a job completes with its result, readable from Redis and then from SQL', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(t.add, { a: 2, b: 3 }, { tenant: 'acme' });
    expect(handle.task).toBe('math.add');
    expect(handle.queue).toBe('default');
    const done = await finished(app, handle);
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({ sum: 5, attempt: 1, tenant: 'acme' });

    const live = await app.getJob(handle.id);
    expect(live).toMatchObject({
      id: handle.id,
      task: 'math.add',
      queue: 'default',
      tenant: 'acme',
      status: 'completed',
      attempts: 1,
      maxAttempts: 4,
      input: { a: 2, b: 3 },
      result: { sum: 5, attempt: 1, tenant: 'acme' },
      error: null,
      progress: { percent: 100, stage: 'done' },
    });

    const stored = await sqlRecord(app, handle.id, 'completed');
    // The history of a happy-path job takes its start and finish times from
    // the event stream (Redis' clock); the live view shows BullMQ's (the
    // worker's clock). They agree to within clock skew, here a few ms.
    const times = (r: typeof stored) => [r.startedAt, r.finishedAt, r.attemptHistory?.[0]?.startedAt, r.attemptHistory?.[0]?.finishedAt];
    times(stored).forEach((t, i) => expect(Math.abs(t! - times(live!)[i]!)).toBeLessThanOrEqual(20));
    const untimed = (r: typeof stored) => ({ ...r, startedAt: 0, finishedAt: 0, attemptHistory: r.attemptHistory?.map((a) => ({ ...a, startedAt: 0, finishedAt: 0 })) });
    expect(untimed(stored)).toEqual(untimed(live!));
    expect(stored.startedAt).toBeGreaterThanOrEqual(stored.createdAt);
    expect(stored.finishedAt).toBeGreaterThanOrEqual(stored.startedAt!);
  });

  it('a flaky job completes after its failed attempts, with the attempts recorded', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(t.flaky, { failTimes: 2 });
    const done = await finished(app, handle);
    expect(done.status).toBe('completed');
    expect(done.result).toEqual({ attempt: 3, maxAttempts: 5 });
    expect(done.attempts).toBe(3);
    expect(done.maxAttempts).toBe(5);

    const stored = await sqlRecord(app, handle.id, 'completed');
    expect(stored.attempts).toBe(3);
    expect(stored.maxAttempts).toBe(5);
    expect(stored.result).toEqual({ attempt: 3, maxAttempts: 5 });
    // A completed job carries no error, even though attempts failed on the way.
    expect(stored.error).toBeNull();
  });

  it('a job that always fails ends failed, with the error type, message and stack in SQL', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(t.doomed, { card: '4242' });
    const done = await finished(app, handle);
    expect(done.status).toBe('failed');
    expect(done.attempts).toBe(2);

    const stored = await sqlRecord(app, handle.id, 'failed');
    expect(stored.attempts).toBe(2);
    expect(stored.maxAttempts).toBe(2);
    expect(stored.result).toBeNull();
    expect(stored.finishedAt).not.toBeNull();
    expect(stored.error).not.toBeNull();
    expect(stored.error!.type).toBe('PaymentDeclined');
    expect(stored.error!.message).toBe('card 4242 declined');
    expect(stored.error!.stack).toMatch(/^PaymentDeclined: card 4242 declined\n\s+at /);
    expect(stored.error!.stack).toContain('core.test.ts');
  });

  it('a NonRetryableError fails the job at once, keeping its type', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(t.fatal, {});
    const done = await finished(app, handle);
    expect(done.status).toBe('failed');
    expect(done.attempts).toBe(1);
    const stored = await sqlRecord(app, handle.id, 'failed');
    expect(stored.attempts).toBe(1);
    expect(stored.maxAttempts).toBe(6);
    expect(stored.error).toMatchObject({ type: 'NonRetryableError', message: 'do not retry me' });
  });

  it('invalid input throws InvalidInputError and enqueues nothing', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));

    const attempt = app.enqueue(t.add, { a: 'two', b: null } as never);
    await expect(attempt).rejects.toBeInstanceOf(InvalidInputError);
    const err = (await attempt.catch((e: unknown) => e)) as InvalidInputError;
    expect(err.details.issues.map((i) => i.path).sort()).toEqual(['a', 'b']);

    await expect(app.enqueueByName('math.add', { a: 1 })).rejects.toBeInstanceOf(InvalidInputError);
    await expect(app.enqueue(t.add, { a: 1, b: 2 }, { priority: 0 })).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(app.enqueue(t.add, { a: 1, b: 2 }, { jobId: '12345' })).rejects.toBeInstanceOf(InvalidOptionsError);

    const counts = await app.broker.queue('default').getJobCounts();
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const [state, count] of Object.entries(counts)) expect(count, state).toBe(0);
    expect(await app.broker.redis.exists(app.broker.eventsKey('default'))).toBe(0);
  });

  it('enqueueByName validates a known task and rejects an unknown one without a queue', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));

    // An app without tasks can only route by queue.
    const thin = createTestApp(kind, []);
    await expect(thin.enqueueByName('math.add', { a: 1, b: 1 })).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(thin.enqueueByName('math.add', { a: 1, b: 1 })).rejects.toMatchObject({ details: { issues: [{ path: 'options.queue' }] } });

    const known = await app.enqueueByName('math.add', { a: 1, b: 1 });
    expect(known).toMatchObject({ task: 'math.add', queue: 'default' });

    const unknown = app.enqueueByName('math.mul', { a: 1, b: 1 });
    await expect(unknown).rejects.toBeInstanceOf(UnknownTaskError);
    await expect(unknown).rejects.toMatchObject({ code: 'unknown_task', details: { task: 'math.mul' } });
    expect(await totalJobs(app, 'default')).toBe(1);

    // With a queue, an unknown task is routed as is (the worker that knows it validates).
    const routed = await app.enqueueByName('math.mul', { anything: true }, { queue: 'other' });
    expect(routed).toMatchObject({ task: 'math.mul', queue: 'other' });
    const job = await app.broker.queue('other').getJob(routed.id);
    expect(job?.name).toBe('math.mul');
    expect(job?.data).toEqual({ input: { anything: true } });

    await startWorker(app);
    const done = await finished(app, known);
    expect(done.result).toMatchObject({ sum: 2 });
  });

  it('enqueueing the same jobId twice gives one job', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);

    const first = await app.enqueue(t.add, { a: 1, b: 2 }, { jobId: 'order-42' });
    const second = await app.enqueue(t.add, { a: 10, b: 20 }, { jobId: 'order-42' });
    expect(first.id).toBe('order-42');
    expect(second.id).toBe('order-42');
    expect(await totalJobs(app, 'default')).toBe(1);

    await startWorker(app);
    const done = await finished(app, second);
    expect(done.result).toMatchObject({ sum: 3 });
    const stored = await sqlRecord(app, 'order-42', 'completed');
    expect(stored.input).toEqual({ a: 1, b: 2 });
    const page = await app.listJobs({ limit: 10 });
    expect(page.jobs.map((j) => j.id)).toEqual(['order-42']);
  });

  it('stores the tenant and filters on it', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);

    const acme = [await app.enqueue(t.add, { a: 1, b: 1 }, { tenant: 'acme' }), await app.enqueue(t.add, { a: 2, b: 2 }, { tenant: 'acme' })];
    const globex = await app.enqueue(t.add, { a: 3, b: 3 }, { tenant: 'globex' });
    const none = await app.enqueue(t.add, { a: 4, b: 4 });
    const all = [...acme, globex, none].map((h) => h.id);

    await waitFor(async () => (await app.listJobs({ limit: 100 })).jobs.length === all.length);

    const acmePage = await app.listJobs({ tenant: 'acme', limit: 100 });
    expect(acmePage.jobs.map((j) => j.id).sort()).toEqual(acme.map((h) => h.id).sort());
    expect(acmePage.jobs.every((j) => j.tenant === 'acme')).toBe(true);
    expect(acmePage.nextCursor).toBeNull();

    const globexPage = await app.listJobs({ tenant: 'globex', limit: 100 });
    expect(globexPage.jobs.map((j) => j.id)).toEqual([globex.id]);
    expect((await app.listJobs({ tenant: 'initech', limit: 100 })).jobs).toEqual([]);

    expect((await app.store.get(none.id))?.tenant).toBeNull();
    // Queued jobs are recorded too, before any worker runs.
    expect((await app.store.get(globex.id))?.status).toBe('queued');

    // Filters combine.
    const acmeAdds = await app.listJobs({ tenant: 'acme', task: 'math.add', status: 'queued', limit: 100 });
    expect(acmeAdds.jobs).toHaveLength(2);
    expect((await app.listJobs({ tenant: 'acme', status: 'completed', limit: 100 })).jobs).toEqual([]);
  });

  it('records a failure whose message holds a NUL byte (PostgreSQL text cannot), and the jobs batched with it', async () => {
    const t = tasks();
    const nul = defineTask({
      name: 'demo.nul',
      input: z.object({}),
      retries: 0,
      handler: (): never => {
        throw new Error('binary \u0000 inside');
      },
    });
    const app = await openTestApp(kind, [nul, t.add]);
    await startRecorder(app);
    await startWorker(app);
    const bad = await app.enqueue(nul, {});
    const good = await app.enqueue(t.add, { a: 1, b: 2 });
    await bad.wait();
    const record = await sqlRecord(app, bad.id, 'failed');
    // Both stores: the serializer replaces it (SQLite would keep it, but its SQL functions stop at it).
    expect(record.error!.message).toBe('binary \uFFFD inside');
    await sqlRecord(app, good.id, 'completed');
  });

  it('listJobs pages with a cursor, returning every job exactly once, newest first', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);

    const enqueued: string[] = [];
    for (let i = 0; i < 7; i++) {
      enqueued.push((await app.enqueue(t.add, { a: i, b: i })).id);
      await sleep(2); // distinct milliseconds, so creation order is id order
    }
    await waitFor(async () => (await app.listJobs({ limit: 100 })).jobs.length === enqueued.length);

    const pages: string[][] = [];
    let cursor: string | undefined;
    for (let guard = 0; guard < 10; guard++) {
      const page = await app.listJobs({ limit: 3, ...(cursor ? { cursor } : {}) });
      pages.push(page.jobs.map((j) => j.id));
      if (!page.nextCursor) break;
      cursor = page.nextCursor;
    }
    expect(pages.map((p) => p.length)).toEqual([3, 3, 1]);
    expect(pages.flat()).toEqual([...enqueued].reverse());

    // An exact multiple of the page size ends with a null cursor, not an empty page.
    const six = await app.listJobs({ limit: 6 });
    expect(six.jobs).toHaveLength(6);
    const rest = await app.listJobs({ limit: 1, cursor: six.nextCursor! });
    expect(rest.jobs.map((j) => j.id)).toEqual([enqueued[0]]);
    expect(rest.nextCursor).toBeNull();
  });

  it('a running job reports its progress from Redis, without touching SQL', async () => {
    const gate = deferred();
    const reached = deferred();
    const slow = defineTask({
      name: 'demo.slow',
      input: z.object({ items: z.number() }),
      handler: async ({ items }, ctx) => {
        await ctx.progress({ percent: 10, stage: 'loading' });
        await ctx.progress({ percent: 40, processed: 4 });
        reached.resolve();
        await gate.promise;
        await ctx.progress({ percent: 100, stage: 'done', processed: items });
        return { processed: items };
      },
    });
    const app = await openTestApp(kind, [slow]);
    await startWorker(app);
    const getFromSql = vi.spyOn(app.store, 'get');

    try {
      const handle = await app.enqueue(slow, { items: 10 });
      await reached.promise;
      const running = await waitFor(async () => {
        const record = await app.getJob(handle.id);
        return record?.status === 'started' && record.progress?.percent === 40 ? record : null;
      });
      // Updates merge into one snapshot.
      expect(running.progress).toEqual({ percent: 40, stage: 'loading', processed: 4 });
      expect(running.startedAt).not.toBeNull();
      expect(running.finishedAt).toBeNull();
      expect(running.result).toBeNull();

      gate.resolve();
      const done = await finished(app, handle);
      expect(done.status).toBe('completed');
      expect(done.progress).toEqual({ percent: 100, stage: 'done', processed: 10 });
      expect(getFromSql).not.toHaveBeenCalled();
    } finally {
      gate.resolve();
      getFromSql.mockRestore();
    }
  });

  it('a job waiting for its retry is reported retrying, with its last error, in Redis and in SQL', async () => {
    const once = defineTask({
      name: 'demo.once',
      input: z.object({}),
      retries: 2,
      backoff: { base: 800, max: 800, jitter: 'none' },
      handler: async (_input, ctx) => {
        if (ctx.attempt === 1) throw new TypeError('first attempt fails');
        return { attempt: ctx.attempt };
      },
    });
    const app = await openTestApp(kind, [once]);
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(once, {});
    const live = await waitFor(async () => {
      const record = await app.getJob(handle.id);
      return record?.status === 'retrying' ? record : null;
    });
    expect(live.attempts).toBe(1);
    expect(live.error).toMatchObject({ type: 'TypeError', message: 'first attempt fails' });
    const stored = await sqlRecord(app, handle.id, 'retrying');
    expect(stored.attempts).toBe(1);
    expect(stored.error).toMatchObject({ type: 'TypeError', message: 'first attempt fails' });

    const done = await finished(app, handle);
    expect(done).toMatchObject({ status: 'completed', attempts: 2, result: { attempt: 2 }, error: null });
  });

  it('getJob falls back to SQL for a job Redis no longer holds, and returns null for an unknown id', async () => {
    const t = tasks();
    const app = await openTestApp(kind, Object.values(t));
    await startRecorder(app);
    await startWorker(app);

    const handle = await app.enqueue(t.add, { a: 20, b: 22 });
    await finished(app, handle);
    const stored = await sqlRecord(app, handle.id, 'completed');
    // Drop it from Redis, as the result retention would.
    await (await app.broker.queue('default').getJob(handle.id))!.remove();
    expect(await app.broker.queue('default').getJob(handle.id)).toBeUndefined();

    const getFromSql = vi.spyOn(app.store, 'get');
    expect(await app.getJob(handle.id)).toEqual(stored);
    expect(getFromSql).toHaveBeenCalledWith(handle.id, ALL_TENANTS);
    expect(await app.getJob('no-such-job')).toBeNull();
    getFromSql.mockRestore();
  });
});

// Behaviour of the Redis side only; the store does not matter, SQLite keeps it fast.
describe('core: reading live jobs', () => {
  it('the first enqueue of a fresh app waits for its Redis connection instead of failing', async () => {
    // A producer script does `createApp(...)` then `await app.enqueue(...)` at
    // once. Redis is up; the connection is merely still being established.
    const t = tasks();
    const app = createTestApp('sqlite', Object.values(t));
    const handle = await app.enqueue(t.add, { a: 1, b: 2 });
    expect(await app.broker.queue('default').getJob(handle.id)).toBeDefined();
  });

  it('the handle of a job enqueued by name to a queue the app does not define can read its status', async () => {
    // Celery's send_task: a producer that does not import the task.
    const producer = await openTestApp('sqlite', []);
    const handle = await producer.enqueueByName('remote.task', { x: 1 }, { queue: 'remote' });
    expect(await producer.broker.queue('remote').getJob(handle.id)).toBeDefined();
    const record = await handle.status();
    expect(record).toMatchObject({ id: handle.id, task: 'remote.task', queue: 'remote', status: 'queued', input: { x: 1 } });
  });

  it('getJob is consistent: a finished job is never reported without its result', async () => {
    // readJob loads the job hash, then asks for its state. If the job finishes
    // in between, the record pairs the new state with the old data. Make that
    // happen deterministically: hold the state read until the job completed.
    const gate = deferred();
    const hold = defineTask({
      name: 'demo.hold',
      input: z.object({}),
      handler: async () => {
        await gate.promise;
        return { answer: 42 };
      },
    });
    const app = await openTestApp('sqlite', [hold]);
    await startWorker(app);
    const handle = await app.enqueue(hold, {});
    const queue = app.broker.queue('default');
    await waitFor(async () => (await queue.getJobState(handle.id)) === 'active');

    const completedKey = `${app.config.prefix}:default:completed`;
    const getState = Job.prototype.getState;
    const spy = vi.spyOn(Job.prototype, 'getState').mockImplementation(async function (this: Job) {
      gate.resolve();
      await waitFor(async () => (await app.broker.redis.zscore(completedKey, handle.id)) !== null);
      return getState.call(this);
    });
    try {
      const record = await app.getJob(handle.id);
      expect(record).not.toBeNull();
      if (record!.status === 'completed') {
        expect(record!.result).toEqual({ answer: 42 });
        expect(record!.finishedAt).not.toBeNull();
        expect(record!.attempts).toBe(1);
      } else {
        expect(record!.status).toBe('started');
      }
    } finally {
      spy.mockRestore();
      gate.resolve();
    }
  });
});
