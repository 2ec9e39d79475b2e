import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createApp } from '../src/app.ts';
import { TaskDefinitionError } from '../src/errors.ts';
import { LimitGate } from '../src/rate-limits/gate.ts';
import { durationMs, resolveQueueLimits } from '../src/rate-limits/options.ts';
import { GATE_SCRIPT } from '../src/rate-limits/scripts.ts';
import { defineTask, type TaskContext } from '../src/task.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, testRedis, useCleanup, waitFor } from './helpers.ts';
import { isoPause, LIMITS_APP, minute } from './fixtures/limits-app.ts';
import { PrivateRedis, Proc, processEnv, waitForWorkers } from './process-helpers.ts';

/**
 * Rate limits (a task's, per tenant, ctx.rateLimited) across workers. Each
 * test uses short windows (2 s), except the one that checks 50 per window
 * across 3 worker processes (6 s, see WINDOW_MS).
 */
useCleanup();

/** Start times (ms) of each job id, in order, per test. */
const starts = new Map<string, number[]>();
function started(ctx: TaskContext): void {
  const list = starts.get(ctx.jobId) ?? [];
  list.push(Date.now());
  starts.set(ctx.jobId, list);
}

/** The most starts in any window of `windowMs` (a start at t counts in [t, t + windowMs)). */
function mostInWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i]! - sorted[j]! >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

const limited = defineTask({
  name: 'rl.limited',
  queue: 'rl',
  retries: 0,
  rateLimit: { max: 3, per: '2s' },
  input: z.object({ n: z.number() }),
  handler: async ({ n }, ctx) => {
    started(ctx);
    return { n, attempt: ctx.attempt };
  },
});

const perTenant = defineTask({
  name: 'rl.tenant',
  queue: 'rl',
  retries: 0,
  rateLimit: { max: 2, per: '2s', perTenant: true },
  input: z.object({ n: z.number() }),
  handler: async ({ n }, ctx) => {
    started(ctx);
    return { n };
  },
});

/** Pauses its limit (ctx.rateLimited) on the first run of a job asking to. */
const paused = new Set<string>();
const upstream = defineTask({
  name: 'rl.upstream',
  queue: 'rl',
  retries: 0,
  rateLimit: { max: 100, per: '1s' },
  input: z.object({ pause_ms: z.number().optional() }),
  handler: async ({ pause_ms }, ctx) => {
    started(ctx);
    if (pause_ms !== undefined && !paused.has(ctx.jobId)) {
      paused.add(ctx.jobId);
      ctx.rateLimited(pause_ms);
    }
    return { attempt: ctx.attempt };
  },
});

const free = defineTask({ name: 'rl.free', queue: 'free', input: z.object({}), handler: async () => 'ok' });

describe('rate limit options', () => {
  it('per takes ms or a duration; bad limits are refused when the task is defined', () => {
    expect(durationMs(1500)).toBe(1500);
    expect(durationMs('10s')).toBe(10_000);
    expect(durationMs('1m')).toBe(60_000);
    expect(durationMs('1.5h')).toBe(5_400_000);
    expect(durationMs('250ms')).toBe(250);
    expect(durationMs('1 week')).toBeUndefined();
    expect(limited.rateLimit).toEqual({ max: 3, perMs: 2000, perTenant: false });
    const base = { name: 'x', input: z.object({}), handler: () => null };
    expect(() => defineTask({ ...base, rateLimit: { max: 0, per: '1s' } })).toThrow(TaskDefinitionError);
    expect(() => defineTask({ ...base, rateLimit: { max: 1.5, per: '1s' } })).toThrow(/max must be a positive integer/);
    expect(() => defineTask({ ...base, rateLimit: { max: 5, per: 'soon' } })).toThrow(/per must be ms or a duration/);
    expect(() => defineTask({ ...base, rateLimit: { max: 5, per: 0 } })).toThrow(TaskDefinitionError);
    expect(() => resolveQueueLimits({ q: { tenantCap: 0 } })).toThrow(/tenantCap must be a positive integer/);
    expect(() => resolveQueueLimits({ q: { rateLimit: { max: 1, per: '1s', perTenant: true } as never } })).toThrow(/perTenant is for tasks/);
    expect(() => createApp({ tasks: [free], queueLimits: { nope: { tenantCap: 1 } } })).toThrow(/no task of the app runs on queue "nope"/);
  });

  it('a job without limits pays no round trip: the gate script never reaches Redis', async () => {
    // A Redis of this test's own, so that no other test's scripts are in it.
    const redis = await PrivateRedis.start();
    const app = await openTestApp('sqlite', [free, limited], { redisUrl: redis.url });
    const sha = createHash('sha1').update(GATE_SCRIPT).digest('hex');
    const probe = testRedis(redis.url);
    const gate = new LimitGate({ redis: probe, prefix: 'p', queueLimits: new Map(), leaseMs: 1000, capRecheckMs: 100 });
    const job = { data: { input: {} }, id: 'j', name: free.name } as never;
    expect(gate.limitsOf('free', job, free)).toBeUndefined();
    await startWorker(app, { queues: ['free'] });
    for (let i = 0; i < 5; i++) await (await app.enqueue(free, {})).wait({ timeoutMs: 10_000 });
    expect(await probe.script('EXISTS', sha)).toEqual([0]);
    // The same worker setup with a limited task does load it: the probe can see a run.
    await startWorker(app, { queues: ['rl'] });
    await (await app.enqueue(limited, { n: 0 })).wait({ timeoutMs: 10_000 });
    expect(await probe.script('EXISTS', sha)).toEqual([1]);
  });
});

describe('rate limits', () => {
  it("a task's limit holds across workers, and held jobs spend no attempt (Redis and the SQL history)", async () => {
    const app = await openTestApp('sqlite', [limited]);
    await startRecorder(app);
    // Two workers: the count is in Redis, not in either.
    await startWorker(app, { concurrency: 5 });
    await startWorker(app, { concurrency: 5 });
    const handles = await Promise.all(Array.from({ length: 8 }, (_, n) => app.enqueue(limited, { n })));
    // The 5 held are given the slots in turn as they free, a window's worth at a time: 3 when
    // the first starts leave the window, 2 a window later (not all 5 at once, to be held again).
    const untils = await waitFor(async () => {
      const reasons = (await Promise.all(handles.map((h) => app.getJob(h.id)))).map((r) => r?.waiting?.until);
      const held = reasons.filter((u): u is number => u !== undefined);
      return held.length === 5 ? held.sort((a, b) => a - b) : null;
    }, 1_500);
    expect(untils[2]! - untils[0]!).toBeLessThan(1000);
    expect(untils[3]! - untils[0]!).toBeGreaterThanOrEqual(2000 - 50);
    const records = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 20_000 })));
    expect(handles.flatMap((h) => starts.get(h.id) ?? [])).toHaveLength(8);
    // A start is the job's recorded start, which is when the limit let it in (Redis's clock); the
    // handler begins a moment later, more or less so with the load of the machine.
    const times = records.map((r) => r.startedAt!);
    expect(mostInWindow(times, 2000)).toBeLessThanOrEqual(3);
    // 8 starts at 3 per 2 s need at least two full windows.
    expect(Math.max(...times) - Math.min(...times)).toBeGreaterThanOrEqual(4000 - 50);
    for (const r of records) {
      expect(r.status).toBe('completed');
      expect(r.attempts).toBe(1);
      expect((r.result as { attempt: number }).attempt).toBe(1);
    }
    const queue = app.broker.queue('rl');
    for (const h of handles) expect((await queue.getJob(h.id))!.attemptsMade).toBe(1);
    const store = await app.openStore();
    for (const h of handles) {
      const row = await waitFor(async () => {
        const r = await store.get(h.id);
        return r?.status === 'completed' ? r : null;
      });
      expect(row.attempts).toBe(1);
      expect(row.attemptHistory?.map((a) => a.status)).toEqual(['completed']);
    }
  });

  it('per-tenant limits are independent between tenants, and a held job says why it waits', async () => {
    const app = await openTestApp('sqlite', [perTenant]);
    await startWorker(app, { concurrency: 10 });
    const acme = await Promise.all([0, 1, 2].map((n) => app.enqueue(perTenant, { n }, { tenant: 'acme' })));
    const globex = await Promise.all([0, 1, 2].map((n) => app.enqueue(perTenant, { n }, { tenant: 'globex' })));
    const none = await Promise.all([0, 1, 2].map((n) => app.enqueue(perTenant, { n })));
    // Each tenant (and the jobs without one) gets its own 2 starts at once; its third waits.
    const firstOf = (hs: { id: string }[]) => hs.map((h) => starts.get(h.id)?.[0]).filter((t): t is number => t !== undefined);
    await waitFor(() => firstOf(acme).length === 2 && firstOf(globex).length === 2 && firstOf(none).length === 2, 5_000);
    const third = acme.find((h) => !starts.has(h.id))!;
    const view = await waitFor(async () => (await app.getJob(third.id))?.waiting);
    expect(view).toMatchObject({ reason: 'rate_limit', key: 'task:rl.tenant#tenant=acme' });
    expect(view.until).toBeGreaterThan(Date.now() - 1000);
    const noTenant = none.find((h) => !starts.has(h.id))!;
    expect((await waitFor(async () => (await app.getJob(noTenant.id))?.waiting)).key).toBe('task:rl.tenant#no-tenant');
    for (const hs of [acme, globex, none]) {
      const records = await Promise.all(hs.map((h) => h.wait({ timeoutMs: 10_000 })));
      expect(
        mostInWindow(
          records.map((r) => r.startedAt!),
          2000,
        ),
      ).toBeLessThanOrEqual(2);
    }
    // Once it ran, the reason is gone.
    expect((await app.getJob(third.id))?.waiting).toBeUndefined();
  });

  it('ctx.rateLimited(ms) pauses the key for every worker, and the paused job spends no attempt', async () => {
    const app = await openTestApp('sqlite', [upstream]);
    await startRecorder(app);
    await startWorker(app, { concurrency: 5 });
    await startWorker(app, { concurrency: 5 });
    const first = await app.enqueue(upstream, { pause_ms: 1500 });
    await waitFor(() => paused.has(first.id));
    const pausedAt = starts.get(first.id)![0]!;
    const view = await waitFor(async () => (await app.getJob(first.id))?.waiting);
    expect(view).toMatchObject({ reason: 'rate_limit_pause', key: 'task:rl.upstream' });
    const others = await Promise.all(Array.from({ length: 6 }, () => app.enqueue(upstream, {})));
    const records = await Promise.all([first, ...others].map((h) => h.wait({ timeoutMs: 10_000 })));
    // Nothing started (by the limit's own count) before the pause ended; the handler's clock reading came after the pause began.
    for (const r of records) expect(r.startedAt!).toBeGreaterThanOrEqual(pausedAt + 1500 - 20);
    expect(starts.get(first.id)).toHaveLength(2);
    for (const r of records) {
      expect(r.status).toBe('completed');
      expect(r.attempts).toBe(1);
      expect(r.result).toEqual({ attempt: 1 });
    }
    const store = await app.openStore();
    const row = await waitFor(async () => {
      const r = await store.get(first.id);
      return r?.status === 'completed' ? r : null;
    });
    expect(row.attempts).toBe(1);
    expect(row.attemptHistory?.map((a) => a.status)).toEqual(['completed']);
  });

  it('ctx.rateLimited(ms) crosses the isolation bridge', async () => {
    const app = await openTestApp('sqlite', [isoPause]);
    app.moduleUrl = new URL(`../../../${LIMITS_APP}`, import.meta.url).href;
    await startWorker(app);
    const flag = `${app.env.prefix}:test:iso-flag`;
    const done = await (await app.enqueue(isoPause, { flag, pause_ms: 800 })).wait({ timeoutMs: 15_000 });
    const pausedAt = Number(await testRedis().get(flag));
    expect(done).toMatchObject({ status: 'completed', attempts: 1, result: { attempt: 1 } });
    expect(done.startedAt!).toBeGreaterThanOrEqual(pausedAt + 800 - 20);
    expect(done.attemptHistory?.map((a) => a.status)).toEqual(['completed']);
  });

  it('a queue rate limit is BullMQ’s limiter', async () => {
    const app = await openTestApp('sqlite', { tasks: [free] });
    const limitedApp = createApp({ tasks: [free], config: app.config, queueLimits: { free: { rateLimit: { max: 2, per: '2s' } } } });
    onCleanup(() => limitedApp.close());
    await startWorker(limitedApp, { concurrency: 10 });
    const handles = await Promise.all(Array.from({ length: 5 }, () => app.enqueue(free, {})));
    const records = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 15_000 })));
    // BullMQ's limiter counts fixed windows, each opened by the first job it lets in: 5 jobs at 2
    // a window need 3 windows, so the fifth starts at least two windows after the first.
    const times = records.map((r) => r.startedAt!).sort((a, b) => a - b);
    expect(times[4]! - times[0]!).toBeGreaterThanOrEqual(4000 - 50);
    expect(mostInWindow(times, 2000)).toBeLessThanOrEqual(4);
    expect(records.every((r) => r.attempts === 1)).toBe(true);
  });
});

/**
 * The window of the cross-process test. The property is the same for any window; it only has to
 * be long enough that the second window's 50 have all started, and the check that no more did has
 * waited its 2 s, before the third window opens, 2 windows after the first start. A window's 50
 * start within about 0.1 s of each other here: 6 s leaves some 3 s to spare.
 */
const WINDOW_MS = 6_000;

describe('a rate limit across worker processes', () => {
  it(`50 per ${WINDOW_MS / 1000} s on a task holds across 3 worker processes: never more than 50 starts in any ${WINDOW_MS / 1000} s window`, async () => {
    const app = await openTestApp('sqlite', [minute]);
    const procs = [0, 1, 2].map(
      (i) =>
        new Proc(`worker${i}`, process.execPath, ['packages/celerity/bin/celerity.js', 'worker', '--app', LIMITS_APP], {
          env: processEnv(app.env, { CELERITY_CONCURRENCY: '20', LIM_MAX: '50', LIM_PER: `${WINDOW_MS}ms` }),
        }),
    );
    await waitForWorkers(app.broker.queue(minute.queue), 3, 20_000, procs);
    const jobs = await Promise.all(Array.from({ length: 110 }, (_, n) => app.enqueue(minute, { n })));
    const redis = testRedis();
    const key = `${app.env.prefix}:test:starts`;
    // The first window's 50, then the next 50 a window later; the last 10 wait for a third window.
    await waitFor(async () => (await redis.llen(key)) >= 100, 90_000, 100);
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await redis.llen(key)).toBe(100);
    // A start is the job's recorded start: when the limit let it in, on Redis's clock (each
    // handler begins a moment after, by as much as the machine's load makes it).
    const queue = app.broker.queue(minute.queue);
    const counts = await Promise.all(jobs.map(async (h) => (await queue.getJob(h.id))!));
    const times = counts.filter((j) => j.finishedOn).map((j) => j.processedOn!);
    expect(times).toHaveLength(100);
    const t0 = Math.min(...times);
    expect(mostInWindow(times, WINDOW_MS), `starts (ms after the first): ${times.map((t) => t - t0).join(' ')}`).toBe(50);
    expect(new Set(await redis.lrange(`${key}:ids`, 0, -1)).size).toBe(100);
    // Every process took part.
    expect(new Set(await redis.lrange(`${key}:pids`, 0, -1)).size).toBe(3);
    // However often a job was held, it spent no attempt and counts no start but its run.
    for (const job of counts) {
      expect(job.attemptsMade).toBeLessThanOrEqual(1);
      expect(job.attemptsStarted).toBeLessThanOrEqual(1);
    }
    expect(counts.filter((j) => j.attemptsMade === 1)).toHaveLength(100);
    // The 10 left wait for the next window, as jobs that never started, and say so.
    const left = counts.filter((j) => !j.finishedOn);
    expect(left).toHaveLength(10);
    for (const j of left) expect([j.attemptsStarted, j.processedOn || null]).toEqual([0, null]);
    const view = await app.getJob(left[0]!.id!);
    expect(view).toMatchObject({ status: 'queued', attempts: 0, startedAt: null, waiting: { reason: 'rate_limit', key: 'task:lim.minute' } });
  }, 120_000);
});
