/**
 * Every bad input answers a 4xx in the API's error shape (issue 11): the
 * cases an outside fuzz run found answering 500 or 503, each at its limit and
 * just past it.
 */
import { connect } from 'node:net';
import Fastify from 'fastify';
import { pino } from 'pino';
import { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { celerityApi } from '../src/api/plugin.ts';
import { buildServer } from '../src/api/server.ts';
import type { App } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { ConfigError, InvalidOptionsError, InvalidQueryValueError, TaskDefinitionError } from '../src/errors.ts';
import { MAX_JSON_DEPTH, MAX_PARAM_LENGTH, MAX_PRIORITY, MAX_TIME_LIMIT_MS } from '../src/limits.ts';
import { defineTask } from '../src/task.ts';
import { uploadRefSchema } from '../src/uploads/upload-ref.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({
  name: 'math.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

async function server(app: App) {
  const s = await buildServer(app, { logger: false });
  onCleanup(() => s.close());
  await s.ready();
  return s;
}

/** A JSON text nesting `depth` objects under `input.junk` (built as text: the test's own stack is small). */
function deepBody(depth: number): string {
  return `{"task":"math.add","input":{"a":1,"b":2,"junk":${'{"x":'.repeat(depth)}1${'}'.repeat(depth)}}}`;
}

function expectError(res: { statusCode: number; json(): any; body: string }, status: number, path?: string) {
  expect(res.statusCode, res.body).toBe(status);
  const { error } = res.json();
  expect(error.code).toEqual(expect.any(String));
  expect(error.message).toEqual(expect.any(String));
  expect(res.body).not.toMatch(/\n\s+at |node_modules|\/work\//);
  if (path) expect(error.details.issues.map((i: { path: string }) => i.path)).toContain(path);
}

/** One raw request on a real socket; resolves with the whole response text. */
function raw(port: number, text: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', (err) => (chunks.length > 0 ? resolve(Buffer.concat(chunks).toString('utf8')) : reject(err)));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.end(text);
  });
}

describe.each(stores)('API inputs (%s store)', (kind) => {
  it('stores the parsed input: a field the schema strips is neither stored nor crashes, and deep nesting is a 400 naming the field', async () => {
    const app = await openTestApp(kind, [add]);
    const api = await server(app);
    const headers = { 'content-type': 'application/json' };

    const tooDeep = await api.inject({ method: 'POST', url: '/v1/jobs', payload: deepBody(5000), headers });
    expectError(tooDeep, 400, 'body.input.junk.x');
    expect(tooDeep.json().error.message).toContain(`deeper than ${MAX_JSON_DEPTH} levels`);
    // At the limit (body, input, junk, then 62 levels): accepted, and the stripped field is gone from the job.
    const atLimit = await api.inject({ method: 'POST', url: '/v1/jobs', payload: deepBody(MAX_JSON_DEPTH - 2), headers });
    expect(atLimit.statusCode, atLimit.body).toBe(202);
    const job = await Job.fromId(app.broker.queue('default'), atLimit.json().job_id);
    expect(job!.data.input).toEqual({ a: 1, b: 2 });
    expectError(await api.inject({ method: 'POST', url: '/v1/jobs', payload: deepBody(MAX_JSON_DEPTH - 1), headers }), 400);

    // Through the library too: the job carries Zod's output.
    const handle = await app.enqueue(add, { a: 1, b: 2, extra: 'dropped' } as never);
    expect((await Job.fromId(app.broker.queue('default'), handle.id))!.data.input).toEqual({ a: 1, b: 2 });
  });

  it('keeps the input as given when parsing changes types (the worker parses it again)', async () => {
    const length = defineTask({ name: 'text.length', input: z.object({ s: z.string().transform((s) => s.length) }), handler: async ({ s }) => ({ n: s }) });
    const app = await openTestApp(kind, [length]);
    await startWorker(app);
    const handle = await app.enqueue(length, { s: 'four' });
    expect((await Job.fromId(app.broker.queue('default'), handle.id))!.data.input).toEqual({ s: 'four' });
    await waitFor(async () => (await handle.status())?.status === 'completed');
    expect((await handle.status())?.result).toEqual({ n: 4 });
  });

  it('takes priorities 1 to 2,097,151 (BullMQ’s maximum)', async () => {
    const app = await openTestApp(kind, [add]);
    const api = await server(app);
    const submit = (priority: unknown) => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 }, options: { priority } } });
    expect((await submit(MAX_PRIORITY)).statusCode).toBe(202);
    expect((await submit(1)).statusCode).toBe(202);
    expectError(await submit(MAX_PRIORITY + 1), 400, 'body.options.priority');
    expectError(await submit(0), 400, 'body.options.priority');
    await expect(app.enqueue(add, { a: 1, b: 2 }, { priority: MAX_PRIORITY + 1 })).rejects.toThrow(InvalidOptionsError);
  });

  it('refuses the job ids BullMQ refuses (integers, negative ones too) with a 400 naming options.job_id; ids of 128 characters can be read and cancelled', async () => {
    const app = await openTestApp(kind, [add]);
    const api = await server(app);
    const submit = (job_id: string) => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 }, options: { job_id } } });
    for (const id of ['-1', '0', '42', '-0', '007', '9007199254740993', 'a'.repeat(129), 'a:b', 'a b', 'a\u0000b', '']) {
      expectError(await submit(id), 400, 'body.options.job_id');
    }
    for (const id of ['-', '1-', '-1a', '1.5', '1e3', 'x1', 'a'.repeat(128)]) {
      const res = await submit(id);
      expect(res.statusCode, `${id}: ${res.body}`).toBe(202);
    }
    await expect(app.enqueue(add, { a: 1, b: 2 }, { jobId: '-1' })).rejects.toThrow(InvalidOptionsError);

    const long = 'b'.repeat(128);
    expect((await submit(long)).statusCode).toBe(202);
    expect((await api.inject({ method: 'GET', url: `/v1/jobs/${long}` })).json()).toMatchObject({ job_id: long, status: 'queued' });
    expect((await api.inject({ method: 'POST', url: `/v1/jobs/${long}/cancel` })).json()).toEqual({ job_id: long, status: 'cancelled' });
    // Past what any id may be: refused by the schema, and past the router's length, a 414 in the error shape.
    expectError(await api.inject({ method: 'GET', url: `/v1/jobs/${'c'.repeat(257)}` }), 400, 'params.id');
    expectError(await api.inject({ method: 'GET', url: `/v1/jobs/${'c'.repeat(MAX_PARAM_LENGTH + 1)}` }), 414);
  });

  it('refuses time limits of 2^31 ms or more (Node timers would fire at once): options, task definitions, configuration', async () => {
    const app = await openTestApp(kind, [add]);
    const api = await server(app);
    const submit = (time_limits: object) => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 }, options: { time_limits } } });
    expect((await submit({ hard: MAX_TIME_LIMIT_MS })).statusCode).toBe(202);
    expectError(await submit({ hard: MAX_TIME_LIMIT_MS + 1 }), 400, 'body.options.time_limits.hard');
    expectError(await submit({ soft: 2 ** 40 }), 400, 'body.options.time_limits.soft');
    await expect(app.enqueue(add, { a: 1, b: 2 }, { timeLimits: { soft: MAX_TIME_LIMIT_MS + 1 } })).rejects.toThrow(/options\.timeLimits\.soft/);

    const def = (timeLimits: object) => defineTask({ name: 't', input: z.object({}), timeLimits, handler: () => null });
    expect(() => def({ hard: MAX_TIME_LIMIT_MS })).not.toThrow();
    expect(() => def({ hard: MAX_TIME_LIMIT_MS + 1 })).toThrow(TaskDefinitionError);
    expect(() => def({ soft: 2 ** 31 })).toThrow(/soft time limit must be at most/);
    expect(() => loadConfig({ env: { CELERITY_HARD_TIME_LIMIT: String(MAX_TIME_LIMIT_MS) } })).not.toThrow();
    expect(() => loadConfig({ env: { CELERITY_HARD_TIME_LIMIT: String(2 ** 31) } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { CELERITY_SOFT_TIME_LIMIT: '1e12' } })).toThrow(/CELERITY_SOFT_TIME_LIMIT/);
  });

  it('answers NUL and other bad characters in ids, filters, cursors and limits with a 400 naming the field, not a 503', async () => {
    const app = await openTestApp(kind, [add]);
    const api = await server(app);
    const cases: [string, string][] = [
      ['/v1/jobs/a%00b', 'params.id'],
      ['/v1/jobs/a%00b/cancel', 'params.id'],
      ['/v1/jobs?tenant=a%00', 'querystring.tenant'],
      ['/v1/jobs?tenant=a%0Ab', 'querystring.tenant'],
      ['/v1/jobs?task=a%00', 'querystring.task'],
      ['/v1/jobs?cursor=%00', 'querystring.cursor'],
      ['/v1/jobs?limit=1e309', 'querystring.limit'],
      ['/v1/jobs?limit=-1e309', 'querystring.limit'],
      ['/v1/jobs?limit=501', 'querystring.limit'],
      ['/v1/jobs?limit=2.5', 'querystring.limit'],
    ];
    for (const [url, path] of cases) {
      const res = await api.inject({ method: url.endsWith('/cancel') ? 'POST' : 'GET', url });
      expectError(res, 400, path);
    }
    expect((await api.inject({ method: 'GET', url: '/v1/jobs?limit=500&tenant=%F0%9F%98%80' })).statusCode).toBe(200);
    // Identifiers in the body and headers too; free-form input keeps its NULs.
    const submit = (options: object, headers: Record<string, string> = {}) => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 }, options }, headers });
    expectError(await submit({ tenant: 'a\u0000' }), 400, 'body.options.tenant');
    expectError(await submit({ tenant: '\ud800' }), 400, 'body.options.tenant');
    expectError(await submit({ idempotency_key: 'k\u0000' }), 400, 'body.options.idempotency_key');
    expect((await submit({ tenant: 'ünï 😀' })).statusCode).toBe(202);
    await expect(app.enqueue(add, { a: 1, b: 2 }, { tenant: 'x\u0000' })).rejects.toThrow(InvalidOptionsError);
  });

  it('classifies a query the database refuses for its values as the caller’s error, not an outage', async () => {
    const app = await openTestApp(kind, [add]);
    const store = await app.openStore();
    // Past the edge's checks (a direct caller): Infinity is no row count, and PostgreSQL refuses NUL in text.
    for (const filter of [{ limit: Number.POSITIVE_INFINITY }, ...(kind === 'postgres' ? [{ tenant: 'a\u0000', limit: 5 }] : [])]) {
      const err = await store.list(filter).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidQueryValueError);
      expect((err as InvalidQueryValueError).httpStatus).toBe(400);
    }
    if (kind === 'postgres') await expect(store.get('a\u0000')).rejects.toThrow(InvalidQueryValueError);
    await expect(store.ping()).resolves.toBeUndefined();
  });

  it('answers framework errors (bad encoding, long segments, bad HTTP, huge headers) and 500s in the error shape, without stack traces', async () => {
    const app = await openTestApp(kind, {
      tasks: [add],
      routes: [
        async (s) => {
          s.get('/v1/boom', async () => {
            throw new Error('kaboom');
          });
        },
      ],
    });
    await startWorker(app);
    await startRecorder(app);
    const api = await server(app);
    expectError(await api.inject({ method: 'GET', url: '/v1/jobs/%E0%A4%A' }), 400);
    expect((await api.inject({ method: 'GET', url: '/v1/jobs/%E0%A4%A' })).json().error.code).toBe('invalid_url');
    const boom = await api.inject({ method: 'GET', url: '/v1/boom' });
    expectError(boom, 500);
    expect(boom.body).not.toContain('kaboom');

    await api.listen({ port: 0, host: '127.0.0.1' });
    const port = (api.server.address() as { port: number }).port;
    const shape = (text: string, status: number) => {
      expect(text, text).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      const json = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
      expect(json.error.code).toEqual(expect.any(String));
      expect(json.error.message).toEqual(expect.any(String));
    };
    shape(await raw(port, 'FOO /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n'), 400);
    shape(await raw(port, `GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431);
    shape(await raw(port, 'GET /v1/jobs HTTP/1.1\r\nConnection: close\r\n\r\n'), 400);
    shape(await raw(port, 'CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n'), 405);
    shape(await raw(port, 'GET /v1/jobs/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 400);
    shape(await raw(port, `GET /v1/jobs/${'d'.repeat(MAX_PARAM_LENGTH + 1)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), 414);
    shape(await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'), 400);
    // Refused before its body is read (a 401: no key), then the body is
    // malformed: the socket carries that one answer, not a 400 after it.
    const keyed = await server(await openTestApp(kind, [add], { auth: 'keys' }));
    await keyed.listen({ port: 0, host: '127.0.0.1' });
    const keyedPort = (keyed.server.address() as { port: number }).port;
    const refused = await raw(keyedPort, 'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n');
    expect(refused.match(/HTTP\/1\.1 \d{3} /g), refused).toHaveLength(1);
    shape(refused, 401);
  });

  it("shows a failed job's error without its stack frames (they stay in SQL and in the log)", async () => {
    const failing = defineTask({
      name: 'demo.fails',
      retries: 0,
      input: z.object({}),
      handler: () => {
        throw new Error('always fails');
      },
    });
    const app = await openTestApp(kind, [failing]);
    await startWorker(app);
    await startRecorder(app);
    const api = await server(app);
    const { job_id } = (await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'demo.fails', input: {} } })).json();
    const job = await waitFor(async () => {
      const r = (await api.inject({ method: 'GET', url: `/v1/jobs/${job_id}` })).json();
      return r.status === 'failed' ? r : undefined;
    });
    expect(job.error).toEqual({ type: 'Error', message: 'always fails', stack: 'Error: always fails' });
    const stored = await waitFor(async () => (await app.store.get(job_id))?.error?.stack);
    expect(stored).toMatch(/\n\s+at /);
  });

  it('answers a truncated upload form with a 400, not a 500', async () => {
    const csv = defineTask({ name: 'csv.take', accepts: ['text/csv'], input: z.object({ file: uploadRefSchema }), handler: () => null });
    const app = await openTestApp(kind, [csv]);
    const api = await server(app);
    const b = '----fuzz';
    const payload = `--${b}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\nkey,summary\n\r\n--${b}\r\nContent-Disposition: form-data; name="task"\r\n\r\ncsv.take\r\n--${b}`;
    const res = await api.inject({ method: 'POST', url: '/v1/uploads', payload, headers: { 'content-type': `multipart/form-data; boundary=${b}` } });
    expectError(res, 400);
    expect(res.json().error.code).toBe('invalid_multipart');
  });

  it('warns when a host server’s maxParamLength is too short for job ids', async () => {
    const app = await openTestApp(kind, [add]);
    const lines: string[] = [];
    const host = Fastify({ loggerInstance: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }) });
    onCleanup(() => host.close());
    await host.register(celerityApi, { app, prefix: '/api' });
    await host.ready();
    expect(lines.join('\n')).toContain('maxParamLength');
    lines.length = 0;
    const roomy = Fastify({ loggerInstance: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }), routerOptions: { maxParamLength: MAX_PARAM_LENGTH } });
    onCleanup(() => roomy.close());
    await roomy.register(celerityApi, { app, prefix: '/api' });
    await roomy.ready();
    expect(lines.join('\n')).not.toContain('maxParamLength');
  });
});
