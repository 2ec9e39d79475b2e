import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor, onCleanup, sleep } from './helpers.ts';

useCleanup();

const add = defineTask({
  name: 'math.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

let release: () => void = () => {};
const gated = defineTask({
  name: 'demo.gated',
  queue: 'slow',
  input: z.object({}),
  handler: async (_input, ctx) => {
    await ctx.progress({ percent: 40, stage: 'waiting for the gate', rows: 12 });
    await new Promise<void>((resolve) => (release = resolve));
    return { ok: true };
  },
});

async function server(app: Parameters<typeof buildServer>[0], bodyLimit?: number) {
  const s = await buildServer(app, { logger: false, ...(bodyLimit ? { bodyLimit } : {}) });
  onCleanup(() => s.close());
  await s.ready();
  return s;
}

describe.each(stores)('HTTP API (%s store)', (kind) => {
  it('submits a job (202), serves its status and result, then lists it from SQL', async () => {
    const app = await openTestApp(kind, [add, gated]);
    await startWorker(app);
    await startRecorder(app);
    const api = await server(app);

    const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 2, b: 3 }, options: { tenant: 'acme' } } });
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body).toEqual({ job_id: expect.any(String), status: 'queued', status_url: `/v1/jobs/${body.job_id}` });
    expect(res.headers.location).toBe(body.status_url);

    const job = await waitFor(async () => {
      const r = (await api.inject({ method: 'GET', url: body.status_url })).json();
      return r.status === 'completed' ? r : undefined;
    });
    expect(job).toMatchObject({ job_id: body.job_id, task: 'math.add', queue: 'default', tenant: 'acme', input: { a: 2, b: 3 }, result: { sum: 5 }, error: null, attempts: 1, max_attempts: 4 });
    for (const key of ['created_at', 'started_at', 'finished_at']) expect(new Date(job[key]).toISOString()).toBe(job[key]);

    const list = await waitFor(async () => {
      const r = (await api.inject({ method: 'GET', url: '/v1/jobs?status=completed&tenant=acme' })).json();
      return r.jobs.length === 1 ? r : undefined;
    });
    expect(list.jobs[0]).toMatchObject({ job_id: body.job_id, status: 'completed', result: { sum: 5 } });
    expect(list.next_cursor).toBeNull();
  });

  it('serves progress of a running job from Redis without touching SQL', async () => {
    const app = await openTestApp(kind, [add, gated]);
    await startWorker(app);
    const api = await server(app);
    const { job_id } = (await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'demo.gated', input: {} } })).json();
    const readsFromSql = vi.spyOn(app.store, 'get');
    const running = await waitFor(async () => {
      const r = (await api.inject({ method: 'GET', url: `/v1/jobs/${job_id}` })).json();
      return r.progress?.percent === 40 ? r : undefined;
    });
    expect(running).toMatchObject({ status: 'started', queue: 'slow', progress: { percent: 40, stage: 'waiting for the gate', rows: 12 } });
    expect(readsFromSql).not.toHaveBeenCalled();
    release();
    await waitFor(async () => ((await api.inject({ method: 'GET', url: `/v1/jobs/${job_id}` })).json().status === 'completed' ? true : undefined));
  });

  it('pages the list with a cursor, newest first, each job once', async () => {
    const app = await openTestApp(kind, [add]);
    await startRecorder(app);
    const api = await server(app);
    const ids: string[] = [];
    // Caller-chosen ids sort anywhere; the list follows creation time.
    const custom = (i: number) => (i === 2 ? { options: { job_id: 'zzz-first-by-id' } } : i === 5 ? { options: { job_id: '000-last-by-id' } } : {});
    for (let i = 0; i < 7; i++) {
      ids.push((await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: i, b: 1 }, ...custom(i) } })).json().job_id);
      await sleep(2); // distinct creation times
    }
    await waitFor(async () => ((await app.listJobs({ limit: 100 })).jobs.length === 7 ? true : undefined));
    const bad = await api.inject({ url: '/v1/jobs?cursor=not-a-cursor' });
    expect(bad.statusCode).toBe(422);
    expect(bad.json().error.details.issues[0].path).toBe('cursor');
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { jobs: { job_id: string }[]; next_cursor: string | null } = (await api.inject({ method: 'GET', url: `/v1/jobs?limit=3${cursor ? `&cursor=${cursor}` : ''}` })).json();
      expect(page.jobs.length).toBeLessThanOrEqual(3);
      seen.push(...page.jobs.map((j: { job_id: string }) => j.job_id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
  });
});

describe('HTTP API errors', () => {
  it('answers every bad request with a 4xx naming the field, and enqueues nothing', async () => {
    const app = await openTestApp('sqlite', [add]);
    const api = await server(app, 2_000);
    const cases: [unknown, number, string, string | null][] = [
      [{ task: 'math.add', input: { a: 'two' } }, 422, 'invalid_input', 'input.a'],
      [{ task: 'nope', input: {} }, 422, 'unknown_task', null],
      [{ input: {} }, 400, 'invalid_request', 'body.task'],
      [{ task: 'math.add', input: { a: 1, b: 2 }, extra: 1 }, 400, 'invalid_request', 'body.extra'],
      [{ task: 'math.add', input: { a: 1, b: 2 }, options: { delay: -5 } }, 400, 'invalid_request', 'body.options.delay'],
      [{ task: 'math.add', input: { a: 1, b: 2 }, options: { job_id: '12345' } }, 400, 'invalid_request', 'body.options.job_id'],
      [{ task: 'math.add', input: { a: 1, b: 'x'.repeat(5_000) } }, 413, 'payload_too_large', null],
    ];
    for (const [payload, status, code, path] of cases) {
      const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: payload as object });
      expect(res.statusCode, JSON.stringify(payload).slice(0, 80)).toBe(status);
      const { error } = res.json();
      expect(error).toMatchObject({ code, message: expect.any(String) });
      if (path) expect(error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
    }
    const malformed = await api.inject({ method: 'POST', url: '/v1/jobs', payload: '{"task":', headers: { 'content-type': 'application/json' } });
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json().error.code).toBe('invalid_json');
    const text = await api.inject({ method: 'POST', url: '/v1/jobs', payload: 'task=math.add', headers: { 'content-type': 'text/plain' } });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.code).toBe('unsupported_media_type');
    const badQuery = await api.inject({ method: 'GET', url: '/v1/jobs?limit=0&status=done' });
    expect(badQuery.statusCode).toBe(400);
    expect(badQuery.json().error.details.issues.map((i: { path: string }) => i.path)).toEqual(expect.arrayContaining(['querystring.limit', 'querystring.status']));
    const missing = await api.inject({ method: 'GET', url: '/v1/jobs/01nosuchjob' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('job_not_found');
    expect(await app.broker.queue('default').getJobCounts()).toMatchObject({ waiting: 0, delayed: 0, prioritized: 0 });
  });

  it('answers 503 when Redis is unreachable, and writes no record', async () => {
    // Nothing listens on port 1. Built by hand: the test environment's cleanup
    // would try to delete keys on that unreachable Redis.
    const dir = mkdtempSync(join(tmpdir(), 'celerity-503-'));
    const app = createApp({ tasks: [add], config: loadConfig({ env: {}, flags: { redisUrl: 'redis://127.0.0.1:1', sqlitePath: join(dir, 'jobs.db'), logLevel: 'silent', auth: 'off' } }) });
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    onCleanup(() => app.close());
    await app.openStore();
    const api = await server(app);
    const res = await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 } } });
    expect(res.statusCode).toBe(503);
    expect(res.json().error.code).toBe('broker_unavailable');
    expect((await app.listJobs({ limit: 10 })).jobs).toEqual([]);
    const health = (await api.inject({ method: 'GET', url: '/healthz' })).json();
    expect(health).toEqual({ status: 'degraded', redis: 'down', store: 'up' });
  });

  it('lists tasks with their input JSON schema and publishes OpenAPI from the route schemas', async () => {
    const app = await openTestApp('sqlite', [add]);
    const api = await server(app);
    const { tasks } = (await api.inject({ method: 'GET', url: '/v1/tasks' })).json();
    expect(tasks).toEqual([expect.objectContaining({ name: 'math.add', queue: 'default', retries: 3, input_schema: expect.objectContaining({ type: 'object', required: ['a', 'b'] }) })]);
    const spec = (await api.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(spec.openapi).toBe('3.1.0');
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(['/v1/jobs', '/v1/jobs/{id}', '/v1/tasks', '/healthz']));
    // The dashboard's session routes too (its page and assets are not an API).
    expect(
      Object.keys(spec.paths)
        .filter((p) => p.startsWith('/dashboard'))
        .sort(),
    ).toEqual(['/dashboard/login', '/dashboard/logout', '/dashboard/session']);
    expect(spec.paths['/v1/jobs'].post.requestBody.content['application/json'].schema.required).toEqual(['task']);
  });
});
