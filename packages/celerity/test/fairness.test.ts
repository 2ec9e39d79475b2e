import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { FAIR_PARTS, fairKeys } from '../src/broker/fair-keys.ts';
import { FairDispatcher, fairCommands } from '../src/fairness/dispatcher.ts';
import { setWeight } from '../src/fairness/weights.ts';
import { inspect } from '../src/cli/inspect.ts';
import { tenantsView } from '../src/fairness/tenant-stats.ts';
import { queueStats } from '../src/ops/queue-stats.ts';
import { defineTask } from '../src/task.ts';
import { relSleep, tasks as relTasks } from './fixtures/reliability-app.ts';
import { spawnWorker, waitForWorkers } from './process-helpers.ts';
import { onCleanup, openTestApp, sleep, startRecorder, startWorker, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const QUEUE = 'fairq';
const starts: { id: string; tenant: string | null; at: number }[] = [];

const work = defineTask({
  name: 'fair.work',
  queue: QUEUE,
  input: z.object({ tenant: z.string().nullable(), ms: z.number().int().min(0) }),
  handler: async ({ tenant, ms }, ctx) => {
    starts.push({ id: ctx.jobId, tenant, at: Date.now() });
    if (ms > 0) await sleep(ms);
    return null;
  },
});

const doomed = defineTask({
  name: 'fair.doomed',
  queue: QUEUE,
  retries: 0,
  input: z.object({}),
  handler: async () => {
    throw new Error('doomed');
  },
});

/** An app whose queue `fairq` is fair, with a window of `window` jobs. */
function fairApp(window = 8, extra: Record<string, string> = {}) {
  starts.length = 0;
  return openTestApp('sqlite', [work], { fairQueues: QUEUE, fairWindow: window, ...extra });
}

/** A dispatcher of its own, as a worker has, with the window given. */
function dispatcher(app: Awaited<ReturnType<typeof fairApp>>, window: number): FairDispatcher {
  return new FairDispatcher({ redis: app.broker.redis, queue: app.broker.queue(QUEUE), prefix: app.config.prefix, window });
}

/** BullMQ's wait list in the order workers take it (oldest first). */
async function waitList(app: Awaited<ReturnType<typeof fairApp>>): Promise<string[]> {
  return (await testRedis().lrange(fairKeys.bullWait(app.config.prefix, QUEUE), 0, -1)).reverse();
}

async function flood(app: Awaited<ReturnType<typeof fairApp>>, tenant: string | undefined, n: number, ms = 0, priority?: number): Promise<string[]> {
  const handles = await app.enqueueMany(
    Array.from({ length: n }, () => ({ task: work, input: { tenant: tenant ?? null, ms }, options: { ...(tenant ? { tenant } : {}), ...(priority ? { priority } : {}) } })),
  );
  return handles.map((h) => h.id);
}

describe('fair scheduling between tenants', () => {
  it('parks a submitted job: it reads queued and stays out of the wait list beyond the window', async () => {
    const app = await fairApp(4);
    await flood(app, 'acme', 10);
    await waitFor(async () => (await waitList(app)).length === 4);
    await sleep(100);
    expect(await waitList(app)).toHaveLength(4);
    const [parked] = await flood(app, 'acme', 1);
    expect((await app.getJob(parked!))?.status).toBe('queued');
    // The promoted ones have waited since their submission, not since a year from now.
    const [stats] = await queueStats(app.broker, [QUEUE]);
    expect(stats!.oldestWaitingAgeMs).toBeGreaterThanOrEqual(100);
    expect(stats!.counts.delayed).toBe(7);
  });

  it("a flood of one tenant does not delay another's job beyond the window", async () => {
    const app = await fairApp(8);
    await startWorker(app, { concurrency: 4 });
    const flooded = await flood(app, 'A', 400, 5);
    await waitFor(() => starts.length >= 20);
    const b = await app.enqueue(work, { tenant: 'B', ms: 0 }, { tenant: 'B' });
    const submittedAfter = starts.length;
    await b.wait({ timeoutMs: 20_000 });
    const bIndex = starts.findIndex((s) => s.id === b.id);
    // Behind B at most the jobs already runnable (the window) and those running.
    expect(bIndex - submittedAfter).toBeLessThanOrEqual(8 + 4 + 2);
    // And the flood was still far from over: without fairness B would have run last.
    expect(starts.length).toBeLessThan(flooded.length);
  });

  it('weights 2:1 give a 2:1 split while both are backlogged', async () => {
    const app = await fairApp();
    await setWeight(app.broker.redis, app.config.prefix, QUEUE, 'A', 2);
    await flood(app, 'A', 100);
    await flood(app, 'B', 100);
    // The producer's own dispatch fills the default window; take the next 90 in order.
    const before = new Set(await waitList(app));
    const d = dispatcher(app, 8 + 90);
    await d.dispatchNow();
    const order = (await waitList(app)).filter((id) => !before.has(id));
    expect(order).toHaveLength(90);
    const tenants = await Promise.all(order.map(async (id) => (await app.getJob(id))!.tenant));
    const a = tenants.filter((t) => t === 'A').length;
    expect(a).toBeGreaterThanOrEqual(58);
    expect(a).toBeLessThanOrEqual(62);
  });

  it('priority orders jobs inside a tenant only', async () => {
    const app = await fairApp(1);
    // Fills the window of 1, so what follows stays in the backlogs.
    await flood(app, 'Z', 1);
    const [a5] = await flood(app, 'A', 1, 0, 5);
    const [a1] = await flood(app, 'A', 1, 0, 1);
    const [a3] = await flood(app, 'A', 1, 0, 3);
    const [b9] = await flood(app, 'B', 1, 0, 9);
    const before = new Set(await waitList(app));
    await dispatcher(app, 1 + 4).dispatchNow();
    const order = (await waitList(app)).filter((id) => !before.has(id));
    // A's jobs by priority; B's low-priority job takes its turn between them.
    expect(order).toEqual([a1, b9, a3, a5]);
  });

  it('forgets the passes tenants left with once the virtual time passes them, and keeps at most 10,000', async () => {
    const app = await fairApp(1);
    const base = fairKeys.base(app.config.prefix, QUEUE);
    const redis = testRedis();
    // What a version before \`left\` kept for every tenant ever seen.
    await redis.hset(`${base}last`, 'old-tenant', '0.5');
    await flood(app, 'Z', 1);
    for (const tenant of ['B', 'C', 'D']) await flood(app, tenant, 1);
    await flood(app, 'A', 4);
    await dispatcher(app, 1 + 7).dispatchNow();
    // B, C and D left one step ahead of a virtual time that A's later jobs moved past; A left last, ahead of it.
    const vt = Number(await redis.get(`${base}${FAIR_PARTS.vtime}`));
    expect(vt).toBeGreaterThanOrEqual(2);
    const left = await redis.zrange(`${base}${FAIR_PARTS.left}`, 0, -1, 'WITHSCORES');
    expect(left).toEqual(['A', String(vt + 1)]);
    expect(await redis.exists(`${base}last`)).toBe(0);

    // Only one-job tenants: the virtual time stands still, and the cap holds.
    await redis.zadd(`${base}${FAIR_PARTS.left}`, ...Array.from({ length: 10_050 }, (_, i) => [String(vt + 1 + i / 100_000), `t${i}`]).flat());
    await dispatcher(app, 1 + 7).dispatchNow();
    expect(await redis.zcard(`${base}${FAIR_PARTS.left}`)).toBe(10_000);
    // The ones nearest the virtual time went.
    expect(await redis.zscore(`${base}${FAIR_PARTS.left}`, 't0')).toBeNull();
    expect(await redis.zscore(`${base}${FAIR_PARTS.left}`, 't10049')).not.toBeNull();
  });

  it('jobs without a tenant form a tenant of their own', async () => {
    const app = await fairApp(1);
    await flood(app, 'Z', 1);
    await flood(app, 'A', 20);
    const none = await flood(app, undefined, 3);
    const before = new Set(await waitList(app));
    await dispatcher(app, 1 + 6).dispatchNow();
    const order = (await waitList(app)).filter((id) => !before.has(id));
    expect(order.filter((id) => none.includes(id))).toHaveLength(3);
  });

  it('loses no job when a dispatcher dies between the pop and the promote', async () => {
    const app = await fairApp(4);
    const redis = fairCommands(app.broker.redis);
    const { prefix } = app.config;
    // Fill the window so the producer's dispatch leaves the next jobs parked.
    await flood(app, 'A', 4);
    await waitFor(async () => (await waitList(app)).length === 4);
    const [lost] = await flood(app, 'B', 1);
    // A dispatcher pops (the script) and dies before promoting.
    const [taken] = await redis.celerityFairDispatch(fairKeys.bullWait(prefix, QUEUE), fairKeys.bullDelayed(prefix, QUEUE), fairKeys.base(prefix, QUEUE), 100, 100, 1);
    expect(taken).toEqual([lost]);
    expect(await waitList(app)).not.toContain(lost);
    expect(await testRedis().zscore(`${fairKeys.base(prefix, QUEUE)}inflight`, lost!)).not.toBeNull();
    // The sweep of a live process finds it and promotes it.
    expect(await dispatcher(app, 4).sweep(0)).toBe(1);
    expect(await waitList(app)).toContain(lost);
    expect(await testRedis().zcard(`${fairKeys.base(prefix, QUEUE)}inflight`)).toBe(0);
    // A second sweep (another process) promoting it again changes nothing.
    await redis.zadd(`${fairKeys.base(prefix, QUEUE)}inflight`, 0, lost!);
    await dispatcher(app, 4).sweep(0);
    expect((await waitList(app)).filter((id) => id === lost)).toHaveLength(1);
    await startWorker(app);
    await waitFor(async () => (await app.getJob(lost!))?.status === 'completed');
  });

  it('queues a job once when an idempotency key or a job id returns an existing one', async () => {
    const app = await fairApp(1);
    await flood(app, 'Z', 1);
    const first = await app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A', idempotencyKey: 'k1' });
    const again = await app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A', idempotencyKey: 'k1' });
    expect([again.id, again.created]).toEqual([first.id, false]);
    const own = await app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A', jobId: 'mine-1' });
    const ownAgain = await app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A', jobId: 'mine-1' });
    expect(ownAgain.id).toBe(own.id);
    expect(await testRedis().zrange(`${fairKeys.base(app.config.prefix, QUEUE)}b:A`, 0, -1)).toEqual([first.id, own.id]);
  });

  it('cancels a parked job, and the dispatcher skips it', async () => {
    const app = await fairApp(2);
    await flood(app, 'A', 2);
    const [gone, next] = await flood(app, 'B', 2);
    expect(await app.cancel(gone!)).toBe('cancelled');
    expect((await app.getJob(gone!))?.status).toBe('cancelled');
    // A window of 4 refills once at most 2 are runnable (the low-water mark is half the window).
    await dispatcher(app, 4).dispatchNow();
    const wait = await waitList(app);
    expect(wait).toContain(next);
    expect(wait).not.toContain(gone);
    expect(await testRedis().zcard(`${fairKeys.base(app.config.prefix, QUEUE)}inflight`)).toBe(0);
  });

  it('records a fair job in the history like any other', async () => {
    const app = await fairApp(4);
    await startRecorder(app);
    await startWorker(app);
    const jobs = await Promise.all(Array.from({ length: 20 }, () => app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A' })));
    for (const j of jobs) await j.wait({ timeoutMs: 10_000 });
    const store = await app.openStore();
    await waitFor(async () => (await Promise.all(jobs.map((j) => store.get(j.id)))).every((r) => r?.status === 'completed'));
    const rows = await Promise.all(jobs.map((j) => store.get(j.id)));
    for (const r of rows) {
      expect(r).toMatchObject({ status: 'completed', attempts: 1, tenant: 'A' });
      expect(r!.startedAt).toBeGreaterThanOrEqual(r!.createdAt);
    }
  });

  it('a retry of a cancelled job (an operating action) goes through the fair stage', async () => {
    const app = await fairApp(4);
    await startRecorder(app);
    const [gone] = await flood(app, 'A', 1);
    await waitFor(async () => (await waitList(app)).includes(gone!));
    expect(await app.cancel(gone!)).toBe('cancelled');
    await waitFor(async () => (await (await app.openStore()).get(gone!))?.status === 'cancelled');
    const retry = await app.retry(gone!);
    // Parked, then dispatched at once (the window is empty); never left parked.
    await waitFor(async () => (await waitList(app)).includes(retry.id));
    await startWorker(app);
    await retry.wait({ timeoutMs: 10_000 });
  });

  it("an operator's retry of a failed fair job keeps its priority in its tenant's backlog", async () => {
    const app = await openTestApp('sqlite', [work, doomed], { fairQueues: QUEUE, fairWindow: 1 });
    await startRecorder(app);
    const worker = await startWorker(app);
    const failed = await app.enqueue(doomed, {}, { tenant: 'A', priority: 2 });
    expect((await failed.wait({ timeoutMs: 10_000 })).status).toBe('failed');
    await worker.close();
    // Fills the window of 1, so what follows stays in the backlogs.
    await flood(app, 'Z', 1);
    const [later] = await flood(app, 'A', 1, 0, 7);
    const retry = await app.retry(failed.id);
    const backlog = await testRedis().zrange(`${fairKeys.base(app.config.prefix, QUEUE)}${FAIR_PARTS.backlog}A`, 0, -1, 'WITHSCORES');
    // Score = priority · 2^32 + arrival: the retry keeps priority 2, so it goes before the priority-7 job that arrived first.
    expect(backlog[0]).toBe(retry.id);
    expect(Math.floor(Number(backlog[1]) / 2 ** 32)).toBe(2);
    expect(backlog[2]).toBe(later);
  });

  it('a delayed job enters its backlog when due, not before', async () => {
    const app = await fairApp(10);
    const delayed = await app.enqueue(work, { tenant: 'A', ms: 0 }, { tenant: 'A', delay: 300 });
    await dispatcher(app, 10).dispatchNow();
    expect(await waitList(app)).not.toContain(delayed.id);
    expect((await delayed.status())?.status).toBe('queued');
    await startWorker(app);
    await delayed.wait({ timeoutMs: 10_000 });
    const started = starts.find((s) => s.id === delayed.id)!;
    expect(started.at).toBeGreaterThanOrEqual((await delayed.status())!.createdAt + 300);
  });

  it('holds across two worker processes sharing the queue', async () => {
    const app = await fairApp(8);
    // A second app on the same prefix: its own connections and dispatchers, as another process has.
    const other = createApp({ tasks: [work], config: app.config });
    await startWorker(app, { concurrency: 3 });
    await startWorker(other, { concurrency: 3 });
    await flood(app, 'A', 300, 5);
    await waitFor(() => starts.length >= 20);
    const bs = await Promise.all(['B', 'C', 'D'].map((t) => other.enqueue(work, { tenant: t, ms: 0 }, { tenant: t })));
    const submittedAfter = starts.length;
    await Promise.all(bs.map((b) => b.wait({ timeoutMs: 20_000 })));
    const last = Math.max(...bs.map((b) => starts.findIndex((s) => s.id === b.id)));
    expect(last - submittedAfter).toBeLessThanOrEqual(8 + 6 + 3 + 2);
    await other.close();
  });

  it('sets a weight through the admin API, over the configured one, and refuses bad values', async () => {
    const app = await fairApp(8, { fairWeights: `${QUEUE}:A=3` });
    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const put = (path: string, body: unknown) => server.inject({ method: 'PUT', url: path, payload: body as object });
    // Workers write the configured weights as they start.
    await startWorker(app);
    await waitFor(async () => (await testRedis().hget(`${fairKeys.base(app.config.prefix, QUEUE)}w:cfg`, 'A')) === '3');
    let res = await put(`/v1/queues/${QUEUE}/tenants/A/weight`, { weight: 2 });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ queue: QUEUE, tenant: 'A', weight: 2, source: 'api', fair: true });
    res = await put(`/v1/queues/${QUEUE}/tenants/A/weight`, { weight: null });
    expect(res.json()).toMatchObject({ weight: 3, source: 'config' });
    res = await put(`/v1/queues/${QUEUE}/tenants/B/weight`, { weight: null });
    expect(res.json()).toMatchObject({ weight: 1, source: 'default' });
    for (const [path, body, status, code] of [
      [`/v1/queues/${QUEUE}/tenants/A/weight`, { weight: 0 }, 400, 'invalid_request'],
      [`/v1/queues/${QUEUE}/tenants/A/weight`, { weight: 'heavy' }, 400, 'invalid_request'],
      [`/v1/queues/${QUEUE}/tenants/A/weight`, {}, 400, 'invalid_request'],
      [`/v1/queues/nope/tenants/A/weight`, { weight: 2 }, 404, 'queue_not_found'],
      [`/v1/queues/${QUEUE}/tenants/%01x/weight`, { weight: 2 }, 422, 'invalid_options'],
    ] as const) {
      const bad = await put(path, body);
      expect(bad.statusCode, path).toBe(status);
      expect(bad.json().error.code).toBe(code);
    }
  });

  it('holds across two spawned worker processes', async () => {
    // The reliability fixture's `rel.sleep` on the queue `default`, fair in every process.
    const app = await openTestApp('sqlite', relTasks, { fairQueues: 'default', fairWindow: 6 });
    const env = { CELERITY_FAIR_QUEUES: 'default', CELERITY_FAIR_WINDOW: '6' };
    const procs = [spawnWorker(app.env, { concurrency: 2, env, name: 'w1' }), spawnWorker(app.env, { concurrency: 2, env, name: 'w2' })];
    await waitForWorkers(app.broker.queue('default'), 2, 30_000, procs);
    const flooded = await app.enqueueMany(Array.from({ length: 200 }, () => ({ task: relSleep, input: { ms: 20 }, options: { tenant: 'A' } })));
    await waitFor(async () => (await app.broker.queue('default').getJobCountByTypes('completed')) >= 12, 20_000);
    const small = await Promise.all(['B', 'C', 'D'].map((tenant) => app.enqueue(relSleep, { ms: 0 }, { tenant })));
    const results = await Promise.all(small.map((h) => h.wait({ timeoutMs: 30_000 })));
    const records = await Promise.all(small.map((h) => h.status()));
    const aStarts = (await Promise.all(flooded.map((h) => app.getJob(h.id)))).map((r) => r?.startedAt ?? Number.POSITIVE_INFINITY);
    for (const r of records) {
      // A's jobs started while this one waited: at most the window and the running ones (2 × 2), and a little slack.
      const ahead = aStarts.filter((t) => t > r!.createdAt && t < r!.startedAt!).length;
      expect(ahead, r!.tenant!).toBeLessThanOrEqual(6 + 4 + 3);
    }
    // Without fairness they would have run behind most of A's flood.
    expect(aStarts.filter((t) => t > Math.max(...records.map((r) => r!.startedAt!))).length).toBeGreaterThan(50);
    // Both processes took jobs.
    const done = [...results, ...(await Promise.all(flooded.map((h) => h.status()))).map((r) => r?.result)];
    expect(new Set(done.map((r) => (r as { pid?: number } | null)?.pid).filter(Boolean)).size).toBe(2);
  }, 60_000);

  it('shows each tenant: backlog, running, wait p95, throughput, weight (API and inspect)', async () => {
    const app = await fairApp(2);
    await setWeight(app.broker.redis, app.config.prefix, QUEUE, 'A', 2);
    // Two finished jobs of B, to sample.
    const worker = await startWorker(app, { concurrency: 1 });
    for (const h of await Promise.all([0, 1].map(() => app.enqueue(work, { tenant: 'B', ms: 0 }, { tenant: 'B' })))) await h.wait({ timeoutMs: 10_000 });
    // And one of C running.
    const c = await app.enqueue(work, { tenant: 'C', ms: 600 }, { tenant: 'C' });
    await waitFor(async () => (await c.status())?.status === 'started');
    expect((await tenantsView(app.broker, QUEUE)).tenants.find((t) => t.tenant === 'C')).toMatchObject({ running: 1, backlog: 0 });
    await c.wait({ timeoutMs: 10_000 });
    await worker.close();
    // A flood with no worker: 2 runnable, 8 in A's backlog; one job without a tenant.
    await flood(app, 'A', 10);
    await flood(app, undefined, 1);
    await dispatcher(app, 2).dispatchNow();
    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    const res = await server.inject({ method: 'GET', url: `/v1/queues/${QUEUE}/tenants` });
    expect(res.statusCode).toBe(200);
    const view = res.json();
    expect(view).toMatchObject({ queue: QUEUE, fair: true, sampled: 3, truncated: false });
    const byTenant = Object.fromEntries(view.tenants.map((t: { tenant: string | null }) => [String(t.tenant), t]));
    expect(byTenant.A).toMatchObject({ backlog: 8, running: 0, wait_p95_ms: null, weight: 2 });
    expect(byTenant.null).toMatchObject({ backlog: 1, weight: 1 });
    expect(byTenant.B).toMatchObject({ backlog: 0, running: 0, weight: 1 });
    expect(byTenant.B.wait_p95_ms).toBeGreaterThanOrEqual(0);
    expect(byTenant.B.throughput_per_min).toBeGreaterThan(0);
    expect((await server.inject({ method: 'GET', url: '/v1/queues/nope/tenants' })).json().error.code).toBe('queue_not_found');
    const lines: string[] = [];
    expect(await inspect('tenants', { redisUrl: app.config.redisUrl, prefix: app.config.prefix, queues: QUEUE }, (l) => lines.push(l))).toBe(0);
    expect(lines.join('\n')).toMatch(/TENANT\s+BACKLOG\s+RUNNING\s+WAIT P95\s+DONE\/MIN\s+WEIGHT/);
    expect(lines.join('\n')).toMatch(/\bA\s+8\s+0\s+-\s+0\s+2\b/);
  });
});
