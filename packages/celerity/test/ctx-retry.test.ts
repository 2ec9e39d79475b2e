import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidRetryError, MaxRetriesExceededError, Retry } from '../src/index.ts';
import { defineTask, requestRetry } from '../src/task.ts';
import { isoRetry } from './fixtures/retry-app.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const FIXTURE = new URL('./fixtures/retry-app.ts', import.meta.url).href;

let reachedAfterRetry = false;

const retryOnce = defineTask({
  name: 'rt.once',
  input: z.object({}),
  retries: 3,
  // A backoff far longer than the retry's delay: the gap shows the override.
  backoff: { base: 60_000, max: 60_000, jitter: 'none' },
  handler: async (_input, ctx) => {
    if (ctx.attempt === 1) {
      ctx.retry({ delay: 300, reason: 'upstream busy' });
      reachedAfterRetry = true;
    }
    return { attempt: ctx.attempt };
  },
});

const alwaysRetry = defineTask({
  name: 'rt.always',
  input: z.object({}),
  retries: 2,
  // ctx.retry is retried even where retryOn would refuse every error.
  retryOn: () => false,
  handler: async (_input, ctx) => ctx.retry({ delay: 10, reason: 'upstream busy' }),
});

const badDelay = defineTask({
  name: 'rt.bad-delay',
  input: z.object({ delay: z.number() }),
  retries: 3,
  handler: async ({ delay }, ctx) => ctx.retry({ delay }),
});

describe.each(stores)('ctx.retry (%s store)', (kind) => {
  it('ends the attempt, runs the next one after the delay, and records the reason', async () => {
    const app = await openTestApp(kind, [retryOnce]);
    await startWorker(app);
    await startRecorder(app);
    reachedAfterRetry = false;
    const handle = await app.enqueue(retryOnce, {});
    // Between the two attempts the job waits in BullMQ's delayed set.
    await waitFor(async () => (await handle.status())?.status === 'retrying', 5_000, 10);
    const done = await handle.wait({ timeoutMs: 10_000 });
    expect(done).toMatchObject({ status: 'completed', attempts: 2, result: { attempt: 2 }, error: null });
    expect(reachedAfterRetry).toBe(false);

    const live = (await app.getJob(done.id))!;
    const history = live.attemptHistory!;
    expect(history.map((a) => [a.attempt, a.status, a.error])).toEqual([
      // Each attempt keeps its stack (shown to admins only, GET /v1/jobs/{id}?stacks=true).
      [1, 'failed', { type: 'Retry', message: 'upstream busy', stack: expect.stringContaining('Retry: upstream busy') }],
      [2, 'completed', null],
    ]);
    expect(history[1]!.startedAt! - history[0]!.finishedAt!).toBeGreaterThanOrEqual(300);
    expect(history[1]!.startedAt! - history[0]!.finishedAt!).toBeLessThan(10_000);

    const stored = await waitFor(async () => {
      const r = await app.store.get(done.id);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(stored).toEqual(live);
  });

  it('fails when no attempt is left, saying retries were exhausted and why', async () => {
    const app = await openTestApp(kind, [alwaysRetry]);
    await startWorker(app);
    await startRecorder(app);
    const done = await (await app.enqueue(alwaysRetry, {})).wait({ timeoutMs: 10_000 });
    expect(done).toMatchObject({
      status: 'failed',
      attempts: 3,
      error: { type: 'MaxRetriesExceededError', message: 'retries exhausted after 3 attempts: upstream busy' },
    });
    const live = (await app.getJob(done.id))!;
    expect(live.attemptHistory!.map((a) => a.error?.type)).toEqual(['Retry', 'Retry', 'MaxRetriesExceededError']);
    const stored = await waitFor(async () => {
      const r = await app.store.get(done.id);
      return r?.status === 'failed' ? r : undefined;
    });
    expect(stored).toEqual(live);
  });
});

describe('ctx.retry', () => {
  it('works in an isolation thread, with the delay taken across the thread boundary', async () => {
    const app = await openTestApp('sqlite', [isoRetry]);
    app.moduleUrl = FIXTURE;
    await startWorker(app);
    const done = await (await app.enqueue(isoRetry, { delay: 200 })).wait({ timeoutMs: 15_000 });
    expect(done).toMatchObject({ status: 'completed', attempts: 2, result: { attempt: 2 } });
    const history = (await app.getJob(done.id))!.attemptHistory!;
    expect(history[0]!.error).toEqual({ type: 'Retry', message: 'thread says later', stack: expect.stringContaining('thread says later') });
    // The task's backoff is a minute: only the retry's own delay explains a quick second attempt.
    expect(history[1]!.startedAt! - history[0]!.finishedAt!).toBeGreaterThanOrEqual(200);
    expect(history[1]!.startedAt! - history[0]!.finishedAt!).toBeLessThan(10_000);
  });

  it('a bad delay is an InvalidRetryError, which fails the job at once', async () => {
    for (const delay of [-1, 1.5, 2 ** 31, Number.NaN, Infinity]) {
      expect(() => requestRetry({ delay }), String(delay)).toThrow(InvalidRetryError);
    }
    expect(() => requestRetry({ delay: 'soon' as unknown as number })).toThrow(InvalidRetryError);
    expect(() => requestRetry({ delay: 2 ** 31 - 1 })).toThrow(Retry);
    expect(() => requestRetry()).toThrow(expect.objectContaining({ name: 'Retry', delay: undefined, reason: 'retry requested' }));

    const app = await openTestApp('sqlite', [badDelay]);
    await startWorker(app);
    const done = await (await app.enqueue(badDelay, { delay: -5 })).wait({ timeoutMs: 5_000 });
    expect(done).toMatchObject({ status: 'failed', attempts: 1, error: { type: 'InvalidRetryError' } });
    expect(done.error!.message).toContain('delay must be an integer');
    expect(new MaxRetriesExceededError('x', 1).code).toBe('max_retries_exceeded');
  });
});
