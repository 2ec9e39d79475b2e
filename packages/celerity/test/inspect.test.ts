import { execFile } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp, type App } from '../src/app.ts';
import { keys } from '../src/broker/keys.ts';
import { loadConfig } from '../src/config.ts';
import { NonRetryableError } from '../src/errors.ts';
import { throughputOf } from '../src/ops/queue-stats.ts';
import { defineTask } from '../src/task.ts';
import { HEARTBEAT_TTL_FACTOR, readWorkers } from '../src/worker/registry.ts';
import { deferred, onCleanup, openTestApp, sleep, startWorker, testEnv, testRedis, TEST_LOG_LEVEL, useCleanup, waitFor } from './helpers.ts';
import { freePort, processEnv, RELIABILITY_APP, ROOT, spawnWorker } from './process-helpers.ts';

useCleanup();

const BEAT = 300;

let gate = deferred();
const hold = defineTask({
  name: 'ops.hold',
  input: z.object({}),
  handler: async () => {
    await gate.promise;
    return { ok: true };
  },
});
const noop = defineTask({ name: 'ops.noop', queue: 'fast', input: z.object({}), handler: async () => ({ ok: true }) });
const boom = defineTask({
  name: 'ops.boom',
  queue: 'fast',
  retries: 0,
  input: z.object({}),
  handler: async () => {
    throw new NonRetryableError('boom');
  },
});
const tasks = [hold, noop, boom];

async function api(app: App) {
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  await server.ready();
  return server;
}

/** `celerity <args>` as a child process, without blocking this process' event loop (its worker keeps beating). */
function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'packages/celerity/bin/celerity.js'), ...args], { cwd: ROOT, env, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('worker registry', () => {
  it('lists a running worker with its fields and active jobs, and drops it at once on a graceful close', async () => {
    gate = deferred();
    const app = await openTestApp('sqlite', tasks, { heartbeatInterval: BEAT });
    const redis = testRedis();
    const worker = await startWorker(app, { queues: ['default'], concurrency: 2 });

    const [entry] = await readWorkers(redis, app.config.prefix);
    expect(entry).toMatchObject({ id: worker.id, host: hostname(), pid: process.pid, queues: ['default'], concurrency: 2, active: [], beatMs: BEAT });
    expect(worker.id).toMatch(new RegExp(`^${hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${process.pid}:[0-9a-f]{8}$`));
    const ttl = await redis.pttl(keys.worker(app.config.prefix, worker.id!));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(BEAT * HEARTBEAT_TTL_FACTOR);

    const job = await app.enqueue(hold, {});
    const running = await waitFor(async () => {
      const [w] = await readWorkers(redis, app.config.prefix);
      return w && w.active.length === 1 ? w : undefined;
    }, 5_000);
    expect(running.active).toEqual([{ id: job.id, task: 'ops.hold', queue: 'default' }]);
    expect(running.lastBeatAt).toBeGreaterThan(entry!.lastBeatAt);

    gate.resolve();
    await job.wait({ timeoutMs: 5_000 });
    await worker.close();
    expect(await readWorkers(redis, app.config.prefix)).toEqual([]);
    expect(await redis.exists(keys.worker(app.config.prefix, worker.id!))).toBe(0);
    expect(await redis.zcard(keys.workers(app.config.prefix))).toBe(0);
  });

  it(`drops a SIGKILLed worker process within ${HEARTBEAT_TTL_FACTOR} × the heartbeat interval`, async () => {
    const env = testEnv('sqlite');
    const redis = testRedis();
    const proc = spawnWorker(env, { env: { CELERITY_HEARTBEAT_INTERVAL: String(BEAT) } });
    const entry = await waitFor(
      async () => {
        if (!proc.running) throw new Error(`worker exited:\n${proc.output}`);
        return (await readWorkers(redis, env.prefix)).find((w) => w.pid === proc.pid);
      },
      20_000,
      50,
    );
    expect(entry).toMatchObject({ queues: expect.arrayContaining(['chaos', 'default']), concurrency: 10, beatMs: BEAT });

    await proc.kill('SIGKILL');
    const killedAt = Date.now();
    await waitFor(async () => (await readWorkers(redis, env.prefix)).length === 0, 5_000, 20);
    const gone = Date.now() - killedAt;
    // The entry expires 3 beats after the last one, which came before the kill.
    // Slack for this process' polling, not for Redis: the key's TTL is exact.
    expect(gone).toBeLessThanOrEqual(BEAT * HEARTBEAT_TTL_FACTOR + 250);
    // Readers prune the index too.
    expect(await redis.zcard(keys.workers(env.prefix))).toBe(0);
  });
});

describe('GET /v1/workers and GET /v1/queues', () => {
  it('serve the registry and per-queue counts, oldest waiting age and throughput', async () => {
    gate = deferred();
    const app = await openTestApp('sqlite', tasks, { heartbeatInterval: BEAT });
    const server = await api(app);

    expect((await server.inject({ method: 'GET', url: '/v1/workers' })).json()).toEqual({ workers: [] });

    // `default` has no worker: its jobs wait.
    await app.enqueue(hold, {});
    await app.enqueue(hold, {}, { priority: 5 });
    await app.enqueue(hold, {}, { delay: 60_000 });
    await sleep(60);

    const worker = await startWorker(app, { queues: ['fast'], concurrency: 4 });
    const firstMinute = Math.floor(Date.now() / 60_000);
    const handles = await Promise.all([...Array.from({ length: 5 }, () => app.enqueue(noop, {})), ...Array.from({ length: 2 }, () => app.enqueue(boom, {}))]);
    await Promise.all(handles.map((h) => h.wait({ timeoutMs: 10_000 })));
    const sameMinute = Math.floor(Date.now() / 60_000) === firstMinute;

    const workers = await server.inject({ method: 'GET', url: '/v1/workers' });
    expect(workers.statusCode).toBe(200);
    const [w] = workers.json().workers;
    expect(w).toMatchObject({ id: worker.id, host: hostname(), pid: process.pid, queues: ['fast'], concurrency: 4, active_jobs: [] });
    expect(Date.parse(w.started_at)).toBeLessThanOrEqual(Date.parse(w.last_beat_at));
    expect(w.age_ms).toBeGreaterThanOrEqual(0);
    expect(w.age_ms).toBeLessThan(BEAT * HEARTBEAT_TTL_FACTOR);

    const res = await server.inject({ method: 'GET', url: '/v1/queues' });
    expect(res.statusCode).toBe(200);
    const queues = res.json().queues as any[];
    expect(queues.map((q) => q.name)).toEqual(app.queueNames());
    expect(app.queueNames()).toEqual(expect.arrayContaining(['default', 'fast']));
    const dflt = queues.find((q) => q.name === 'default');
    const fast = queues.find((q) => q.name === 'fast');
    expect(dflt.counts).toEqual({ waiting: 1, prioritized: 1, delayed: 1, active: 0, 'waiting-children': 0, completed: 0, failed: 0 });
    expect(dflt.paused).toBe(false);
    expect(dflt.oldest_waiting_age_ms).toBeGreaterThanOrEqual(60);
    expect(dflt.oldest_waiting_age_ms).toBeLessThan(30_000);
    expect(dflt.throughput).toEqual({ completed: { m1: 0, m5: 0, m15: 0 }, failed: { m1: 0, m5: 0, m15: 0 } });

    expect(fast.counts).toMatchObject({ waiting: 0, active: 0, completed: 5, failed: 2 });
    expect(fast.oldest_waiting_age_ms).toBeNull();
    // BullMQ's metrics count every finished job (retries excluded: these fail at once).
    expect(fast.throughput.completed).toMatchObject({ m5: 5, m15: 5 });
    expect(fast.throughput.failed).toMatchObject({ m5: 2, m15: 2 });
    if (sameMinute) {
      expect(fast.throughput.completed.m1).toBe(5);
      expect(fast.throughput.failed.m1).toBe(2);
    }

    // A paused queue says so; its jobs keep waiting and ageing.
    await app.broker.queue('default').pause();
    const paused = (await server.inject({ method: 'GET', url: '/v1/queues' })).json().queues.find((q: any) => q.name === 'default');
    expect(paused).toMatchObject({ name: 'default', paused: true, counts: { waiting: 1, prioritized: 1 } });
    expect(paused.oldest_waiting_age_ms).toBeGreaterThanOrEqual(dflt.oldest_waiting_age_ms);
  });

  it('answer 503 broker_unavailable when Redis is unreachable', async () => {
    const port = await freePort();
    const app = createApp({ tasks, config: loadConfig({ env: {}, flags: { redisUrl: `redis://127.0.0.1:${port}`, logLevel: TEST_LOG_LEVEL, auth: 'off' } }) });
    onCleanup(() => app.close());
    const server = await buildServer(app, { logger: false });
    onCleanup(() => server.close());
    for (const url of ['/v1/workers', '/v1/queues']) {
      const res = await server.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(503);
      expect(res.json().error.code).toBe('broker_unavailable');
    }
  });
});

describe('throughputOf', () => {
  const at = (min: number, sec = 0) => min * 60_000 + sec * 1_000;
  const metrics = (count: number, prevTS: number, prevCount: number, data: number[]) => ({ meta: { count, prevTS, prevCount }, data, count: data.length });

  it('reads BullMQ per-minute points relative to the last finished job', () => {
    expect(throughputOf(metrics(0, 0, 0, []), at(100))).toEqual({ m1: 0, m5: 0, m15: 0 });
    // 3 jobs in minute 100 so far; minutes 99, 98, ... held 4, 0, 2, then 10 per minute.
    const m = metrics(100, at(100, 5), 97, [4, 0, 2, ...Array(12).fill(10)]);
    expect(throughputOf(m, at(100, 30))).toEqual({ m1: 3, m5: 3 + 4 + 0 + 2 + 10, m15: 3 + 4 + 0 + 2 + 10 * 11 });
    // Two minutes later with no job since: the window has moved on.
    expect(throughputOf(m, at(102, 1))).toEqual({ m1: 0, m5: 3 + 4 + 0, m15: 3 + 4 + 0 + 2 + 10 * 9 });
    expect(throughputOf(m, at(130))).toEqual({ m1: 0, m5: 0, m15: 0 });
  });
});

describe('celerity inspect', () => {
  it('workers --json, queues as a table, active, and ping with its exit codes', async () => {
    gate = deferred();
    const app = await openTestApp('sqlite', tasks, { heartbeatInterval: BEAT });
    const env = processEnv(app.env);
    const worker = await startWorker(app, { queues: ['default'] });
    const job = await app.enqueue(hold, {});
    await waitFor(async () => (await readWorkers(app.broker.redis, app.config.prefix))[0]?.active.length === 1, 5_000);

    const [workers, queues, active, ping] = await Promise.all([
      cli(['inspect', 'workers', '--json'], env),
      cli(['inspect', 'queues', '--app', RELIABILITY_APP], env),
      cli(['inspect', 'active'], env),
      cli(['inspect', 'ping'], env),
    ]);
    expect(workers.code, workers.stderr).toBe(0);
    const listed = JSON.parse(workers.stdout).workers;
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id: worker.id, pid: process.pid, queues: ['default'], concurrency: 10 });

    expect(queues.code, queues.stderr).toBe(0);
    const lines = queues.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^QUEUE\s+WAITING\s+PRIORITIZED\s+DELAYED\s+ACTIVE\s+WAITING-CHILDREN\s+COMPLETED\s+FAILED\s+OLDEST WAITING\s+DONE 1\/5\/15m\s+FAILED 1\/5\/15m$/);
    // The reliability app's queues, on this test's prefix: `default` holds our running job.
    const { app: reliability } = await import('./fixtures/reliability-app.ts');
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(reliability.queueNames());
    const dflt = lines.find((l) => l.startsWith('default '))!;
    expect(dflt.split(/\s+/).slice(1, 5)).toEqual(['0', '0', '0', '1']);
    // Aligned: every cell padded to its column, the last one right-aligned.
    expect(new Set(lines.map((l) => l.length)).size).toBe(1);

    expect(active.code, active.stderr).toBe(0);
    expect(active.stdout).toMatch(new RegExp(`^WORKER\\s+JOB ID\\s+TASK\\s+QUEUE\\n${worker.id!.replace(/\./g, '\\.')}\\s+${job.id}\\s+ops\\.hold\\s+default\\n$`));

    expect(ping.code, ping.stderr).toBe(0);
    expect(ping.stdout.startsWith(`${worker.id}: pong (last beat `)).toBe(true);
    expect(ping.stdout).toMatch(/: pong \(last beat [\d.]+m?s ago\)\n$/);

    gate.resolve();
    await job.wait({ timeoutMs: 5_000 });
    await worker.close();
    const none = await cli(['inspect', 'ping'], env);
    expect(none).toMatchObject({ code: 1, stdout: 'no workers\n' });
  });

  it('says in one line when Redis is unreachable, or when queues has no app', async () => {
    const env = processEnv(testEnv('sqlite'));
    const port = await freePort();
    const [down, noApp] = await Promise.all([cli(['inspect', 'ping', '--broker-url', `redis://127.0.0.1:${port}`], env), cli(['inspect', 'queues'], env)]);
    expect(down.code).toBe(2);
    expect(down.stdout).toBe('');
    expect(down.stderr.trim().split('\n')).toHaveLength(1);
    expect(down.stderr).toMatch(new RegExp(`^celerity: Redis at redis://127\\.0\\.0\\.1:${port} is unreachable`));
    expect(noApp.code).toBe(2);
    expect(noApp.stderr.trim()).toBe('celerity: inspect queues needs --app <module> (the app names its queues) or --queues a,b');
  });
});
