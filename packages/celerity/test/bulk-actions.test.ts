import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createKey } from '../src/auth/key-store.ts';
import { NonRetryableError } from '../src/errors.ts';
import { BULK_TASK, runBulkHere } from '../src/ops/bulk/run.ts';
import type { TaskContext } from '../src/task.ts';
import { JobCancelled } from '../src/worker/limits.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const flaky = defineTask({
  name: 'b.flaky',
  input: z.object({ n: z.number().int(), fail: z.boolean() }),
  retries: 0,
  handler: async ({ n, fail }) => {
    if (fail) throw new NonRetryableError(`failed ${n}`);
    return { n };
  },
});
const other = defineTask({ name: 'b.other', input: z.object({}), retries: 0, handler: async () => ({}) });
const tasks = [flaky, other];

type TestApp = Awaited<ReturnType<typeof openTestApp>>;

async function api(app: TestApp) {
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  return server;
}

async function recorded(app: TestApp, ids: string[], status: string) {
  await waitFor(async () => {
    for (const id of ids) if ((await app.store.get(id))?.status !== status) return false;
    return true;
  }, 15_000);
}

describe.each(stores)('bulk actions (%s)', (kind) => {
  it('counts first, then retries every failed job of a task in the background, with progress and an audit entry', async () => {
    const app = await openTestApp(kind, tasks, { auth: 'keys' });
    await startRecorder(app);
    const server = await api(app);
    const acme = await createKey(app.store, { name: 'acme-ops', tenant: 'acme', scopes: ['jobs:retry', 'jobs:read', 'jobs:cancel'] });
    const auth = { authorization: `Bearer ${acme.token}` };
    await startWorker(app);
    const failed = await Promise.all(Array.from({ length: 120 }, (_, n) => app.enqueue(flaky, { n, fail: true }, { tenant: 'acme' })));
    const theirs = await app.enqueue(flaky, { n: 999, fail: true }, { tenant: 'globex' });
    const fine = await app.enqueue(flaky, { n: 1000, fail: false }, { tenant: 'acme' });
    for (const h of [...failed, theirs, fine]) await h.wait({ timeoutMs: 15_000 });
    await recorded(app, [...failed.map((h) => h.id), theirs.id], 'failed');

    const body = { action: 'retry', filter: { status: 'failed', task: 'b.flaky' } };
    const dry = await server.inject({ method: 'POST', url: '/v1/bulk', headers: auth, payload: { ...body, dry_run: true } });
    expect(dry.statusCode).toBe(200);
    expect(dry.json()).toEqual({ count: 120 });

    const started = await server.inject({ method: 'POST', url: '/v1/bulk', headers: auth, payload: body });
    expect(started.statusCode).toBe(202);
    const op = started.json();
    expect(op).toMatchObject({ action: 'retry', status: 'queued', key_id: acme.key.id, key_name: 'acme-ops', tenant: 'acme', filter: { status: 'failed', task: 'b.flaky' } });
    const done = await waitFor(async () => {
      const view = (await server.inject({ url: `/v1/bulk/${op.operation_id}`, headers: auth })).json();
      return view.status === 'completed' ? view : undefined;
    }, 30_000);
    expect(done).toMatchObject({ matched: 120, done: 120, failed: 0, errors: [] });
    expect(done.started_at).not.toBeNull();
    expect(done.finished_at).not.toBeNull();
    // Each failed acme job has one retry, by the operation's key; globex's was not touched.
    const retries = await waitFor(async () => {
      const page = await app.listJobs({ task: 'b.flaky', tenant: 'acme', limit: 500 });
      const linked = page.jobs.filter((j) => j.retryOf !== undefined);
      return linked.length === 120 ? linked : undefined;
    }, 15_000);
    expect(new Set(retries.map((j) => j.retryOf))).toEqual(new Set(failed.map((h) => h.id)));
    expect(retries.every((j) => j.keyId === acme.key.id)).toBe(true);
    const globexRetries = (await app.listJobs({ tenant: 'globex', limit: 50 })).jobs.filter((j) => j.retryOf === theirs.id);
    expect(globexRetries).toEqual([]);
    // Its job shows the same progress.
    expect((await app.getJob(op.operation_id))?.progress).toMatchObject({ percent: 100, matched: 120, done: 120 });

    // The audit log: who, what, when, how many.
    const audit = (await server.inject({ url: '/v1/audit', headers: auth })).json();
    expect(audit.operations).toHaveLength(1);
    expect(audit.operations[0]).toMatchObject({ operation_id: op.operation_id, action: 'retry', key_id: acme.key.id, key_name: 'acme-ops', matched: 120, done: 120 });

    // A second run over the same filter: the retries are still running or failed again, nothing is retried twice at once.
    const again = await app.startBulk({ keyId: null, keyName: 'test', scope: { all: false, tenant: 'acme' }, taskPatterns: null }, 'retry', { status: 'failed', task: 'b.flaky' });
    const second = await waitFor(async () => {
      const o = await app.bulkOperation(again.id);
      return o?.status === 'completed' ? o : undefined;
    }, 30_000);
    expect(second.done + second.failed).toBe(second.matched);
  });

  it('takes the search filters of GET /v1/jobs, counting exactly what the search finds', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const server = await api(app);
    await startWorker(app);
    const jobs = await Promise.all(Array.from({ length: 12 }, (_, n) => app.enqueue(flaky, { n, fail: n % 3 !== 0 })));
    for (const h of jobs) await h.wait({ timeoutMs: 15_000 });
    await recorded(
      app,
      jobs.filter((_, n) => n % 3 !== 0).map((h) => h.id),
      'failed',
    );
    await recorded(
      app,
      jobs.filter((_, n) => n % 3 === 0).map((h) => h.id),
      'completed',
    );
    const now = Date.now();

    const count = async (filter: Record<string, unknown>) => {
      const res = await server.inject({ method: 'POST', url: '/v1/bulk', payload: { action: 'delete', filter, dry_run: true } });
      expect(res.statusCode).toBe(200);
      return res.json().count as number;
    };
    const searched = async (query: string) => (await server.inject({ url: `/v1/jobs?limit=200&${query}` })).json().jobs.length as number;
    const cases: [Record<string, unknown>, string][] = [
      [{ where: 'input.n:4' }, 'where=input.n:4'],
      [{ where: ['input.n:4', 'input.fail:true'] }, 'where=input.n:4&where=input.fail:true'],
      [{ error: 'failed 1' }, 'error=failed%201'],
      [{ id_prefix: jobs[5]!.id }, `id_prefix=${jobs[5]!.id}`],
      [{ queue: 'default', status: 'failed' }, 'queue=default&status=failed'],
      [{ task: 'b.flaky', created_after: String(now + 60_000) }, `task=b.flaky&created_after=${now + 60_000}`],
      [{ task: 'b.flaky', finished_before: new Date(now + 60_000).toISOString() }, `task=b.flaky&finished_before=${new Date(now + 60_000).toISOString()}`],
      [{ status: 'completed', error: 'failed' }, 'status=completed&error=failed'],
    ];
    const counts = [];
    // A dry run is one count statement, not pages of the list.
    const list = vi.spyOn(app.store, 'list');
    const countStatements = vi.spyOn(app.store, 'count');
    for (const [filter, query] of cases) {
      list.mockClear();
      countStatements.mockClear();
      const n = await count(filter);
      expect([list.mock.calls.length, countStatements.mock.calls.length]).toEqual([0, 1]);
      expect(n, JSON.stringify(filter)).toBe(await searched(query));
      counts.push(n);
    }
    // failed 1, 10, 11 match "failed 1"; jobs 0, 3, 6, 9 completed.
    expect(counts).toEqual([1, 1, 3, 1, 8, 0, 12, 0]);

    // A malformed filter is refused, naming the field.
    const bad = await server.inject({ method: 'POST', url: '/v1/bulk', payload: { action: 'delete', filter: { where: ['input.n:1', 'input.n=2'], created_after: 'yesterday' }, dry_run: true } });
    expect(bad.statusCode).toBe(400);
    expect(
      bad
        .json()
        .error.details.issues.map((i: { path: string }) => i.path)
        .sort(),
    ).toEqual(['body.filter.created_after', 'body.filter.where.1']);

    // The action applies the same filter, and shows it back.
    const started = await server.inject({ method: 'POST', url: '/v1/bulk', payload: { action: 'delete', filter: { where: 'input.n:4', status: 'failed' } } });
    expect(started.statusCode).toBe(202);
    expect(started.json().filter).toEqual({ status: 'failed', where: ['input.n:4'] });
    // Shown back as given, instants in ISO-8601: the audit log names the filter in the API's own spelling.
    const described = await server.inject({
      method: 'POST',
      url: '/v1/bulk',
      payload: { action: 'cancel', filter: { id_prefix: 'zz', created_after: '2026-11-30', where: 'result.ok:true', key_id: 'abcdefgh12345678', queue: 'q' } },
    });
    expect(described.json().filter).toEqual({ id_prefix: 'zz', created_after: '2026-11-30T00:00:00.000Z', where: ['result.ok:true'], key_id: 'abcdefgh12345678', queue: 'q' });
    const op = started.json().operation_id as string;
    const done = await waitFor(async () => {
      const o = await app.bulkOperation(op);
      return o?.status === 'completed' ? o : undefined;
    }, 30_000);
    expect(done).toMatchObject({ matched: 1, done: 1 });
    expect(await app.getJob(jobs[4]!.id)).toBeNull();
    expect(await app.getJob(jobs[5]!.id)).not.toBeNull();
  });

  it('confines a tenant key to its tenant and scopes, and hides other tenants operations', async () => {
    const app = await openTestApp(kind, tasks, { auth: 'keys' });
    await startRecorder(app);
    const server = await api(app);
    const acme = await createKey(app.store, { name: 'acme', tenant: 'acme', scopes: ['jobs:cancel', 'jobs:read'] });
    const globex = await createKey(app.store, { name: 'globex', tenant: 'globex', scopes: ['jobs:cancel', 'jobs:read', 'jobs:delete'] });
    const admin = await createKey(app.store, { name: 'admin', scopes: ['admin'] });
    const as = (key: { token: string }) => ({ authorization: `Bearer ${key.token}` });
    const mine = await Promise.all([1, 2, 3].map((n) => app.enqueue(flaky, { n, fail: false }, { tenant: 'acme', delay: 3_600_000 })));
    const theirs = await Promise.all([1, 2].map((n) => app.enqueue(flaky, { n, fail: false }, { tenant: 'globex', delay: 3_600_000 })));
    await recorded(
      app,
      [...mine, ...theirs].map((h) => h.id),
      'queued',
    );

    const wrongScope = await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'delete', filter: {}, dry_run: true } });
    expect(wrongScope.statusCode).toBe(403);
    expect(wrongScope.json().error.details.scope).toBe('jobs:delete');
    const otherTenant = await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'cancel', filter: { tenant: 'globex' } } });
    expect(otherTenant.statusCode).toBe(403);
    expect(otherTenant.json().error.details.field).toBe('filter.tenant');
    const badAction = await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'explode', filter: { nope: 1 } } });
    expect(badAction.statusCode).toBe(400);
    expect(
      badAction
        .json()
        .error.details.issues.map((i: { path: string }) => i.path)
        .sort(),
    ).toEqual(['body.action', 'body.filter.nope']);

    expect((await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'cancel', filter: { status: 'queued' }, dry_run: true } })).json()).toEqual({ count: 3 });
    expect(
      (await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(admin), payload: { action: 'cancel', filter: { status: 'queued' }, dry_run: true } })).json().count,
    ).toBeGreaterThanOrEqual(5);

    // No worker consumes the queue yet: the operation waits, and stopping it stops it at once.
    const waiting = (await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'cancel', filter: { status: 'queued' } } })).json();
    const stopped = await server.inject({ method: 'POST', url: `/v1/bulk/${waiting.operation_id}/stop`, headers: as(acme) });
    expect(stopped.statusCode).toBe(200);
    expect(stopped.json()).toMatchObject({ status: 'stopped', done: 0 });
    expect((await server.inject({ url: `/v1/bulk/${waiting.operation_id}`, headers: as(globex) })).statusCode).toBe(404);
    expect((await server.inject({ method: 'POST', url: `/v1/bulk/${waiting.operation_id}/stop`, headers: as(globex) })).statusCode).toBe(404);

    const op = (await server.inject({ method: 'POST', url: '/v1/bulk', headers: as(acme), payload: { action: 'cancel', filter: { status: 'queued' } } })).json();
    await startWorker(app);
    const done = await waitFor(async () => {
      const view = (await server.inject({ url: `/v1/bulk/${op.operation_id}`, headers: as(acme) })).json();
      return view.status === 'completed' ? view : undefined;
    }, 15_000);
    expect(done).toMatchObject({ matched: 3, done: 3, failed: 0 });
    for (const h of mine) expect((await app.getJob(h.id))?.status).toBe('cancelled');
    for (const h of theirs) expect((await app.getJob(h.id))?.status).toBe('queued');
    // The stopped operation never ran.
    await sleep(300);
    expect((await app.bulkOperation(waiting.operation_id))?.status).toBe('stopped');

    const acmeAudit = (await server.inject({ url: '/v1/audit', headers: as(acme) })).json().operations as { operation_id: string }[];
    expect(acmeAudit.map((o) => o.operation_id).sort()).toEqual([waiting.operation_id, op.operation_id].sort());
    expect((await server.inject({ url: '/v1/audit', headers: as(globex) })).json().operations).toEqual([]);
    expect((await server.inject({ url: '/v1/audit?limit=1', headers: as(admin) })).json().next_cursor).not.toBeNull();
  });

  it('stops before its next job when its signal aborts, and resumes at its cursor after a shutdown', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const queued = await Promise.all(Array.from({ length: 130 }, (_, n) => app.enqueue(flaky, { n, fail: false }, { delay: 3_600_000 })));
    await recorded(
      app,
      queued.map((h) => h.id),
      'queued',
    );
    const actor = { keyId: null, keyName: 'test', scope: { all: true } as const, taskPatterns: null };

    // Stopped after its first page: the jobs done stay done, the rest are untouched.
    const controller = new AbortController();
    const stopped = await runBulkHere(app, actor, 'cancel', { status: 'queued', task: 'b.flaky' }, `op-${Date.now()}`, {
      signal: controller.signal,
      progress: async () => controller.abort(new JobCancelled()),
    });
    expect(stopped).toMatchObject({ status: 'stopped', matched: 130, done: 50, failed: 0 });
    expect(stopped.finishedAt).not.toBeNull();
    const cancelled = async () => (await Promise.all(queued.map((h) => app.getJob(h.id)))).filter((r) => r?.status === 'cancelled').length;
    expect(await cancelled()).toBe(50);

    // The history trails Redis by the recorder's lag: the next count waits for it.
    await waitFor(async () => (await app.countBulk(actor, { status: 'queued', task: 'b.flaky' })) === 80);
    // A run handed back by a worker shutdown after one page: the next run of its job resumes at the cursor.
    const op = await app.startBulk(actor, 'cancel', { status: 'queued', task: 'b.flaky' });
    const task = app.builtinTasks.get(BULK_TASK)!;
    const shutdown = new AbortController();
    const ctx = (signal: AbortSignal, attempt: number) =>
      ({ signal, attempt, maxAttempts: 4, progress: async () => shutdown.abort(Object.assign(new Error('worker shutdown'), { name: 'WorkerShutdown' })) }) as unknown as TaskContext;
    await expect(task.handler({ operation: op.id }, ctx(shutdown.signal, 1))).rejects.toThrow('worker shutdown');
    expect(await app.bulkOperation(op.id)).toMatchObject({ status: 'running', matched: 80, done: 50 });
    const result = await task.handler({ operation: op.id }, { ...ctx(new AbortController().signal, 2), progress: async () => {} } as TaskContext);
    expect(result).toMatchObject({ status: 'completed', matched: 80, done: 80, failed: 0 });
    expect(await cancelled()).toBe(130);
  });
});
