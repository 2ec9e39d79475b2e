/**
 * Celerity on a Redis Cluster: three masters started by this file on free
 * ports, and the same app code as on one server, with
 * `CELERITY_REDIS_CLUSTER=on` and a hash-tagged prefix. Covers the core flow
 * down to the SQL history, cancellation (queued and running), idempotency, a
 * schedule, a workflow, GET /v1/events, and the built CLI's worker
 * (packages/celerity/dist: run `npm run build` after changing src).
 */
import { execFile } from 'node:child_process';
import { type ClientRequest, type IncomingMessage, request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { IdempotencyConflictError } from '../src/errors.ts';
import { schedule } from '../src/schedules/schedule.ts';
import { defineTask } from '../src/task.ts';
import { chain, step } from '../src/workflows/workflow.ts';
import { onCleanup, openTestApp, randomToken, startRecorder, startWorker, useCleanup, waitFor } from './helpers.ts';
import { relSleep, tasks as reliabilityTasks } from './fixtures/reliability-app.ts';
import { Proc, spawnWorker, waitForWorkers } from './process-helpers.ts';

useCleanup();

const run = promisify(execFile);

/** Three masters, no replicas: what the cluster needs to route keys, and all this test needs. */
class LocalCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'celerity-cluster-'));
  readonly procs: Proc[] = [];
  ports: number[] = [];

  /** Seed URLs, comma-separated, as CELERITY_BROKER_URL takes them. */
  get url(): string {
    return this.ports.map((p) => `redis://127.0.0.1:${p}`).join(',');
  }

  async start(): Promise<void> {
    this.ports = await clusterPorts(3);
    for (const port of this.ports) {
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', this.dir, '--cluster-enabled', 'yes', '--cluster-config-file', join(this.dir, `nodes-${port}.conf`)];
      args.push('--save', '', '--appendonly', 'no', '--daemonize', 'no');
      this.procs.push(new Proc(`redis-cluster:${port}`, 'redis-server', args, { cleanup: false }));
    }
    for (const [i, port] of this.ports.entries()) {
      await waitFor(
        () => {
          // A port taken since it was picked: say so rather than wait for nothing.
          if (!this.procs[i]!.running) throw new Error(`redis-server on ${port} exited:\n${this.procs[i]!.output}`);
          return this.call(port, 'PING');
        },
        10_000,
        50,
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...this.ports.map((p) => `127.0.0.1:${p}`), '--cluster-yes'], { timeout: 20_000 });
    // Every node must know the whole slot map before a client is pointed at it.
    for (const port of this.ports) await waitFor(async () => /cluster_state:ok/.test(String(await this.call(port, 'CLUSTER', 'INFO'))), 20_000, 100);
  }

  /** One command on one node, on a connection of its own. */
  async call(port: number, ...command: string[]): Promise<unknown> {
    const redis = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    redis.on('error', () => {});
    try {
      await redis.connect();
      return await redis.call(command[0]!, ...command.slice(1));
    } finally {
      redis.disconnect();
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill('SIGKILL')));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Free ports whose cluster bus port (port + 10000) is free too. */
async function clusterPorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    if (!ports.includes(port) && (await portFree(port)) && (await portFree(port + 10_000))) ports.push(port);
  }
  return ports;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

const cluster = new LocalCluster();
beforeAll(() => cluster.start(), 40_000);
afterAll(() => cluster.stop());

/** The config of an app on the cluster, under a prefix of its own. */
function onCluster(): { redisCluster: string; redisUrl: string; prefix: string } {
  return { redisCluster: 'on', redisUrl: cluster.url, prefix: `{celerity-${randomToken()}}` };
}

const add = defineTask({ name: 'cl.add', input: z.object({ a: z.number(), b: z.number() }), handler: ({ a, b }) => ({ sum: a + b }) });
const double = defineTask({ name: 'cl.double', input: z.object({ sum: z.number() }), handler: ({ sum }) => sum * 2 });
const nap = defineTask({
  name: 'cl.nap',
  input: z.object({ ms: z.number() }),
  handler: async ({ ms }, ctx) => {
    await sleep(ms, undefined, { signal: ctx.signal });
    return ms;
  },
});

describe('Celerity on a Redis Cluster of three masters', () => {
  it('runs a job end to end: enqueue, a worker runs it, status and result, the row in SQL; every key in the slot of the tag', async () => {
    const app = await openTestApp('postgres', [add], onCluster());
    expect(app.broker.redis).toBeInstanceOf(Cluster);
    await startWorker(app);
    await startRecorder(app);
    const handle = await app.enqueue(add, { a: 2, b: 3 }, { tenant: 'acme' });
    expect(await handle.wait({ timeoutMs: 10_000 })).toMatchObject({ status: 'completed', result: { sum: 5 }, attempts: 1 });
    expect(await app.getJob(handle.id)).toMatchObject({ status: 'completed', task: 'cl.add', tenant: 'acme', input: { a: 2, b: 3 }, result: { sum: 5 } });
    const row = await waitFor(async () => {
      const r = await app.store.get(handle.id);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(row).toMatchObject({ task: 'cl.add', tenant: 'acme', result: { sum: 5 }, attempts: 1 });

    // All of this app's keys, BullMQ's and Celerity's, sit in the one slot of its hash tag.
    const slot = Number(await cluster.call(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', app.config.prefix));
    const inSlot = await Promise.all(cluster.ports.map(async (p) => Number(await cluster.call(p, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)))));
    const matching = await Promise.all(cluster.ports.map(async (p) => ((await cluster.call(p, 'KEYS', `${app.config.prefix}:*`)) as string[]).length));
    expect(inSlot.reduce((a, b) => a + b, 0)).toBeGreaterThan(3);
    expect(matching).toEqual(inSlot);
  });

  it('cancels a queued job (removed, recorded) and a running one from another process', async () => {
    const app = await openTestApp('postgres', [nap], onCluster());
    await startRecorder(app);
    const queued = await app.enqueue(nap, { ms: 10 });
    expect(await app.cancel(queued.id)).toBe('cancelled');
    expect(await app.broker.queue('default').getJob(queued.id)).toBeUndefined();
    expect((await app.getJob(queued.id))?.status).toBe('cancelled');
    await waitFor(async () => (await app.store.get(queued.id))?.status === 'cancelled');

    await startWorker(app);
    const running = await app.enqueue(nap, { ms: 30_000 });
    await waitFor(async () => (await app.getJob(running.id))?.status === 'started');
    // Another process: its own connections, so the announcement goes through the cluster's pub/sub.
    const other = createApp({ tasks: [nap], config: app.config, dbSchema: app.env.schema! });
    onCleanup(() => other.close());
    expect(await other.cancel(running.id)).toBe('cancelling');
    expect(await running.wait({ timeoutMs: 5_000, pollMs: 20 })).toMatchObject({ status: 'cancelled', error: { type: 'JobCancelled' } });
    await waitFor(async () => (await app.store.get(running.id))?.status === 'cancelled');
  });

  it('keeps an idempotency key: the same job for the same input, a conflict for another', async () => {
    const app = await openTestApp('postgres', [add], onCluster());
    const first = await app.enqueue(add, { a: 1, b: 1 }, { idempotencyKey: 'order-1' });
    const again = await app.enqueue(add, { b: 1, a: 1 }, { idempotencyKey: 'order-1' });
    expect(again.id).toBe(first.id);
    expect(again.created).toBe(false);
    await expect(app.enqueue(add, { a: 1, b: 2 }, { idempotencyKey: 'order-1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect((await app.enqueue(add, { a: 1, b: 2 }, { idempotencyKey: 'order-2' })).id).not.toBe(first.id);
  });

  it('fires a schedule', async () => {
    const ticks: string[] = [];
    const tick = defineTask({ name: 'cl.tick', input: z.object({}), handler: (_input, ctx) => void ticks.push(ctx.jobId) });
    const app = await openTestApp('postgres', { tasks: [tick], schedules: [schedule(tick, { every: 500 })] }, onCluster());
    await startWorker(app);
    expect((await app.startSchedules()).upserted).toContain('celerity:cl.tick');
    await waitFor(() => ticks.length >= 2, 10_000);
    expect(await waitFor(async () => ((await app.getJob(ticks[0]!))?.status === 'completed' ? app.getJob(ticks[0]!) : undefined))).toMatchObject({ task: 'cl.tick' });
  });

  it('runs a workflow: a chain whose steps are visible', async () => {
    const app = await openTestApp('postgres', [add, double], onCluster());
    await startWorker(app);
    await startRecorder(app);
    const handle = await app.workflow(chain(step(add, { a: 2, b: 3 }), step(double)));
    expect(await handle.wait({ timeoutMs: 10_000 })).toMatchObject({ status: 'completed', result: 10 });
    expect((await app.getJob(handle.id))!.steps!.map((s) => [s.task, s.status])).toEqual([
      ['cl.add', 'completed'],
      ['cl.double', 'completed'],
    ]);
    await waitFor(async () => (await app.store.get(handle.id))?.status === 'completed');
  });

  it('the built CLI: a `celerity worker` process runs jobs on the cluster; without a hash tag it stops with one line', async () => {
    const app = await openTestApp('postgres', reliabilityTasks, onCluster());
    const worker = spawnWorker(app.env, { env: { CELERITY_REDIS_CLUSTER: 'on' } });
    await waitForWorkers(app.broker.queue(relSleep.queue), 1, 20_000, [worker]);
    const handle = await app.enqueue(relSleep, { ms: 1 });
    expect(await handle.wait({ timeoutMs: 10_000 })).toMatchObject({ status: 'completed', result: { attempt: 1, pid: worker.pid } });

    const refused = spawnWorker(app.env, { name: 'no-tag', env: { CELERITY_REDIS_CLUSTER: 'on', CELERITY_PREFIX: 'celerity' } });
    expect((await refused.waitExit(20_000)).code).toBe(2);
    const lines = refused.output.split('\n').filter((l) => l.trim() !== '' && !/ExperimentalWarning|--trace-warnings/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/CELERITY_PREFIX \(--prefix\): must carry a hash tag/);
  });

  it('serves the API: POST /v1/jobs, the job on GET /v1/events, rate limits counted in the cluster', async () => {
    const app = await openTestApp('postgres', [add], { ...onCluster(), rateLimitSubmit: 2 });
    await startWorker(app);
    const server = await buildServer(app, { logger: false });
    await server.listen({ port: 0, host: '127.0.0.1' });
    onCleanup(() => server.close());
    const base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
    // A socket of its own (no pool), destroyed at the end: an open stream would hold the server's close.
    const { req, res } = await new Promise<{ req: ClientRequest; res: IncomingMessage }>((resolve, reject) => {
      const req = request(`${base}/v1/events`, { agent: false });
      req.on('response', (res) => resolve({ req, res }));
      req.on('error', reject);
      req.end();
    });
    onCleanup(() => req.destroy());
    expect(res.statusCode).toBe(200);
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
    });
    res.on('error', () => {});

    const submitted = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'cl.add', input: { a: 20, b: 22 } } });
    expect(submitted.statusCode).toBe(202);
    const id = submitted.json<{ job_id: string }>().job_id;
    // SSE messages: "event: <status>" and "data: <job event>" lines, a blank line after each.
    const statuses = () =>
      text
        .split('\n\n')
        .map((block) => ({ event: /^event: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] }))
        .filter((m) => m.data !== undefined && (JSON.parse(m.data) as { job_id?: string }).job_id === id)
        .map((m) => m.event);
    await waitFor(() => statuses().includes('completed'), 10_000);
    expect(statuses()).toEqual(['queued', 'started', 'completed']);
    expect((await server.inject({ method: 'GET', url: `/v1/jobs/${id}` })).json()).toMatchObject({ job_id: id, status: 'completed', result: { sum: 42 } });

    // The submit budget (2 per window) is shared through Redis: the third submission is refused, and the count lives in the tag's slot.
    expect((await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'cl.add', input: { a: 1, b: 1 } } })).statusCode).toBe(202);
    const third = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'cl.add', input: { a: 1, b: 1 } } });
    expect(third.statusCode).toBe(429);
    expect(third.json()).toMatchObject({ error: { code: 'rate_limited' } });
    await waitFor(async () => {
      const counts = await Promise.all(cluster.ports.map(async (p) => ((await cluster.call(p, 'KEYS', `${app.config.prefix}:celerity:rl:*`)) as string[]).length));
      return counts.reduce((a, b) => a + b, 0) > 0;
    });
  });
});
