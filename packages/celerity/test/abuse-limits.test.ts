/**
 * Abuse limits of the job API (src/api/abuse-limits.ts): per-key rate limits
 * counted in Redis, security headers, CORS. Each server here stands in for
 * `celerityApi` with authentication: a fake authentication hook (Bearer
 * <key id>, or the open principal when auth is "off"), then
 * registerAbuseLimits, then routes declaring the route config that the real
 * routes declare.
 */
import { connect } from 'node:net';
import Fastify, { type FastifyContextConfig, type FastifyInstance, type InjectOptions } from 'fastify';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { registerAbuseLimits } from '../src/api/abuse-limits.ts';
import { FLUSH_INTERVAL_MS, FRESH_MS } from '../src/api/rate-limit-store.ts';
import { body, clientErrorHandler, errorHandlerPlugin, frameworkErrorHandler } from '../src/api/errors.ts';
import { createKey } from '../src/auth/key-store.ts';
import { celerityApi } from '../src/api/plugin.ts';
import { HTML_SECURITY_HEADERS, SECURITY_HEADERS } from '../src/api/security-headers.ts';
import type { App } from '../src/app.ts';
import { OPEN_PRINCIPAL, setPrincipal } from '../src/auth/principal.ts';
import { type CelerityConfig, loadConfig, type RawConfig } from '../src/config.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, sleep, testEnv, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

/** The route config the real routes declare, typed loosely: the auth work owns the augmentation of Fastify's type. */
function celerity(c: { scope?: string; open?: boolean; html?: boolean }): FastifyContextConfig {
  return { celerity: c } as FastifyContextConfig;
}

/** A principal per `Authorization: Bearer <key id>`; 401 without one, except on open routes. */
function fakeAuth(api: FastifyInstance, mode: 'keys' | 'off'): void {
  api.addHook('onRequest', async (request, reply) => {
    if ((request.routeOptions.config as { celerity?: { open?: boolean } }).celerity?.open) return;
    if (mode === 'off') return setPrincipal(request, OPEN_PRINCIPAL);
    const keyId = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
    if (!keyId) return reply.status(401).send(body('unauthorized', 'An API key is required', null));
    setPrincipal(request, { keyId, name: keyId, tenant: null, scopes: new Set(['admin']), tasks: null });
  });
}

/** `{ config }` is all registerAbuseLimits reads of the app. */
function appOf(config: CelerityConfig): App {
  return { config } as unknown as App;
}

interface ServerOptions {
  auth?: 'keys' | 'off';
  /** Register the abuse limits before the authentication hook rather than after it. */
  limitsFirst?: boolean;
}

/** One "API process": its own Fastify instance and limiter connection. */
async function apiProcess(config: CelerityConfig, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const server = Fastify({ frameworkErrors: frameworkErrorHandler, clientErrorHandler });
  onCleanup(() => server.close());
  await server.register(async (api) => {
    if (!opts.limitsFirst) fakeAuth(api, opts.auth ?? 'keys');
    await registerAbuseLimits(api, appOf(config));
    if (opts.limitsFirst) fakeAuth(api, opts.auth ?? 'keys');
    errorHandlerPlugin(api, { notFound: true });
    const ok = async () => ({ ok: true });
    api.post('/v1/jobs', { config: celerity({ scope: 'jobs:submit' }) }, ok);
    api.get('/v1/jobs/:id', { config: celerity({ scope: 'jobs:read' }) }, ok);
    api.get('/v1/jobs', ok);
    api.post('/v1/uploads', { config: celerity({ scope: 'jobs:submit' }) }, ok);
    api.post('/v1/hooks/:task', { config: celerity({ open: true }) }, ok);
    api.get('/healthz', { config: celerity({ open: true }) }, ok);
    api.get('/v1/count', { schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } } } } }, ok);
    api.get('/v1/boom', async () => {
      throw new Error('kaboom');
    });
    api.get('/dashboard', { config: celerity({ html: true }) }, async (_request, reply) => reply.type('text/html').send('<!doctype html><title>jobs</title>'));
  });
  await server.ready();
  return server;
}

function limitsConfig(overrides: RawConfig = {}): CelerityConfig {
  return testEnv('sqlite', { rateLimitSubmit: 3, rateLimitRead: 5, ...overrides }).config;
}

const as = (key: string): InjectOptions['headers'] => ({ authorization: `Bearer ${key}` });
const submit = (api: FastifyInstance, key = 'k1') => api.inject({ method: 'POST', url: '/v1/jobs', headers: as(key), payload: {} });
const read = (api: FastifyInstance, key = 'k1') => api.inject({ method: 'GET', url: '/v1/jobs/abc', headers: as(key) });

async function statuses(n: number, send: () => Promise<{ statusCode: number }>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await send()).statusCode);
  return out;
}

describe('rate limits', () => {
  it('answer 429 rate_limited past the budget, in the error shape, with Retry-After and x-ratelimit-* headers', async () => {
    const config = limitsConfig({ rateLimitWindow: 60_000 });
    const api = await apiProcess(config);
    const first = await submit(api);
    expect(first.statusCode).toBe(200);
    expect(first.headers).toMatchObject({ 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '2', 'x-ratelimit-reset': expect.stringMatching(/^\d+$/) });
    expect(first.headers['retry-after']).toBeUndefined();
    expect(await statuses(2, () => submit(api))).toEqual([200, 200]);

    const refused = await submit(api);
    expect(refused.statusCode).toBe(429);
    expect(refused.headers['content-type']).toMatch(/^application\/json/);
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers).toMatchObject({ 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(retryAfter) });
    expect(refused.json()).toEqual({
      error: {
        code: 'rate_limited',
        message: expect.stringMatching(/^Rate limit exceeded: at most 3 submissions per 60 s; retry in \d+ s$/),
        details: { budget: 'submit', limit: 3, window_ms: 60_000, retry_after_s: retryAfter },
      },
    });
    // Security headers are on the refusal too (helmet runs before the limiter).
    expect(refused.headers).toMatchObject(SECURITY_HEADERS);
    // The count lives in Redis, under the app's prefix.
    const keys = await testRedis().keys(`${config.prefix}:celerity:rl:*`);
    expect(keys).toEqual([`${config.prefix}:celerity:rl:submit:key:k1`]);
  });

  it('a new window gives the budget back', async () => {
    const api = await apiProcess(limitsConfig({ rateLimitSubmit: 1, rateLimitWindow: 1_000 }));
    expect(await statuses(2, () => submit(api))).toEqual([200, 429]);
    await new Promise((r) => setTimeout(r, 1_100));
    expect((await submit(api)).statusCode).toBe(200);
  });

  it('two API processes on the same Redis prefix spend one budget', async () => {
    const config = limitsConfig({ rateLimitSubmit: 4 });
    const [a, b] = await Promise.all([apiProcess(config), apiProcess(config)]);
    expect(await statuses(3, () => submit(a))).toEqual([200, 200, 200]);
    // What a process counts by itself reaches Redis within a flush interval...
    const redis = testRedis();
    await waitFor(async () => (await redis.get(`${config.prefix}:celerity:rl:submit:key:k1`)) === '3', 5_000, FLUSH_INTERVAL_MS);
    expect(await statuses(2, () => submit(b))).toEqual([200, 429]);
    // ...and a process whose word of a key is stale asks Redis again.
    await sleep(FRESH_MS + FLUSH_INTERVAL_MS);
    expect((await submit(a)).statusCode).toBe(429);
  });

  it("counts one process's concurrent requests exactly, whether it asks Redis or counts them itself", async () => {
    const config = limitsConfig({ rateLimitSubmit: 30 });
    const api = await apiProcess(config);
    const codes = async (n: number) => (await Promise.all(Array.from({ length: n }, () => submit(api)))).map((r) => r.statusCode);
    // The key is new here: each of these asks Redis.
    const first = await codes(20);
    expect(first.filter((c) => c === 200)).toHaveLength(20);
    // The key is known and fresh: counted here, then flushed.
    const second = await codes(20);
    expect(second.filter((c) => c === 200)).toHaveLength(10);
    const redis = testRedis();
    await waitFor(async () => (await redis.get(`${config.prefix}:celerity:rl:submit:key:k1`)) === '40', 5_000, FLUSH_INTERVAL_MS);
  });

  it('a closing process sends the counts it has not sent yet', async () => {
    const config = limitsConfig({ rateLimitSubmit: 4 });
    const a = await apiProcess(config);
    expect(await statuses(4, () => submit(a))).toEqual([200, 200, 200, 200]);
    await a.close();
    const b = await apiProcess(config);
    expect((await submit(b)).statusCode).toBe(429);
    expect(Number(await testRedis().get(`${config.prefix}:celerity:rl:submit:key:k1`))).toBe(5);
  });

  it('each key has its own budgets, and submissions and reads are counted apart', async () => {
    const api = await apiProcess(limitsConfig());
    expect(await statuses(4, () => submit(api, 'k1'))).toEqual([200, 200, 200, 429]);
    // Another key: a full budget of its own.
    expect(await statuses(4, () => submit(api, 'k2'))).toEqual([200, 200, 200, 429]);
    // k1's reads are not touched by its spent submissions...
    expect(await statuses(6, () => read(api, 'k1'))).toEqual([200, 200, 200, 200, 200, 429]);
    // ...nor its submissions by its spent reads: both are still refused at their own limit.
    expect((await submit(api, 'k1')).json().error.details).toMatchObject({ budget: 'submit', limit: 3 });
    const refusedRead = await api.inject({ method: 'GET', url: '/v1/jobs', headers: as('k1') });
    expect(refusedRead.json().error.details).toMatchObject({ budget: 'read', limit: 5 });
  });

  it('uploads spend the submission budget', async () => {
    const api = await apiProcess(limitsConfig());
    const upload = () => api.inject({ method: 'POST', url: '/v1/uploads', headers: as('k1'), payload: {} });
    expect(await statuses(2, upload)).toEqual([200, 200]);
    expect(await statuses(2, () => submit(api))).toEqual([200, 429]);
  });

  it('open routes are not limited per key; webhooks spend a submission budget per sender IP', async () => {
    const api = await apiProcess(limitsConfig({ rateLimitSubmit: 2, rateLimitRead: 2 }));
    const health = await statuses(10, () => api.inject({ method: 'GET', url: '/healthz' }));
    expect(health.every((s) => s === 200)).toBe(true);
    expect((await api.inject({ method: 'GET', url: '/healthz' })).headers['x-ratelimit-limit']).toBeUndefined();

    const hook = (ip: string, key?: string) => api.inject({ method: 'POST', url: '/v1/hooks/reports.daily', remoteAddress: ip, ...(key ? { headers: as(key) } : {}), payload: {} });
    // Whatever key a sender shows, its IP is what counts.
    expect([(await hook('203.0.113.7', 'a')).statusCode, (await hook('203.0.113.7', 'b')).statusCode, (await hook('203.0.113.7')).statusCode]).toEqual([200, 200, 429]);
    expect((await hook('203.0.113.7')).json().error.details.budget).toBe('submit');
    expect((await hook('198.51.100.1')).statusCode).toBe(200);
    // IPv6 senders count per /64: walking through one's addresses does not multiply the budget.
    expect([(await hook('2001:db8:1:2::1')).statusCode, (await hook('2001:db8:1:2::99')).statusCode, (await hook('2001:db8:1:2:ffff::5')).statusCode]).toEqual([200, 200, 429]);
  });

  it('without authentication (no key id) requests count per client IP', async () => {
    const api = await apiProcess(limitsConfig({ rateLimitSubmit: 1 }), { auth: 'off' });
    const from = (ip: string) => api.inject({ method: 'POST', url: '/v1/jobs', remoteAddress: ip, payload: {} });
    expect([(await from('192.0.2.1')).statusCode, (await from('192.0.2.1')).statusCode, (await from('192.0.2.2')).statusCode]).toEqual([200, 429, 200]);
  });

  it('a limit of 0 is off: no headers and no Redis key', async () => {
    const config = limitsConfig({ rateLimitSubmit: 0 });
    const api = await apiProcess(config);
    const submits = await Promise.all(Array.from({ length: 10 }, () => submit(api)));
    expect(submits.every((r) => r.statusCode === 200 && r.headers['x-ratelimit-limit'] === undefined)).toBe(true);
    expect((await read(api)).headers['x-ratelimit-limit']).toBe('5');
    expect(await testRedis().keys(`${config.prefix}:celerity:rl:submit:*`)).toEqual([]);

    // Both off: no limiter, no connection, still the headers.
    const none = await apiProcess(limitsConfig({ rateLimitSubmit: 0, rateLimitRead: 0 }));
    const res = await read(none);
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    expect(none.hasDecorator('rateLimit')).toBe(false);
  });

  it('let requests through when Redis is unreachable (no 5xx), and refuse a server that already has @fastify/rate-limit', async () => {
    // Nothing listens on port 1. Not a test environment: its cleanup would delete keys there.
    const config = loadConfig({ env: {}, flags: { redisUrl: 'redis://127.0.0.1:1', rateLimitSubmit: 1, rateLimitRead: 1, logLevel: 'silent' } });
    const api = await apiProcess(config);
    expect(await statuses(5, () => submit(api))).toEqual([200, 200, 200, 200, 200]);
    expect(await statuses(5, () => read(api))).toEqual([200, 200, 200, 200, 200]);

    const host = Fastify();
    onCleanup(() => host.close());
    await host.register(import('@fastify/rate-limit'), { global: false });
    await expect(registerAbuseLimits(host, appOf(limitsConfig()))).rejects.toThrow(/already has @fastify\/rate-limit/);
  });
});

describe('security headers', () => {
  it("are on 200s, the error handler's 4xx, 404s and 500s, and answers before routing", async () => {
    const api = await apiProcess(limitsConfig());
    const answers = [
      [await read(api), 200],
      [await api.inject({ method: 'GET', url: '/v1/count?n=many', headers: as('k1') }), 400],
      [await api.inject({ method: 'GET', url: '/v1/nowhere', headers: as('k1') }), 404],
      [await api.inject({ method: 'GET', url: '/v1/boom', headers: as('k1') }), 500],
      [await api.inject({ method: 'GET', url: '/v1/jobs/%E0%A4%A' }), 400],
    ] as const;
    for (const [res, status] of answers) {
      expect(res.statusCode, res.body).toBe(status);
      expect(res.headers, `${status} ${res.body}`).toMatchObject(SECURITY_HEADERS);
    }
    expect(SECURITY_HEADERS).toMatchObject({
      'content-security-policy': "default-src 'none';frame-ancestors 'none'",
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'strict-transport-security': 'max-age=31536000',
      'referrer-policy': 'no-referrer',
      'cross-origin-resource-policy': 'same-origin',
    });
    // Headers for HTML documents only are not on JSON answers.
    expect(answers[0][0].headers['x-xss-protection']).toBeUndefined();
  });

  it("are on the authentication hook's 401s when registered before it; the limiter still counts per key", async () => {
    const api = await apiProcess(limitsConfig(), { limitsFirst: true });
    const anonymous = await api.inject({ method: 'GET', url: '/v1/jobs/abc' });
    expect(anonymous.statusCode).toBe(401);
    expect(anonymous.headers).toMatchObject(SECURITY_HEADERS);
    expect(await statuses(4, () => submit(api, 'k1'))).toEqual([200, 200, 200, 429]);
    expect((await submit(api, 'k2')).statusCode).toBe(200);
  });

  it('leave the CSP to routes that serve HTML', async () => {
    const api = await apiProcess(limitsConfig());
    const page = await api.inject({ method: 'GET', url: '/dashboard', headers: as('k1') });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-security-policy']).toBeUndefined();
    expect(page.headers).toMatchObject(HTML_SECURITY_HEADERS);
    expect(HTML_SECURITY_HEADERS).toMatchObject({ 'x-content-type-options': 'nosniff', 'cross-origin-opener-policy': 'same-origin', 'x-frame-options': 'DENY' });
  });

  it("are on the raw answers to requests Node's parser refuses", async () => {
    const api = await apiProcess(limitsConfig());
    await api.listen({ port: 0, host: '127.0.0.1' });
    const port = (api.server.address() as { port: number }).port;
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let out = '';
      socket.on('data', (c) => (out += c.toString()));
      socket.on('error', (err) => (out ? resolve(out) : reject(err)));
      socket.on('close', () => resolve(out));
      socket.end('FOO / HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text.toLowerCase()).toContain("\r\ncontent-security-policy: default-src 'none';frame-ancestors 'none'\r\n");
    expect(text.toLowerCase()).toContain('\r\nx-content-type-options: nosniff\r\n');
  });
});

describe('CORS', () => {
  const preflight = (api: FastifyInstance, origin: string) =>
    api.inject({
      method: 'OPTIONS',
      url: '/v1/jobs',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type,idempotency-key' },
    });

  it('is off by default: no Access-Control headers, no preflight route', async () => {
    const api = await apiProcess(limitsConfig());
    const res = await api.inject({ method: 'GET', url: '/v1/jobs/abc', headers: { ...as('k1'), origin: 'https://app.example.com' } });
    expect(res.statusCode).toBe(200);
    expect(Object.keys(res.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
    const pre = await preflight(api, 'https://app.example.com');
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers listed origins, preflights included (they carry no key), and ignores others', async () => {
    const api = await apiProcess(limitsConfig({ corsOrigins: 'https://app.example.com,http://localhost:5173' }));
    const pre = await preflight(api, 'https://app.example.com');
    expect(pre.statusCode).toBe(204);
    expect(pre.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example.com',
      'access-control-allow-credentials': 'true',
      'access-control-max-age': '600',
      vary: expect.stringContaining('Origin'),
    });
    const allowed = String(pre.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type', 'idempotency-key']));
    expect(String(pre.headers['access-control-allow-methods']).split(/,\s*/)).toContain('POST');

    const res = await api.inject({ method: 'POST', url: '/v1/jobs', headers: { ...as('k1'), origin: 'http://localhost:5173' }, payload: {} });
    expect(res.statusCode).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe('http://localhost:5173');
    expect(String(res.headers['access-control-expose-headers']).toLowerCase()).toContain('retry-after');

    const stranger = await api.inject({ method: 'GET', url: '/v1/jobs/abc', headers: { ...as('k1'), origin: 'https://evil.example' } });
    expect(stranger.headers['access-control-allow-origin']).toBeUndefined();
    expect((await preflight(api, 'https://evil.example')).headers['access-control-allow-origin']).toBeUndefined();
  });

  it('with * answers any origin, without credentials', async () => {
    const api = await apiProcess(limitsConfig({ corsOrigins: '*' }));
    const pre = await preflight(api, 'https://anywhere.example');
    expect(pre.statusCode).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('*');
    expect(pre.headers['access-control-allow-credentials']).toBeUndefined();
  });
});

describe('with the real job API', () => {
  const add = defineTask({ name: 'math.add', input: z.object({ a: z.number(), b: z.number() }), handler: async ({ a, b }) => ({ sum: a + b }) });

  it("an oversized JSON body is a 413 in the error shape, with the API's headers, and enqueues nothing; reads are limited", async () => {
    const app = await openTestApp('sqlite', [add], { bodyLimit: 1_000, rateLimitRead: 2, auth: 'keys' });
    const server = Fastify();
    onCleanup(() => server.close());
    // celerityApi registers the limits itself, beside its authentication.
    await server.register(celerityApi, { app, prefix: '/api' });
    await server.ready();
    const k1 = (await createKey(app.store, { name: 'k1', scopes: ['jobs:submit', 'jobs:read'] })).token;
    const k2 = (await createKey(app.store, { name: 'k2', scopes: ['jobs:submit', 'jobs:read'] })).token;

    const big = await server.inject({ method: 'POST', url: '/api/v1/jobs', headers: as(k1), payload: { task: 'math.add', input: { a: 1, b: 2, pad: 'x'.repeat(2_000) } } });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toEqual({ error: { code: 'payload_too_large', message: expect.any(String), details: null } });
    expect(big.headers).toMatchObject(SECURITY_HEADERS);
    expect(await app.broker.queue('default').getJobCounts()).toMatchObject({ waiting: 0, delayed: 0, prioritized: 0, active: 0 });
    expect((await app.listJobs({ limit: 10 })).jobs).toEqual([]);

    // Another key: whichever budget the POST above spent, this one's reads are untouched.
    const get = () => server.inject({ method: 'GET', url: '/api/v1/jobs/nosuchjob', headers: as(k2) });
    expect((await get()).statusCode).toBe(404);
    expect((await get()).statusCode).toBe(404);
    const refused = await get();
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe('rate_limited');
    expect(refused.headers['x-request-id']).toEqual(expect.any(String));
    expect(refused.headers).toMatchObject(SECURITY_HEADERS);
  });
});
