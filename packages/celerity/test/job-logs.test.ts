import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createKey } from '../src/auth/key-store.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import { NonRetryableError } from '../src/errors.ts';
import { jobLogLines, MAX_ATTEMPT_STACK_BYTES, MAX_JOB_LOG_LINE_BYTES, MAX_JOB_LOG_LINES } from '../src/job-record.ts';
import { defineTask } from '../src/task.ts';
import { boundedStack } from '../src/worker/run-job.ts';
import { logRow } from '../src/worker/job-log.ts';
import { jobLogMarker } from '../src/broker/keys.ts';
import { keepJobLogs, purgeJobLogs, readKeptLogs } from '../src/store/job-logs.ts';
import { chatty, isolatedTasks } from './fixtures/isolated-app.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const FIXTURE = new URL('./fixtures/isolated-app.ts', import.meta.url).href;

/** Logs `lines` lines through ctx.log (and a child of it), then fails on its first attempt if asked. */
const talk = defineTask({
  name: 'l.talk',
  input: z.object({ lines: z.number().int(), fail_first: z.boolean().default(false), big: z.boolean().default(false) }),
  retries: 1,
  backoff: { base: 10, max: 10 },
  handler: async ({ lines, fail_first, big }, ctx) => {
    ctx.log.debug('below info: not kept');
    for (let i = 0; i < lines; i++) ctx.log.info({ i, ticket: 'T-1' }, 'line %d', i);
    if (big) ctx.log.warn({ blob: 'x'.repeat(10_000) }, 'y'.repeat(10_000));
    ctx.log.child({ part: 'child' }).error(new Error('from a child'));
    if (fail_first && ctx.attempt === 1) throw new Error('first attempt fails');
    return { lines };
  },
});

const quiet = defineTask({ name: 'l.quiet', input: z.object({}), retries: 0, handler: async () => ({ ok: true }) });

const deep = defineTask({
  name: 'l.deep',
  input: z.object({}),
  retries: 0,
  handler: async () => {
    // A stack deeper than V8's default 10 frames, as a deep recursion with a higher stackTraceLimit makes.
    const err = new NonRetryableError('deep down');
    err.stack = ['NonRetryableError: deep down', ...Array.from({ length: 400 }, (_, i) => `    at dive (/srv/app/deep.js:${i}:1)`)].join('\n');
    throw err;
  },
});

const tasks = [talk, quiet, deep];

async function api(app: Awaited<ReturnType<typeof openTestApp>>) {
  const server = await buildServer(app, { logger: false });
  onCleanup(() => server.close());
  return server;
}

describe('job log rows', () => {
  it('keeps a line within its byte cap, fields first, and tells log lines from attempt rows', () => {
    const long = logRow({ level: 'info', msg: 'é'.repeat(5_000), data: { a: 1 } }, 1, 1);
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(MAX_JOB_LOG_LINE_BYTES);
    expect(JSON.parse(long)).toMatchObject({ celerity_log: 1, level: 'info', truncated: true });
    expect(JSON.parse(long).data).toBeUndefined();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(JSON.parse(logRow({ level: 'warn', msg: 'm', data: cyclic }, 2, 3))).toEqual({ celerity_log: 3, level: 'warn', attempt: 2, msg: 'm', truncated: true });
    const attemptRow = JSON.stringify({ celerity_attempt: 1, started_at: 1, finished_at: 2, error: { type: 'E', message: 'm' } });
    expect(jobLogLines([attemptRow, logRow({ level: 'info', msg: 'hi' }, 1, 5), 'not json'])).toEqual([{ celerity_log: 5, level: 'info', attempt: 1, msg: 'hi' }]);
  });

  it('bounds a stack to whole frames within the cap', () => {
    const stack = ['Error: boom', ...Array.from({ length: 500 }, (_, i) => `    at frame${i} (/srv/app/file.js:${i}:1)`)].join('\n');
    const bounded = boundedStack(stack)!;
    expect(Buffer.byteLength(bounded)).toBeLessThanOrEqual(MAX_ATTEMPT_STACK_BYTES);
    expect(bounded.startsWith('Error: boom\n    at frame0 ')).toBe(true);
    expect(bounded).toMatch(/… \d+ more lines$/);
    expect(boundedStack('Error: short')).toBe('Error: short');
    expect(Buffer.byteLength(boundedStack(`Error: ${'z'.repeat(10_000)}`)!)).toBeLessThanOrEqual(MAX_ATTEMPT_STACK_BYTES);
  });
});

describe.each(stores)("a job's log lines (%s)", (kind) => {
  it('keeps what the handler logs at info and above over its attempts, beside the attempt rows, and serves it by page', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const server = await api(app);
    await startWorker(app);
    const job = await app.enqueue(talk, { lines: 3, fail_first: true });
    expect((await job.wait()).status).toBe('completed');

    const res = await server.inject({ url: `/v1/jobs/${job.id}/logs` });
    expect(res.statusCode).toBe(200);
    const body = res.json();
    expect(body.total).toBe(8);
    expect(body.next_offset).toBeNull();
    expect(body.lines.map((l: { attempt: number; level: string; message: string }) => [l.attempt, l.level, l.message])).toEqual([
      [1, 'info', 'line 0'],
      [1, 'info', 'line 1'],
      [1, 'info', 'line 2'],
      [1, 'error', 'from a child'],
      [2, 'info', 'line 0'],
      [2, 'info', 'line 1'],
      [2, 'info', 'line 2'],
      [2, 'error', 'from a child'],
    ]);
    expect(body.lines[0].data).toEqual({ i: 0, ticket: 'T-1' });
    expect(body.lines[3].data).toEqual({ err: { type: 'Error', message: 'from a child' } });
    expect(Date.parse(body.lines[0].time)).toBeGreaterThan(0);

    // The attempt rows that share the list still read as before: attempt 1 failed, attempt 2 completed.
    const view = (await server.inject({ url: `/v1/jobs/${job.id}` })).json();
    expect(view.attempt_history.map((a: { status: string }) => a.status)).toEqual(['failed', 'completed']);
    // Without ?stacks=true, no stack; with it (authentication off: the caller may do anything), each attempt's.
    expect(view.attempt_history[0].error).toEqual({ type: 'Error', message: 'first attempt fails' });
    const full = (await server.inject({ url: `/v1/jobs/${job.id}?stacks=true` })).json();
    expect(full.attempt_history[0].error).toEqual({ type: 'Error', message: 'first attempt fails', stack: expect.stringMatching(/^Error: first attempt fails\n {4}at /) });
    expect(full.attempt_history[1].error).toBeNull();
    expect(view.attempt_history[1].error).toBeNull();
    const stored = await waitFor(async () => {
      const r = await app.store.get(job.id);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(stored.attemptHistory?.map((a) => a.status)).toEqual(['failed', 'completed']);

    const page = (await server.inject({ url: `/v1/jobs/${job.id}/logs?offset=2&limit=3` })).json();
    expect(page.lines.map((l: { message: string }) => l.message)).toEqual(['line 2', 'from a child', 'line 0']);
    expect(page.next_offset).toBe(5);
    const bad = await server.inject({ url: `/v1/jobs/${job.id}/logs?limit=0` });
    expect(bad.statusCode).toBe(400);
    expect(JSON.stringify(bad.json().error)).toContain('limit');
    expect((await server.inject({ url: '/v1/jobs/01nosuchjob/logs' })).statusCode).toBe(404);
  });

  it('caps the lines of a job and their size, and writes nothing for a job that never logs', async () => {
    const app = await openTestApp(kind, tasks);
    const server = await api(app);
    await startWorker(app);
    const loud = await app.enqueue(talk, { lines: MAX_JOB_LOG_LINES + 100, big: true });
    const silent = await app.enqueue(quiet, {});
    await loud.wait();
    await silent.wait();
    const body = (await server.inject({ url: `/v1/jobs/${loud.id}/logs?limit=${MAX_JOB_LOG_LINES}` })).json();
    expect(body.total).toBe(MAX_JOB_LOG_LINES + 1);
    const all = await app.broker.jobLogs('default', loud.id);
    expect(all.every((row) => Buffer.byteLength(row) <= MAX_JOB_LOG_LINE_BYTES)).toBe(true);
    const last = (await server.inject({ url: `/v1/jobs/${loud.id}/logs?offset=${MAX_JOB_LOG_LINES}` })).json().lines[0];
    expect(last).toMatchObject({ level: 'warn', message: `102 more log lines not kept: a job keeps at most ${MAX_JOB_LOG_LINES}` });
    // Nothing was written for the job that never logged.
    expect(await app.broker.redis.exists(`${app.config.prefix}:default:${silent.id}:logs`)).toBe(0);
  });
});

describe.each(stores)("a job's log lines in the history (%s)", (kind) => {
  it('are copied by the recorder when the job finishes (happy path and full write), and served once Redis lets the job go', async () => {
    const app = await openTestApp(kind, tasks);
    await startRecorder(app);
    const server = await api(app);
    await startWorker(app);
    const ok = await app.enqueue(talk, { lines: 2 });
    const retried = await app.enqueue(talk, { lines: 1, fail_first: true });
    const silent = await app.enqueue(quiet, {});
    for (const h of [ok, retried, silent]) expect((await h.wait()).status).toBe('completed');
    const kept = async (id: string) => waitFor(async () => readKeptLogs(app.store, id, ALL_TENANTS));
    // The recorder's happy path (its row queued, then start and completion in one batch, one attempt) copies the lines too.
    await app.pauseQueue('default');
    const happy = await app.enqueue(talk, { lines: 1 });
    await waitFor(async () => (await app.store.get(happy.id))?.status === 'queued');
    await app.resumeQueue('default');
    expect((await happy.wait()).status).toBe('completed');
    expect((await kept(happy.id)).map((l) => l.msg)).toEqual(['line 0', 'from a child']);
    expect((await kept(ok.id)).map((l) => l.msg)).toEqual(['line 0', 'line 1', 'from a child']);
    expect((await kept(retried.id)).map((l) => [l.attempt, l.msg])).toEqual([
      [1, 'line 0'],
      [1, 'from a child'],
      [2, 'line 0'],
      [2, 'from a child'],
    ]);
    // A job that never logged: no marker on its hash, no row.
    await waitFor(async () => (await app.store.get(silent.id))?.status === 'completed');
    expect(await app.broker.redis.hget(app.broker.queue('default').toKey(silent.id), jobLogMarker.field)).toBeNull();
    expect(await readKeptLogs(app.store, silent.id, ALL_TENANTS)).toBeNull();

    // Redis lets the job go (its result TTL): the lines come from the history.
    await waitFor(async () => (await app.store.get(ok.id))?.status === 'completed');
    await app.broker.redis.del(app.broker.queue('default').toKey(ok.id), `${app.broker.queue('default').toKey(ok.id)}:logs`);
    const body = (await server.inject({ url: `/v1/jobs/${ok.id}/logs?offset=1` })).json();
    expect(body).toMatchObject({ total: 3, next_offset: null });
    expect(body.lines.map((l: { message: string }) => l.message)).toEqual(['line 1', 'from a child']);

    // A longer list is newer: an older read cannot shrink what is kept.
    await keepJobLogs(app.store, [{ id: ok.id, rows: [logRow({ level: 'info', msg: 'stale' }, 1, 1)] }]);
    expect((await readKeptLogs(app.store, ok.id, ALL_TENANTS))?.map((l) => l.msg)).toEqual(['line 0', 'line 1', 'from a child']);

    // Deleting the job forgets its lines; the purge removes lines as old as the history it purges.
    await app.deleteJob(retried.id);
    expect(await readKeptLogs(app.store, retried.id, ALL_TENANTS)).toBeNull();
    expect(await purgeJobLogs(app.store, Date.now() + 1000)).toBe(2);
    expect(await readKeptLogs(app.store, ok.id, ALL_TENANTS)).toBeNull();
  });
});

describe('log lines of isolated tasks and stacks by scope', () => {
  it('keeps the lines a thread logs', async () => {
    const app = await openTestApp('sqlite', isolatedTasks);
    app.moduleUrl = FIXTURE;
    const server = await api(app);
    await startWorker(app);
    const job = await app.enqueue(chatty, { lines: 3 });
    expect((await job.wait({ timeoutMs: 30_000 })).status).toBe('completed');
    const body = (await server.inject({ url: `/v1/jobs/${job.id}/logs` })).json();
    expect(body.lines.map((l: { message: string; data?: unknown }) => [l.message, l.data])).toEqual([
      ['line 0 from a thread', { i: 0 }],
      ['line 1 from a thread', { i: 1 }],
      ['line 2 from a thread', { i: 2 }],
    ]);
  });

  it("shows each attempt's stack to admin keys only, and another tenant's job's logs as missing", async () => {
    const app = await openTestApp('postgres', tasks, { auth: 'keys' });
    await startRecorder(app);
    const server = await api(app);
    const admin = await createKey(app.store, { name: 'admin', scopes: ['admin'] });
    const reader = await createKey(app.store, { name: 'reader', tenant: 'acme', scopes: ['jobs:read'] });
    const globex = await createKey(app.store, { name: 'globex', tenant: 'globex', scopes: ['jobs:read'] });
    await startWorker(app);
    const job = await app.enqueue(deep, {}, { tenant: 'acme' });
    await job.wait();
    const as = (key: { token: string }, url: string) => server.inject({ url, headers: { authorization: `Bearer ${key.token}` } });

    const full = (await as(admin, `/v1/jobs/${job.id}?stacks=true`)).json();
    const stack = full.attempt_history[0].error.stack as string;
    expect(stack.startsWith('NonRetryableError: deep down\n    at ')).toBe(true);
    expect(Buffer.byteLength(stack)).toBeLessThanOrEqual(MAX_ATTEMPT_STACK_BYTES);
    expect(stack).toMatch(/more lines$/);
    expect(full.error.stack).toContain('\n    at ');
    // Without asking, an admin gets no frames either (as every key did before stacks were kept).
    const plain = (await as(admin, `/v1/jobs/${job.id}`)).json();
    expect(plain.attempt_history[0].error).toEqual({ type: 'NonRetryableError', message: 'deep down' });
    expect(plain.error.stack).toBe('NonRetryableError: deep down');
    const viewer = (await as(reader, `/v1/jobs/${job.id}`)).json();
    expect(viewer.attempt_history[0].error).toEqual({ type: 'NonRetryableError', message: 'deep down' });
    expect(viewer.error.stack).toBe('NonRetryableError: deep down');
    const refused = await as(reader, `/v1/jobs/${job.id}?stacks=true`);
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error).toMatchObject({ code: 'forbidden', details: { field: 'stacks' } });
    expect(refused.body).not.toContain('deep.js');
    // The history keeps the attempt's stack too: read from SQL once Redis lets the job go.
    await waitFor(async () => (await app.store.get(job.id))?.status === 'failed');
    await app.broker.redis.del(app.broker.queue('default').toKey(job.id));
    const fromSql = (await as(admin, `/v1/jobs/${job.id}?stacks=true`)).json();
    expect(fromSql.attempt_history[0].error.stack).toBe(stack);

    expect((await as(reader, `/v1/jobs/${job.id}/logs`)).statusCode).toBe(200);
    const theirs = await as(globex, `/v1/jobs/${job.id}/logs`);
    const none = await as(globex, `/v1/jobs/${job.id.slice(0, -4)}zzzz/logs`);
    expect(theirs.statusCode).toBe(404);
    expect(theirs.body.replaceAll(job.id, 'ID')).toBe(none.body.replaceAll(`${job.id.slice(0, -4)}zzzz`, 'ID'));
  });
});
