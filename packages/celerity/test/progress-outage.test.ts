import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/task.ts';
import { openTestApp, sleep, startWorker, useCleanup, waitFor } from './helpers.ts';
import { PrivateRedis } from './process-helpers.ts';

/**
 * docs/semantics.md, Redis outages: `ctx.progress()` does not wait for
 * Redis. A job reporting progress through an outage keeps running at its own
 * pace, within its hard limit, and its last snapshot is written once Redis is
 * back, before the job completes.
 */
useCleanup();

const STEPS = 40;
const STEP_MS = 50;
const OUTAGE_MS = 4_000;

const report = defineTask({
  name: 'progress.loop',
  retries: 0,
  // The loop alone takes 2 s; with the outage on top it would pass 5 s.
  timeLimits: { hard: 5_000 },
  input: z.object({}),
  handler: async (_input, ctx) => {
    const startedAt = Date.now();
    let longestCall = 0;
    for (let i = 1; i <= STEPS; i++) {
      const t = Date.now();
      await ctx.progress({ percent: (i * 100) / STEPS, stage: i === STEPS ? 'done' : 'working', step: i });
      longestCall = Math.max(longestCall, Date.now() - t);
      await sleep(STEP_MS);
    }
    return { ms: Date.now() - startedAt, longest_progress_call_ms: longestCall };
  },
});

describe('ctx.progress() during a Redis outage', () => {
  it('does not block the handler; the job completes within its hard limit and its last progress is written once Redis is back', async () => {
    const redis = await PrivateRedis.start();
    const app = await openTestApp('sqlite', [report], { redisUrl: redis.url });
    const worker = await startWorker(app, { concurrency: 1 });
    const queue = app.broker.queue(report.queue);
    const handle = await app.enqueue(report, {});
    // The loop is under way (a snapshot reached Redis) when Redis goes.
    await waitFor(async () => {
      const job = await queue.getJob(handle.id);
      return typeof job?.progress === 'object' && ((job.progress as { step?: number }).step ?? 0) >= 3;
    }, 10_000);
    await redis.shutdown();
    await sleep(OUTAGE_MS);
    await redis.start();

    const job = await waitFor(
      async () => {
        const j = await queue.getJob(handle.id).catch(() => undefined);
        return j && (j.finishedOn ?? 0) > 0 ? j : undefined;
      },
      20_000,
      100,
    );
    expect(job.failedReason ?? null, job.stacktrace?.join('\n')).toBeNull();
    expect(await job.getState()).toBe('completed');
    const result = job.returnvalue as { ms: number; longest_progress_call_ms: number };
    // The handler never stood still for the outage.
    expect(result.longest_progress_call_ms).toBeLessThan(500);
    expect(result.ms).toBeLessThan(OUTAGE_MS);
    expect(job.progress).toEqual({ percent: 100, stage: 'done', step: STEPS });
    expect(worker.activeCount).toBe(0);
  }, 40_000);
});
