/**
 * The per-IP limit on failed authentications (src/api/auth-failure-limit.ts):
 * counted in Redis under the app's prefix, shared by the API's
 * authentication hook and the dashboard's login, checked before any key is
 * looked up in SQL, off with 0, open while Redis is away. Client addresses
 * vary through X-Forwarded-For (CELERITY_TRUST_PROXY=true).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { type Logger, pino } from 'pino';
import { z } from 'zod';
import { createKey } from '../src/auth/key-store.ts';
import { appMetrics } from '../src/ops/metrics.ts';
import { buildServer, createApp, defineTask, type App } from '../src/index.ts';
import { loadConfig, type RawConfig } from '../src/config.ts';
import { onCleanup, openTestApp, sleep, testRedis, useCleanup } from './helpers.ts';

useCleanup();

const add = defineTask({ name: 'math.add', input: z.object({ a: z.number(), b: z.number() }), handler: async ({ a, b }) => ({ sum: a + b }) });

const LIMIT = 3;
const WINDOW_MS = 2_000;
/** A well-formed key that no store holds: its id must be looked up to be refused. */
const unknownKey = (n: number) => `cel_${String(n).padStart(16, '0')}_${'x'.repeat(43)}`;

async function serverOf(app: App, logger: Logger | false = false): Promise<FastifyInstance> {
  const server = await buildServer(app, { logger });
  onCleanup(() => server.close());
  await server.ready();
  return server;
}

/** Another API process of `app`'s deployment: an app of the same config, and its server. */
async function processLike(app: App): Promise<{ app: App; server: FastifyInstance }> {
  const other = createApp({ tasks: [add], config: app.config });
  onCleanup(() => other.close());
  return { app: other, server: await serverOf(other) };
}

async function setUp(overrides: RawConfig = {}) {
  const app = await openTestApp('sqlite', [add], { auth: 'keys', trustProxy: 'true', authFailureLimit: LIMIT, rateLimitWindow: WINDOW_MS, ...overrides });
  const server = await serverOf(app);
  const valid = (await createKey(app.store, { name: 'reader', scopes: ['jobs:read'] })).token;
  return { app, server, valid };
}

/** GET /v1/jobs from `ip` with `key` (none: no Authorization header). */
function read(server: FastifyInstance, ip: string, key?: string): Promise<LightMyRequestResponse> {
  return server.inject({ method: 'GET', url: '/v1/jobs', headers: { 'x-forwarded-for': ip, ...(key === undefined ? {} : { authorization: `Bearer ${key}` }) } });
}

function login(server: FastifyInstance, ip: string, key: string): Promise<LightMyRequestResponse> {
  return server.inject({ method: 'POST', url: '/dashboard/login', headers: { 'x-forwarded-for': ip }, payload: { key } });
}

function expectRefused(res: LightMyRequestResponse): void {
  expect(res.statusCode, res.body).toBe(429);
  const retryAfter = Number(res.headers['retry-after']);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(WINDOW_MS / 1000);
  expect(res.headers['www-authenticate']).toBeUndefined();
  expect(res.json()).toEqual({
    error: {
      code: 'rate_limited',
      message: expect.stringMatching(/^Too many failed authentications from this address: at most 3 per 2 s; retry in \d+ s$/),
      details: { budget: 'auth_failures', limit: LIMIT, window_ms: WINDOW_MS, retry_after_s: retryAfter },
    },
  });
}

describe('failed authentications per IP', () => {
  it('past the limit, an address gets 429 with Retry-After before any key lookup, a valid key included; other addresses are unaffected', async () => {
    const { app, server, valid } = await setUp();
    for (let i = 0; i < LIMIT; i++) expect((await read(server, '203.0.113.7', unknownKey(i))).statusCode).toBe(401);

    const lookups = vi.spyOn(app, 'openStore');
    expectRefused(await read(server, '203.0.113.7', unknownKey(99)));
    expectRefused(await read(server, '203.0.113.7', valid));
    expectRefused(await read(server, '203.0.113.7'));
    expect(lookups).not.toHaveBeenCalled();

    // Another address, with a key this process never read: looked up and let in.
    expect((await read(server, '198.51.100.1', valid)).statusCode).toBe(200);
    expect((await read(server, '198.51.100.1', unknownKey(100))).statusCode).toBe(401);
    expect(lookups).toHaveBeenCalled();
    lookups.mockRestore();

    // Counted in Redis, under the app's prefix.
    const redis = testRedis();
    expect(await redis.get(`${app.config.prefix}:celerity:auth-fail:203.0.113.7`)).toBe(String(LIMIT));
    expect(await redis.get(`${app.config.prefix}:celerity:auth-fail:198.51.100.1`)).toBe('1');
    expect(await appMetrics(app).registry.getSingleMetricAsString('celerity_auth_refusals_total')).toMatch(/^celerity_auth_refusals_total 3$/m);

    // A success does not reset the count, but the window's end does.
    await sleep(WINDOW_MS + 100);
    expect((await read(server, '203.0.113.7', valid)).statusCode).toBe(200);
    expect((await read(server, '203.0.113.7', unknownKey(1))).statusCode).toBe(401);
  });

  it('a blocked address gets 429 with its dashboard session cookie too, from the dashboard as from the API', async () => {
    const { server, valid } = await setUp();
    const ip = '192.0.2.60';
    const session = await login(server, ip, valid);
    expect(session.statusCode, session.body).toBe(200);
    const cookie = String(session.headers['set-cookie']).split(';')[0]!;
    const withCookie = (url: string) => server.inject({ method: 'GET', url, headers: { 'x-forwarded-for': ip, cookie } });
    expect((await withCookie('/dashboard/session')).statusCode).toBe(200);
    for (let i = 0; i < LIMIT; i++) expect((await read(server, ip, unknownKey(i))).statusCode).toBe(401);
    expectRefused(await withCookie('/dashboard/session'));
    expectRefused(await withCookie('/v1/jobs'));
    // Another address with the same cookie is not refused: the limit is the address's.
    expect((await server.inject({ method: 'GET', url: '/dashboard/session', headers: { 'x-forwarded-for': '192.0.2.61', cookie } })).statusCode).toBe(200);
  });

  it('counts every key that fails (malformed, unknown, a wrong secret), not a request without one nor a 403 for a scope', async () => {
    const { server, valid } = await setUp();
    const ip = '192.0.2.10';
    // A key without jobs:submit: each submission is a 403, and does not count.
    for (let i = 0; i < LIMIT + 2; i++) {
      const res = await server.inject({ method: 'POST', url: '/v1/jobs', headers: { 'x-forwarded-for': ip, authorization: `Bearer ${valid}` }, payload: { task: 'math.add', input: { a: 1, b: 2 } } });
      expect(res.statusCode).toBe(403);
    }
    expect((await read(server, ip, valid)).statusCode).toBe(200);

    // No key at all (a browser, a probe, a stale dashboard tab): nothing to guess or look up, not counted.
    for (let i = 0; i < LIMIT + 2; i++) expect((await read(server, ip)).statusCode).toBe(401);
    expect((await read(server, ip, valid)).statusCode).toBe(200);

    const wrongSecret = `${valid.slice(0, -43)}${'y'.repeat(43)}`;
    expect((await read(server, ip, 'not-a-key')).statusCode).toBe(401);
    expect((await read(server, ip, unknownKey(2))).statusCode).toBe(401);
    expect((await read(server, ip, wrongSecret)).statusCode).toBe(401);
    expectRefused(await read(server, ip, valid));
  });

  it('the dashboard login is limited the same way and spends the same count', async () => {
    const { app, server, valid } = await setUp();
    const ip = '192.0.2.20';
    expect((await read(server, ip, unknownKey(1))).statusCode).toBe(401);
    expect((await login(server, ip, unknownKey(2))).statusCode).toBe(401);
    expect((await login(server, ip, 'cel_short')).statusCode).toBe(401);

    const lookups = vi.spyOn(app, 'openStore');
    expectRefused(await login(server, ip, valid));
    expectRefused(await login(server, ip, unknownKey(3)));
    expectRefused(await read(server, ip, valid));
    // GET /dashboard/session with a Bearer key: the same.
    expectRefused(await server.inject({ method: 'GET', url: '/dashboard/session', headers: { 'x-forwarded-for': ip, authorization: `Bearer ${valid}` } }));
    expect(lookups).not.toHaveBeenCalled();
    lookups.mockRestore();

    expect((await login(server, '192.0.2.21', valid)).statusCode).toBe(200);
  });

  it('another API process refuses a blocked address without a lookup, from the count in Redis', async () => {
    const { app, server, valid } = await setUp();
    const ip = '192.0.2.30';
    for (let i = 0; i < LIMIT; i++) expect((await read(server, ip, unknownKey(i))).statusCode).toBe(401);

    // Other processes of the same deployment: same config, their own memory.
    const [second, third] = await Promise.all([processLike(app), processLike(app)]);
    const lookups = vi.spyOn(second.app, 'openStore');
    expectRefused(await read(second.server, ip, unknownKey(50)));
    expect(lookups).not.toHaveBeenCalled();
    // A failure that needs no lookup is counted first, and the count says the address was blocked already.
    expectRefused(await read(third.server, ip, 'not-a-key'));
    expect((await read(second.server, '192.0.2.31', valid)).statusCode).toBe(200);
  });

  it('0 turns the limit off', async () => {
    const { app, server, valid } = await setUp({ authFailureLimit: 0 });
    const ip = '192.0.2.40';
    for (let i = 0; i < LIMIT * 3; i++) expect((await read(server, ip, unknownKey(i))).statusCode).toBe(401);
    for (let i = 0; i < LIMIT; i++) expect((await login(server, ip, unknownKey(i))).statusCode).toBe(401);
    expect((await read(server, ip, valid)).statusCode).toBe(200);
    expect(await testRedis().keys(`${app.config.prefix}:celerity:auth-fail:*`)).toEqual([]);
  });

  it('fails open while Redis is unreachable: failures get their 401, valid keys their 200', async () => {
    // Nothing listens on port 1. Not a test environment: its cleanup would delete keys there.
    const dir = mkdtempSync(join(tmpdir(), 'celerity-authfail-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const config = loadConfig({
      env: {},
      flags: {
        redisUrl: 'redis://127.0.0.1:1',
        sqlitePath: join(dir, 'jobs.db'),
        uploadDir: join(dir, 'uploads'),
        logLevel: 'silent',
        auth: 'keys',
        trustProxy: 'true',
        authFailureLimit: 1,
        rateLimitWindow: WINDOW_MS,
      },
    });
    const app = createApp({ tasks: [add], config });
    onCleanup(() => app.close());
    const valid = (await createKey(await app.openStore(), { name: 'reader', scopes: ['jobs:read'] })).token;
    const lines: string[] = [];
    const server = await serverOf(app, pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }));
    for (let i = 0; i < 5; i++) expect((await read(server, '192.0.2.50', unknownKey(i))).statusCode).toBe(401);
    for (let i = 0; i < 3; i++) expect((await login(server, '192.0.2.50', unknownKey(i))).statusCode).toBe(401);
    // Past the auth hook, a route that reads Redis may fail; the hook let the key through.
    expect((await read(server, '192.0.2.50', valid)).statusCode).not.toBe(429);
    // Said once, not once per request or reconnection attempt.
    expect(lines.filter((line) => line.includes('failed-authentication limit: Redis is unreachable'))).toHaveLength(1);
  });
});
