import { createServer } from 'node:net';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { errorHandlerPlugin, errorSchema } from '../src/api/errors.ts';
import { healthRoutes } from '../src/api/routes/health.ts';
import { buildServer } from '../src/api/server.ts';
import { NonRetryableError } from '../src/errors.ts';
import { appMetrics } from '../src/ops/metrics.ts';
import { HealthServer } from '../src/worker/health-server.ts';
import { defineTask } from '../src/task.ts';
import { createTestApp, deferred, onCleanup, openTestApp, startWorker, useCleanup, waitFor } from './helpers.ts';
import { startHealthServer } from '../src/index.ts';
import { freePort, PrivateRedis, spawnWorker } from './process-helpers.ts';
import { relSleep } from './fixtures/reliability-app.ts';

useCleanup();

// ---------------------------------------------------------------------------
// Reading the exposition text

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when none. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

// ---------------------------------------------------------------------------

const release = deferred();
const ok = defineTask({ name: 'm.ok', input: z.object({}), handler: async () => ({ ok: true }) });
const fail = defineTask({
  name: 'm.fail',
  input: z.object({}),
  handler: async () => {
    throw new NonRetryableError('no');
  },
});
const flaky = defineTask({
  name: 'm.flaky',
  retries: 2,
  backoff: { base: 10, max: 10 },
  input: z.object({}),
  handler: async (_input, ctx) => {
    if (ctx.attempt === 1) throw new Error('first attempt fails');
    return { attempt: ctx.attempt };
  },
});
const hold = defineTask({
  name: 'm.hold',
  queue: 'slow',
  input: z.object({}),
  handler: async () => {
    await release.promise;
    return {};
  },
});

describe('metrics', () => {
  it('counts jobs by task, queue and how they ended; queue depth and active jobs at scrape time; no job ids', async () => {
    const app = await openTestApp('sqlite', [ok, fail, flaky, hold]);
    const api = await buildServer(app, { logger: false });
    const scrape = async () => {
      const res = await api.inject({ method: 'GET', url: '/metrics' });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      return { text: res.body, samples: parse(res.body) };
    };
    const worker = await startWorker(app, { concurrency: 5 });
    app.metrics().trackWorker(worker);

    const before = await scrape();
    expect(before.samples.filter((s) => s.name === 'celerity_jobs_total' && s.labels.task?.startsWith('m.'))).toEqual([]);
    // The process defaults are there too.
    expect(value(before.samples, 'process_cpu_user_seconds_total')).toBeGreaterThanOrEqual(0);
    expect(value(before.samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);

    const handles = await Promise.all([app.enqueue(ok, {}), app.enqueue(ok, {}), app.enqueue(ok, {}), app.enqueue(fail, {}), app.enqueue(flaky, {})]);
    const records = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 10_000, pollMs: 20 })));
    expect(records.map((r) => r.status)).toEqual(['completed', 'completed', 'completed', 'failed', 'completed']);

    // Hooks run after the attempt's end; the last counter may lag the status read by a tick.
    const { samples, text } = await waitFor(async () => {
      const s = await scrape();
      return value(s.samples, 'celerity_jobs_total', { task: 'm.flaky', status: 'completed' }) === 1 ? s : undefined;
    }, 5_000);
    const q = { queue: 'default' };
    expect(value(samples, 'celerity_jobs_total', { ...q, task: 'm.ok', status: 'completed' })).toBe(3);
    expect(value(samples, 'celerity_jobs_total', { ...q, task: 'm.fail', status: 'failed' })).toBe(1);
    expect(value(samples, 'celerity_jobs_total', { ...q, task: 'm.flaky', status: 'retrying' })).toBe(1);
    expect(value(samples, 'celerity_jobs_total', { ...q, task: 'm.ok', status: 'failed' })).toBeUndefined();
    expect(value(samples, 'celerity_retries_total', { ...q, task: 'm.flaky' })).toBe(1);
    expect(value(samples, 'celerity_retries_total', { ...q, task: 'm.ok' })).toBeUndefined();
    // One duration per attempt, one wait per job (its first attempt).
    expect(value(samples, 'celerity_job_duration_seconds_count', { ...q, task: 'm.ok', status: 'completed' })).toBe(3);
    expect(value(samples, 'celerity_job_duration_seconds_count', { ...q, task: 'm.flaky', status: 'retrying' })).toBe(1);
    expect(value(samples, 'celerity_job_duration_seconds_bucket', { ...q, task: 'm.ok', status: 'completed', le: '600' })).toBe(3);
    expect(value(samples, 'celerity_job_duration_seconds_bucket', { ...q, task: 'm.ok', status: 'completed', le: '+Inf' })).toBe(3);
    expect(value(samples, 'celerity_job_wait_seconds_count', { ...q, task: 'm.ok' })).toBe(3);
    expect(value(samples, 'celerity_job_wait_seconds_count', { ...q, task: 'm.flaky' })).toBe(1);
    expect(value(samples, 'celerity_job_wait_seconds_sum', { ...q, task: 'm.ok' })).toBeLessThan(10);
    expect(value(samples, 'celerity_queue_depth', { ...q, state: 'completed' })).toBe(4);
    expect(value(samples, 'celerity_queue_depth', { ...q, state: 'failed' })).toBe(1);
    expect(value(samples, 'celerity_queue_depth', { ...q, state: 'waiting' })).toBe(0);

    // A running job, and one delayed on the same queue.
    const held = await app.enqueue(hold, {});
    await app.enqueue(hold, {}, { delay: 60_000 });
    const during = await waitFor(async () => {
      const s = (await scrape()).samples;
      return value(s, 'celerity_worker_active_jobs') === 1 ? s : undefined;
    }, 5_000);
    expect(value(during, 'celerity_queue_depth', { queue: 'slow', state: 'active' })).toBe(1);
    expect(value(during, 'celerity_queue_depth', { queue: 'slow', state: 'delayed' })).toBe(1);
    expect(value(during, 'celerity_queue_depth', { queue: 'slow', state: 'waiting' })).toBe(0);
    release.resolve();
    await held.wait({ timeoutMs: 5_000, pollMs: 20 });
    const after = await waitFor(async () => {
      const s = (await scrape()).samples;
      return value(s, 'celerity_jobs_total', { queue: 'slow', task: 'm.hold', status: 'completed' }) === 1 ? s : undefined;
    }, 5_000);
    expect(value(after, 'celerity_worker_active_jobs')).toBe(0);

    // Bounded labels: names of tasks, queues, statuses, states, buckets and (capped) tenants; never a job id.
    const ids = [...handles.map((h) => h.id), held.id];
    const allowed = new Set(['task', 'queue', 'status', 'state', 'le', 'quantile', 'type', 'space', 'version', 'kind', 'major', 'minor', 'patch']);
    for (const s of parse(text).concat(after)) {
      for (const [k, v] of Object.entries(s.labels)) {
        // A tenant, bounded (TenantLabels), only on the per-tenant series.
        if (k === 'tenant') expect(s.name, `${s.name} label ${k}`).toMatch(/^celerity_tenant_/);
        else expect(allowed, `${s.name} label ${k}`).toContain(k);
        expect(ids).not.toContain(v);
        expect(v).not.toMatch(/^[0-9a-z]{26}$/);
      }
    }
    await api.close();
  });

  it('counts jobs per tenant on series of their own, with at most CELERITY_METRICS_TENANTS tenant names', async () => {
    const app = await openTestApp('sqlite', [ok, fail], { metricsTenants: 2 });
    // appMetrics subscribes to the job hooks: made before the worker runs anything.
    const metrics = appMetrics(app);
    await startWorker(app, { concurrency: 5 });
    const runs: [typeof ok | typeof fail, string | undefined][] = [
      [ok, 'acme'],
      [ok, 'acme'],
      [fail, 'acme'],
      [ok, 'globex'],
      [ok, 'initech'],
      [ok, 'umbrella'],
      [ok, undefined],
    ];
    // One at a time, so that the first two tenants seen are acme and globex.
    for (const [task, tenant] of runs) await (await app.enqueue(task, {}, tenant ? { tenant } : {})).wait({ timeoutMs: 10_000, pollMs: 20 });
    const samples = parse(await metrics.registry.metrics());
    const jobs = (tenant: string, status: string) => value(samples, 'celerity_tenant_jobs_total', { queue: 'default', tenant, status });
    expect(jobs('acme', 'completed')).toBe(2);
    expect(jobs('acme', 'failed')).toBe(1);
    expect(jobs('globex', 'completed')).toBe(1);
    // Past the cap of two names: the later tenants share one series.
    expect(jobs('(other)', 'completed')).toBe(2);
    expect(jobs('(none)', 'completed')).toBe(1);
    expect(samples.some((s) => s.labels.tenant === 'initech' || s.labels.tenant === 'umbrella')).toBe(false);
    expect(value(samples, 'celerity_tenant_job_wait_seconds_count', { queue: 'default', tenant: 'acme' })).toBe(3);
    expect(value(samples, 'celerity_tenant_job_wait_seconds_count', { queue: 'default', tenant: '(other)' })).toBe(2);
  });

  it('a second app in the same process has its own registry', async () => {
    const a = createTestApp('sqlite', [ok]);
    const b = createTestApp('sqlite', [ok]);
    expect(appMetrics(a)).toBe(appMetrics(a));
    expect(appMetrics(a).registry).not.toBe(appMetrics(b).registry);
    const servers = await Promise.all([buildServer(a, { logger: false }), buildServer(b, { logger: false })]);
    for (const s of servers) expect((await s.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
    await Promise.all(servers.map((s) => s.close()));
  });
});

describe('API readiness', () => {
  it('/readyz turns 503 naming redis while Redis is stopped, and 200 again when it returns; /healthz and /metrics keep answering', async () => {
    const redis = await PrivateRedis.start();
    const app = await openTestApp('sqlite', [ok], { redisUrl: redis.url });
    const api = await buildServer(app, { logger: false });
    const ready = () => api.inject({ method: 'GET', url: '/readyz' });

    let res = await ready();
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ready', redis: 'up', store: 'up' });
    // A first scrape with Redis up gives the depth gauges values.
    expect((await api.inject({ method: 'GET', url: '/metrics' })).body).toContain('celerity_queue_depth{queue="default",state="waiting"} 0');

    await redis.shutdown();
    res = await waitFor(async () => {
      const r = await ready();
      return r.statusCode === 503 ? r : undefined;
    }, 5_000);
    expect(res.json()).toEqual({ error: { code: 'not_ready', message: 'redis is down', details: { redis: 'down', store: 'up' } } });
    // /readyz pings; /healthz reads the connection's state, which may say
    // `ready` a moment longer, until ioredis notices the closed socket.
    const health = await waitFor(async () => {
      const r = await api.inject({ method: 'GET', url: '/healthz' });
      return r.json().redis === 'down' ? r : undefined;
    }, 5_000);
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ status: 'degraded', redis: 'down' });
    // The scrape neither fails nor hangs; the depth is the last one read.
    const started = Date.now();
    const metrics = await api.inject({ method: 'GET', url: '/metrics' });
    expect(metrics.statusCode).toBe(200);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(metrics.body).toContain('celerity_queue_depth{queue="default",state="waiting"} 0');

    await redis.start();
    res = await waitFor(async () => {
      const r = await ready();
      return r.statusCode === 200 ? r : undefined;
    }, 10_000);
    expect(res.json()).toEqual({ status: 'ready', redis: 'up', store: 'up' });
    await api.close();
  });

  it('/readyz names the store when SQL is unreachable', async () => {
    const closed = await freePort();
    const app = createTestApp('sqlite', [ok], { databaseUrl: `postgres://root@127.0.0.1:${closed}/none` });
    await app.broker.ready();
    // The routes alone: the full server would run the store's migrations first, and fail.
    const server = Fastify();
    server.addSchema(errorSchema);
    errorHandlerPlugin(server);
    await server.register(healthRoutes, { app });
    const res = await server.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ error: { code: 'not_ready', message: 'store is down', details: { redis: 'up', store: 'down' } } });
    await server.close();
  });
});

describe('recorder health port', () => {
  it('/readyz of a recorder needs Redis and the job store, and names the one that is down', async () => {
    const closed = await freePort();
    const app = createTestApp('sqlite', [ok], { databaseUrl: `postgres://root@127.0.0.1:${closed}/none` });
    await app.broker.ready();
    const health = new HealthServer({ app, role: 'recorder' });
    await health.listen(0, '127.0.0.1');
    try {
      const res = await fetch(`http://127.0.0.1:${health.port}/readyz`);
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({ error: { code: 'not_ready', message: 'store is down', details: { redis: 'up', store: 'down' } } });
    } finally {
      await health.close();
    }
  });
});

describe('worker health port', () => {
  it("serves a worker run inside the user's own process, through the package's public exports", async () => {
    const app = await openTestApp('sqlite', [ok]);
    // What a service that runs workers itself does: metrics first, then the worker and its port.
    const metrics = app.metrics();
    expect(metrics).toBe(appMetrics(app));
    const worker = app.createWorker();
    metrics.trackWorker(worker);
    const health = await startHealthServer({ app, worker, port: 0, host: '127.0.0.1' });
    onCleanup(() => health.close());
    worker.start();
    onCleanup(() => worker.close(0));
    await worker.ready();
    const get = (path: string) => fetch(`http://127.0.0.1:${health.port}${path}`);
    await waitFor(async () => (await get('/readyz')).status === 200, 10_000, 50);
    expect((await (await app.enqueue(ok, {})).wait({ timeoutMs: 10_000, pollMs: 20 })).status).toBe('completed');
    const samples = await waitFor(async () => {
      const s = parse(await (await get('/metrics')).text());
      return value(s, 'celerity_jobs_total', { task: 'm.ok', queue: 'default', status: 'completed' }) === 1 ? s : undefined;
    }, 5_000);
    expect(value(samples, 'celerity_worker_active_jobs')).toBe(0);
    // The same exposition, for a service's own /metrics route.
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await metrics.render()).toContain('celerity_jobs_total{task="m.ok",queue="default",status="completed"} 1');
  });

  it('serves /healthz, /readyz (503 while its Redis is down) and /metrics with the jobs it ran', async () => {
    const redis = await PrivateRedis.start();
    const app = await openTestApp('sqlite', [relSleep], { redisUrl: redis.url });
    const port = await freePort();
    const worker = spawnWorker(app.env, { env: { CELERITY_HEALTH_PORT: String(port), HOST: '127.0.0.1' }, shutdownGrace: 1_000 });
    const base = `http://127.0.0.1:${port}`;
    const get = async (path: string) => {
      const res = await fetch(base + path);
      return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
    };

    await waitFor(async () => (await get('/healthz')).status === 200, 20_000, 100).catch((err: Error) => {
      throw new Error(`${err.message}; worker output:\n${worker.output}`);
    });
    await waitFor(async () => (await get('/readyz')).status === 200, 10_000, 50);
    expect(JSON.parse((await get('/readyz')).text)).toEqual({ status: 'ready', redis: 'up', fetching: true });

    const handles = await Promise.all([0, 1, 2].map(() => app.enqueue(relSleep, { ms: 0 })));
    for (const h of handles) expect((await h.wait({ timeoutMs: 10_000, pollMs: 20 })).status).toBe('completed');
    const metrics = await waitFor(async () => {
      const m = await get('/metrics');
      const s = parse(m.text);
      // The built-in maintenance jobs run at start too: idle means they are done as well.
      const idle = value(s, 'celerity_worker_active_jobs') === 0;
      return idle && value(s, 'celerity_jobs_total', { task: 'rel.sleep', queue: 'default', status: 'completed' }) === 3 ? m : undefined;
    }, 5_000);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const samples = parse(metrics.text);
    expect(value(samples, 'celerity_job_duration_seconds_count', { task: 'rel.sleep', status: 'completed' })).toBe(3);
    expect(value(samples, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    await redis.shutdown();
    const down = await waitFor(async () => {
      const r = await get('/readyz');
      return r.status === 503 ? r : undefined;
    }, 5_000);
    expect(JSON.parse(down.text)).toMatchObject({ error: { code: 'not_ready', message: 'redis is down', details: { redis: 'down' } } });
    expect((await get('/healthz')).status).toBe(200);
    expect((await get('/metrics')).status).toBe(200);

    await redis.start();
    await waitFor(async () => (await get('/readyz')).status === 200, 10_000, 100);

    await worker.kill('SIGTERM');
    expect(await worker.waitExit(10_000)).toEqual({ code: 0, signal: null });
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  }, 45_000);

  it('a health port in use stops the worker with one line and a non-zero exit', async () => {
    const blocker = createServer();
    const port = await new Promise<number>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)));
    try {
      const app = createTestApp('sqlite', [relSleep]);
      const worker = spawnWorker(app.env, { env: { CELERITY_HEALTH_PORT: String(port), HOST: '127.0.0.1' } });
      const exit = await worker.waitExit(20_000);
      expect(exit.code).toBe(1);
      expect(worker.output).toContain(`celerity: Health port ${port} is in use: set CELERITY_HEALTH_PORT or --health-port.`);
    } finally {
      blocker.close();
    }
  }, 25_000);
});
