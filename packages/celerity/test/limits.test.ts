import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/task.ts';
import { JobCancelled, SoftTimeLimitExceeded, TimeLimitExceeded } from '../src/index.ts';
import { isolatedTasks, spin, whoami } from './fixtures/isolated-app.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const FIXTURE = new URL('./fixtures/isolated-app.ts', import.meta.url).href;

class Transient extends Error {
  override name = 'Transient';
}

const softCatch = defineTask({
  name: 'lim.soft-catch',
  input: z.object({}),
  timeLimits: { soft: 100, hard: 5_000 },
  handler: async (_input, ctx) => {
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    // Clean up, then finish normally: the soft limit is a request, not a verdict.
    const reason = ctx.signal.reason as Error;
    return { reason: reason.name, isSoft: reason instanceof SoftTimeLimitExceeded };
  },
});

const softIgnored = defineTask({
  name: 'lim.soft-throw',
  input: z.object({}),
  timeLimits: { soft: 100 },
  retries: 0,
  handler: async (_input, ctx) => {
    await sleep(10_000, undefined, { signal: ctx.signal });
    return {};
  },
});

const hang = defineTask({
  name: 'lim.hang',
  input: z.object({}),
  timeLimits: { hard: 200 },
  retries: 1,
  backoff: { base: 10, max: 10, jitter: 'none' },
  handler: async () => {
    await new Promise(() => {});
  },
});

const quick = defineTask({ name: 'lim.quick', input: z.object({}), handler: async () => ({ ok: true }) });

const perCall = defineTask({
  name: 'lim.per-call',
  input: z.object({ ms: z.number() }),
  retries: 0,
  handler: async ({ ms }) => {
    await sleep(ms);
    return { ms };
  },
});

const picky = defineTask({
  name: 'lim.picky',
  input: z.object({ kind: z.enum(['transient', 'type']) }),
  retries: 3,
  backoff: { base: 10, max: 10 },
  retryOn: [Transient],
  handler: async ({ kind }, ctx) => {
    if (kind === 'transient' && ctx.attempt < 3) throw new Transient('try again');
    if (kind === 'type') throw new TypeError('a bug, not worth retrying');
    return { attempt: ctx.attempt };
  },
});

describe('time limits (inline tasks)', () => {
  it('a soft limit aborts ctx.signal with SoftTimeLimitExceeded; a handler that cleans up and returns completes', async () => {
    const app = await openTestApp('sqlite', [softCatch]);
    await startWorker(app);
    const done = await (await app.enqueue(softCatch, {})).wait({ timeoutMs: 5_000 });
    expect(done).toMatchObject({ status: 'completed', result: { reason: 'SoftTimeLimitExceeded', isSoft: true } });
  });

  it('a handler stopped by its soft limit fails with SoftTimeLimitExceeded', async () => {
    const app = await openTestApp('sqlite', [softIgnored]);
    await startWorker(app);
    const done = await (await app.enqueue(softIgnored, {})).wait({ timeoutMs: 5_000 });
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ type: 'SoftTimeLimitExceeded', message: 'soft time limit of 100 ms exceeded' });
  });

  it('a hard limit ends a handler that never settles, follows the retry policy, and frees the slot', async () => {
    const app = await openTestApp('sqlite', [hang, quick]);
    await startWorker(app, { concurrency: 1 });
    const started = Date.now();
    const done = await (await app.enqueue(hang, {})).wait({ timeoutMs: 5_000 });
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ type: 'TimeLimitExceeded', message: 'hard time limit of 200 ms exceeded' });
    expect(done.attempts).toBe(2); // retries: 1
    expect(Date.now() - started).toBeLessThan(3_000);
    // With concurrency 1, this only runs if the hung attempt released its slot.
    expect((await (await app.enqueue(quick, {})).wait({ timeoutMs: 5_000 })).status).toBe('completed');
  });

  it("per-call limits override the task's", async () => {
    const app = await openTestApp('sqlite', [perCall]);
    await startWorker(app);
    const limited = await (await app.enqueue(perCall, { ms: 1_000 }, { timeLimits: { hard: 100 } })).wait({ timeoutMs: 5_000 });
    expect(limited.error?.type).toBe('TimeLimitExceeded');
    const free = await (await app.enqueue(perCall, { ms: 50 })).wait({ timeoutMs: 5_000 });
    expect(free.status).toBe('completed');
    await expect(app.enqueue(perCall, { ms: 1 }, { timeLimits: { soft: 200, hard: 100 } })).rejects.toMatchObject({ code: 'invalid_options' });
  });

  it('retryOn retries the listed errors and fails others at once', async () => {
    const app = await openTestApp('sqlite', [picky]);
    await startWorker(app);
    const retried = await (await app.enqueue(picky, { kind: 'transient' })).wait({ timeoutMs: 5_000 });
    expect(retried).toMatchObject({ status: 'completed', result: { attempt: 3 }, attempts: 3 });
    const refused = await (await app.enqueue(picky, { kind: 'type' })).wait({ timeoutMs: 5_000 });
    expect(refused).toMatchObject({ status: 'failed', attempts: 1, error: { type: 'TypeError' } });
  });
});

const softThenThrow = defineTask({
  name: 'lim.soft-then-throw',
  input: z.object({ rethrow: z.boolean() }),
  timeLimits: { soft: 100, hard: 5_000 },
  retries: 1,
  backoff: { base: 10, max: 10, jitter: 'none' },
  handler: async ({ rethrow }, ctx) => {
    await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
    if (rethrow) throw ctx.signal.reason;
    throw new Error('cleanup failed');
  },
});

describe.each(stores)('soft and hard limit error types (%s store)', (kind) => {
  it('an attempt ended by the soft limit is SoftTimeLimitExceeded in the record, the attempt history and SQL; the hard limit stays TimeLimitExceeded', async () => {
    const app = await openTestApp(kind, [softThenThrow, hang]);
    await startWorker(app);
    await startRecorder(app);
    for (const rethrow of [true, false]) {
      const done = await (await app.enqueue(softThenThrow, { rethrow })).wait({ timeoutMs: 5_000 });
      expect(done, `rethrow ${rethrow}`).toMatchObject({ status: 'failed', attempts: 2, error: { type: 'SoftTimeLimitExceeded', message: 'soft time limit of 100 ms exceeded' } });
      const live = (await app.getJob(done.id))!;
      // Each attempt row keeps its stack too, which starts with the type and message.
      expect(live.attemptHistory!.map((a) => a.error)).toEqual([
        { type: 'SoftTimeLimitExceeded', message: 'soft time limit of 100 ms exceeded', stack: expect.stringMatching(/^SoftTimeLimitExceeded: soft time limit of 100 ms exceeded\n/) },
        { type: 'SoftTimeLimitExceeded', message: 'soft time limit of 100 ms exceeded', stack: expect.stringMatching(/^SoftTimeLimitExceeded: soft time limit of 100 ms exceeded\n/) },
      ]);
      const stored = await waitFor(async () => {
        const r = await app.store.get(done.id);
        return r?.status === 'failed' ? r : undefined;
      });
      expect(stored.error).toEqual(live.error);
      expect(stored.attemptHistory).toEqual(live.attemptHistory);
    }
    const hard = await (await app.enqueue(hang, {})).wait({ timeoutMs: 5_000 });
    expect(hard.error?.type).toBe('TimeLimitExceeded');
    const stored = await waitFor(async () => {
      const r = await app.store.get(hard.id);
      return r?.status === 'failed' ? r : undefined;
    });
    expect(stored.attemptHistory!.map((a) => a.error?.type)).toEqual(['TimeLimitExceeded', 'TimeLimitExceeded']);
  });
});

describe('limit error classes', () => {
  it('are exported for instanceof; the soft one is a kind of TimeLimitExceeded, with its own code', () => {
    const soft = new SoftTimeLimitExceeded(100);
    expect(soft).toBeInstanceOf(TimeLimitExceeded);
    expect(soft).toMatchObject({ name: 'SoftTimeLimitExceeded', code: 'soft_time_limit_exceeded', limitMs: 100 });
    expect(new TimeLimitExceeded('x')).toMatchObject({ name: 'TimeLimitExceeded', code: 'time_limit_exceeded' });
    expect(new JobCancelled()).toMatchObject({ name: 'JobCancelled', code: 'job_cancelled' });
  });
});

describe('isolated tasks (worker threads)', () => {
  it('a hard limit terminates a thread that never yields; the worker goes on taking jobs', async () => {
    const app = await openTestApp('sqlite', isolatedTasks);
    app.moduleUrl = FIXTURE;
    await startWorker(app, { concurrency: 1 });
    const started = Date.now();
    const done = await (await app.enqueue(spin, { ms: 60_000 }, { timeLimits: { hard: 1_000 } })).wait({ timeoutMs: 10_000 });
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ type: 'TimeLimitExceeded', message: 'hard time limit of 1000 ms exceeded' });
    expect(Date.now() - started).toBeLessThan(4_000);
    const next = await (await app.enqueue(whoami, { n: 7 })).wait({ timeoutMs: 10_000 });
    expect(next).toMatchObject({ status: 'completed', result: { n: 7, attempt: 1 }, progress: { percent: 50, stage: 'in a thread' } });
    expect((next.result as { threadId: number }).threadId).toBeGreaterThan(0);
  });

  it('a NonRetryableError thrown in a thread is not retried', async () => {
    const app = await openTestApp('sqlite', isolatedTasks);
    app.moduleUrl = FIXTURE;
    await startWorker(app);
    await startRecorder(app);
    const done = await (await app.enqueueByName('iso.refuse', {})).wait({ timeoutMs: 10_000 });
    expect(done).toMatchObject({ status: 'failed', attempts: 1, error: { type: 'NonRetryableError', message: 'refused in a thread' } });
    const stored = await waitFor(async () => {
      const r = await app.store.get(done.id);
      return r?.status === 'failed' ? r : undefined;
    });
    expect(stored.error?.type).toBe('NonRetryableError');
  });

  it('recycles a thread after CELERITY_MAX_TASKS_PER_CHILD jobs', async () => {
    const app = await openTestApp('sqlite', isolatedTasks, { maxTasksPerChild: 2 });
    app.moduleUrl = FIXTURE;
    await startWorker(app, { concurrency: 1 });
    const threads: number[] = [];
    for (let n = 0; n < 4; n++) {
      const done = await (await app.enqueue(whoami, { n })).wait({ timeoutMs: 10_000 });
      threads.push((done.result as { threadId: number }).threadId);
    }
    expect(threads[0]).toBe(threads[1]);
    expect(threads[2]).toBe(threads[3]);
    expect(threads[2]).not.toBe(threads[1]);
  });

  it('recycles a thread whose heap passed CELERITY_MAX_MEMORY_PER_CHILD', async () => {
    const app = await openTestApp('sqlite', isolatedTasks, { maxMemoryPerChild: 64 });
    app.moduleUrl = FIXTURE;
    await startWorker(app, { concurrency: 1 });
    const small = await (await app.enqueue(whoami, { n: 1 })).wait({ timeoutMs: 10_000 });
    const sameThread = await (await app.enqueue(whoami, { n: 2, hold_mb: 100 })).wait({ timeoutMs: 10_000 });
    const after = await (await app.enqueue(whoami, { n: 3 })).wait({ timeoutMs: 10_000 });
    const id = (r: { result: unknown }) => (r.result as { threadId: number }).threadId;
    expect(id(sameThread)).toBe(id(small));
    expect(id(after)).not.toBe(id(sameThread));
  });
});
