import Fastify, { type FastifyInstance } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { ApiRoutes, App } from '../src/app.ts';
import { celerityApi } from '../src/index.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({
  name: 'math.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

// An app route with a schema of its own context and a mixed-case header name:
// both must validate under the plugin's compiler as they do under Fastify's.
const greetRoutes: ApiRoutes = async (server) => {
  server.addSchema({ $id: 'Greeting', type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string' } } });
  server.post<{ Body: { name: string } }>(
    '/v1/greet',
    { schema: { body: { $ref: 'Greeting#' }, headers: { type: 'object', required: ['X-Greeter'], properties: { 'X-Greeter': { type: 'string' } } } } },
    async (request) => ({ hello: request.body.name, by: request.headers['x-greeter'] }),
  );
};

/**
 * A user's server as Fastify makes it by default, with a route, a text route
 * and an error handler of its own; with @fastify/swagger first if asked (it
 * lists the routes added after it).
 */
async function hostServer({ swagger = false } = {}): Promise<FastifyInstance> {
  const host = Fastify();
  onCleanup(() => host.close());
  if (swagger) await host.register(fastifySwagger, { openapi: { openapi: '3.1.0', info: { title: 'Host', version: '1' } } });
  host.setErrorHandler((err: Error & { statusCode?: number }, _request, reply) => {
    reply.status(err.statusCode ?? 500).send({ oops: err.message });
  });
  host.post<{ Body: { name: string } }>(
    '/things',
    { schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string' }, count: { type: 'integer' } } } } },
    async (request) => request.body,
  );
  host.post('/notes', async (request) => ({ text: request.body }));
  host.get('/boom', async () => {
    throw new Error('host failure');
  });
  return host;
}

async function mount(app: App, opts: { openapi?: boolean | 'host' } = {}, host?: FastifyInstance): Promise<FastifyInstance> {
  host ??= await hostServer();
  await host.register(celerityApi, { app, prefix: '/jobs-api', ...opts });
  await host.ready();
  return host;
}

describe.each(stores)('celerityApi mounted in a Fastify server of its own (%s store)', (kind) => {
  it('runs a job submitted under the prefix and serves it back from there', async () => {
    const app = await openTestApp(kind, [add]);
    await startWorker(app);
    const host = await mount(app);

    const res = await host.inject({ method: 'POST', url: '/jobs-api/v1/jobs', payload: { task: 'math.add', input: { a: 2, b: 3 } } });
    expect(res.statusCode).toBe(202);
    expect(res.headers['x-request-id']).toEqual(expect.any(String));
    const { job_id, status_url } = res.json();
    // The status URL a client is told to follow carries the prefix.
    expect(status_url).toBe(`/jobs-api/v1/jobs/${job_id}`);
    expect(res.headers.location).toBe(status_url);

    const job = await waitFor(async () => {
      const r = (await host.inject({ method: 'GET', url: status_url })).json();
      return r.status === 'completed' ? r : undefined;
    });
    expect(job).toMatchObject({ job_id, task: 'math.add', result: { sum: 5 }, error: null });
    // Nothing of the API leaks out of the prefix.
    expect((await host.inject({ method: 'GET', url: `/v1/jobs/${job_id}` })).statusCode).toBe(404);
  });

  it("answers errors under the prefix in Celerity's shape, with Celerity's validation", async () => {
    const app = await openTestApp(kind, { tasks: [add], routes: [greetRoutes] });
    const host = await mount(app);

    // Fastify's default AJV would drop `extra` silently; Celerity's names it.
    const extra = await host.inject({ method: 'POST', url: '/jobs-api/v1/jobs', payload: { task: 'math.add', input: { a: 1, b: 2 }, extra: true } });
    expect(extra.statusCode).toBe(400);
    expect(extra.json()).toEqual({
      error: { code: 'invalid_request', message: expect.stringContaining('body.extra'), details: { issues: [{ path: 'body.extra', message: 'is not an allowed field' }] } },
    });
    // allErrors: every field at fault at once.
    const two = await host.inject({ method: 'POST', url: '/jobs-api/v1/jobs', payload: { options: { delay: -1 } } });
    expect(two.statusCode).toBe(400);
    expect(
      two
        .json()
        .error.details.issues.map((i: { path: string }) => i.path)
        .sort(),
    ).toEqual(['body.options.delay', 'body.task']);
    // coerceTypes + useDefaults on the query string.
    expect((await host.inject({ method: 'GET', url: '/jobs-api/v1/jobs?limit=2' })).statusCode).toBe(200);
    const limit = await host.inject({ method: 'GET', url: '/jobs-api/v1/jobs?limit=zero' });
    expect(limit.statusCode).toBe(400);
    expect(limit.json().error.details.issues).toEqual([expect.objectContaining({ path: 'querystring.limit' })]);

    const unknown = await host.inject({ method: 'POST', url: '/jobs-api/v1/jobs', payload: { task: 'nope', input: {} } });
    expect(unknown.statusCode).toBe(422);
    expect(unknown.json().error).toMatchObject({ code: 'unknown_task', details: expect.objectContaining({ field: 'task' }) });

    const text = await host.inject({ method: 'POST', url: '/jobs-api/v1/jobs', payload: 'task=math.add', headers: { 'content-type': 'text/plain' } });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.code).toBe('unsupported_media_type');

    const missing = await host.inject({ method: 'GET', url: '/jobs-api/v1/nothing-here' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe('not_found');

    // The app's own route: a schema added in its context, a header named in mixed case.
    const greet = (payload: object, headers: Record<string, string> = { 'x-greeter': 'ada' }) => host.inject({ method: 'POST', url: '/jobs-api/v1/greet', payload, headers });
    const ok = await greet({ name: 'bob' });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toEqual({ hello: 'bob', by: 'ada' });
    const greetExtra = await greet({ name: 'bob', age: 3 });
    expect(greetExtra.statusCode).toBe(400);
    expect(greetExtra.json().error.details.issues).toEqual([{ path: 'body.age', message: 'is not an allowed field' }]);
    const noHeader = await greet({ name: 'bob' }, {});
    expect(noHeader.statusCode).toBe(400);
    expect(noHeader.json().error.details.issues).toEqual([expect.objectContaining({ path: 'headers.x-greeter' })]);
  });

  it("leaves the host's routes, validator, parsers, error handler and 404s as the host set them", async () => {
    const app = await openTestApp(kind, [add]);
    const host = await mount(app);

    // Fastify's default AJV: unknown fields removed, not refused.
    const stripped = await host.inject({ method: 'POST', url: '/things', payload: { name: 'x', count: 2, extra: true } });
    expect(stripped.statusCode).toBe(200);
    expect(stripped.json()).toEqual({ name: 'x', count: 2 });
    expect(stripped.headers['x-request-id']).toBeUndefined();

    const invalid = await host.inject({ method: 'POST', url: '/things', payload: { count: 2 } });
    expect(invalid.statusCode).toBe(400);
    expect(invalid.json()).toEqual({ oops: expect.stringContaining('name') });

    expect((await host.inject({ method: 'GET', url: '/boom' })).json()).toEqual({ oops: 'host failure' });

    const text = await host.inject({ method: 'POST', url: '/notes', payload: 'hello', headers: { 'content-type': 'text/plain' } });
    expect(text.statusCode).toBe(200);
    expect(text.json()).toEqual({ text: 'hello' });

    const missing = await host.inject({ method: 'GET', url: '/nowhere' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: 'Not Found', statusCode: 404 });
  });
});

describe('celerityApi and OpenAPI', () => {
  it('serves <prefix>/openapi.json of its routes when asked to', async () => {
    const app = await openTestApp('sqlite', [add]);
    const host = await mount(app, { openapi: true });
    const spec = (await host.inject({ method: 'GET', url: '/jobs-api/openapi.json' })).json();
    expect(spec.openapi).toBe('3.1.0');
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(['/jobs-api/v1/jobs', '/jobs-api/v1/jobs/{id}', '/jobs-api/healthz']));
    expect(Object.keys(spec.paths)).not.toContain('/things');
  });

  it("is listed by the host's own @fastify/swagger, which rules out openapi: true", async () => {
    const app = await openTestApp('sqlite', [add]);
    const host = await mount(app, {}, await hostServer({ swagger: true }));
    const spec = host.swagger() as { paths: Record<string, { post?: { requestBody?: unknown } }> };
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(['/things', '/jobs-api/v1/jobs', '/jobs-api/v1/jobs/{id}']));
    expect(spec.paths['/jobs-api/v1/jobs']!.post!.requestBody).toBeDefined();

    await expect(mount(app, { openapi: true }, await hostServer({ swagger: true }))).rejects.toThrow(/already has @fastify\/swagger/);
  });

  it("serves the host's document at <prefix>/openapi.json with openapi: 'host', without a key", async () => {
    const app = await openTestApp('sqlite', [add], { auth: 'keys' });
    const host = await mount(app, { openapi: 'host' }, await hostServer({ swagger: true }));
    const res = await host.inject({ method: 'GET', url: '/jobs-api/openapi.json' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(Object.keys((res.json() as { paths: object }).paths)).toEqual(expect.arrayContaining(['/things', '/jobs-api/v1/jobs']));

    await expect(mount(app, { openapi: 'host' }, await hostServer())).rejects.toThrow(/needs the host's @fastify\/swagger/);
  });
});
