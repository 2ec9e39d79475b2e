/**
 * The dashboard's server side over plain HTTP: its page and assets, login
 * with an API key into an HttpOnly SameSite=Strict cookie, the job API taking
 * that cookie (with a CSRF token for changes), revocation ending sessions,
 * and no login with authentication off.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer, defineTask, type App } from '../../src/index.ts';
import { createKey, revokeKey } from '../../src/auth/key-store.ts';
import { cleanup, openTestApp, sleep, stores, type StoreKind } from '../helpers.ts';

const mail = defineTask({ name: 'mail.send', input: z.object({ to: z.string() }), handler: async () => ({ sent: true }) });

interface Session {
  cookie: string;
  csrf: string;
  setCookie: string;
}

describe.each(stores)('dashboard sessions (%s)', (kind: StoreKind) => {
  let app: App;
  let api: FastifyInstance;
  let base: string;
  let admin: string;
  let viewer: string;

  beforeAll(async () => {
    app = await openTestApp(kind, [mail], { auth: 'keys' });
    admin = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    viewer = (await createKey(app.store, { name: 'viewer', scopes: ['jobs:read'], tenant: 'acme' })).token;
    api = await buildServer(app, { logger: false });
    await api.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(api.server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await api?.close();
    await cleanup();
  });

  async function login(key: string): Promise<Session> {
    const res = await fetch(`${base}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) });
    expect(res.status).toBe(200);
    const setCookie = res.headers.get('set-cookie') ?? '';
    const body = (await res.json()) as { csrf_token: string };
    return { cookie: setCookie.split(';')[0] as string, csrf: body.csrf_token, setCookie };
  }

  it('serves the page with a CSP that allows no inline script, and its hashed assets for good', async () => {
    const page = await fetch(`${base}/dashboard`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    const html = await page.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
    const js = /src="(\/dashboard\/assets\/app-[\w]+\.js)"/.exec(html)?.[1];
    const css = /href="(\/dashboard\/assets\/app-[\w]+\.css)"/.exec(html)?.[1];
    expect(js).toBeDefined();
    expect(css).toBeDefined();
    for (const [path, type] of [
      [js, 'text/javascript'],
      [css, 'text/css'],
    ] as const) {
      const res = await fetch(`${base}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain(type);
      expect(res.headers.get('cache-control')).toContain('immutable');
      // Offline: the bundle loads nothing from another origin.
      expect(await res.text()).not.toMatch(/(?:src|href|url)\(?\s*["']?https?:\/\/(?!www\.w3\.org)/);
    }
    const missing = await fetch(`${base}/dashboard/assets/..%2Fmanifest.json`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });

  it('refuses a bad key at login in the error shape, and a missing one naming the field', async () => {
    const bad = await fetch(`${base}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: 'cel_0123456789abcdef_nope' }) });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('set-cookie')).toBeNull();
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const none = await fetch(`${base}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({}) });
    expect(none.status).toBe(400);
    const body = (await none.json()) as { error: { code: string; details: { issues: { path: string }[] } } };
    expect(body.error.details.issues[0]?.path).toBe('body.key');
    const extra = await fetch(`${base}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: admin, remember: true }) });
    expect(extra.status).toBe(400);
  });

  it('logs in with a key into an HttpOnly, SameSite=Strict cookie that the job API takes', async () => {
    const s = await login(admin);
    expect(s.setCookie).toMatch(/^celerity_session=[A-Za-z0-9_-]{43}; Path=\//);
    expect(s.setCookie).toContain('HttpOnly');
    expect(s.setCookie).toContain('SameSite=Strict');
    // Plain HTTP here: Secure would make the browser drop the cookie.
    expect(s.setCookie).not.toContain('Secure');
    const session = await fetch(`${base}/dashboard/session`, { headers: { cookie: s.cookie } });
    expect(await session.json()).toMatchObject({ auth: 'keys', name: 'ops', scopes: ['admin'], csrf_token: s.csrf });
    const jobs = await fetch(`${base}/v1/jobs`, { headers: { cookie: s.cookie } });
    expect(jobs.status).toBe(200);
    // The session id is not the Redis key: only its hash is stored.
    const keys = await app.broker.redis.keys(`${app.config.prefix}:celerity:session:*`);
    expect(keys.some((k) => k.includes(s.cookie.split('=')[1] as string))).toBe(false);
  });

  it("refuses a login posted by another site's page", async () => {
    const post = (origin: string) => fetch(`${base}/dashboard/login`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ key: admin }) });
    const foreign = await post('https://evil.example');
    expect(foreign.status).toBe(403);
    expect(foreign.headers.get('set-cookie')).toBeNull();
    expect(await foreign.json()).toMatchObject({ error: { code: 'forbidden', details: { field: 'origin' } } });
    expect((await post('null')).status).toBe(403);
    expect((await post(base)).status).toBe(200);
  });

  it('answers a form login with a redirect to the dashboard', async () => {
    const res = await fetch(`${base}/dashboard/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `key=${encodeURIComponent(admin)}`,
      redirect: 'manual',
    });
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/dashboard/');
    expect(res.headers.get('set-cookie')).toContain('HttpOnly');
  });

  it('needs the CSRF token for a cookie request that changes state', async () => {
    const s = await login(admin);
    const job = await app.enqueue(mail, { to: 'a@example.com' });
    const without = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { cookie: s.cookie } });
    expect(without.status).toBe(403);
    expect(await without.json()).toMatchObject({ error: { code: 'forbidden', details: { field: 'x-csrf-token' } } });
    const wrong = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { cookie: s.cookie, 'x-csrf-token': `${s.csrf.slice(0, -1)}${s.csrf.endsWith('A') ? 'B' : 'A'}` } });
    expect(wrong.status).toBe(403);
    // Another session's token is no better.
    const other = await login(admin);
    const crossed = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { cookie: s.cookie, 'x-csrf-token': other.csrf } });
    expect(crossed.status).toBe(403);
    expect((await app.getJob(job.id))?.status).toBe('queued');
    const right = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { cookie: s.cookie, 'x-csrf-token': s.csrf } });
    expect(right.status).toBe(200);
  });

  it("keeps a viewer's cookie to its scopes and its tenant", async () => {
    const s = await login(viewer);
    const job = await app.enqueue(mail, { to: 'b@example.com' }, { tenant: 'acme' });
    const cancel = await fetch(`${base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: { cookie: s.cookie, 'x-csrf-token': s.csrf } });
    expect(cancel.status).toBe(403);
    expect(await cancel.json()).toMatchObject({ error: { code: 'forbidden', details: { scope: 'jobs:cancel' } } });
    const others = await fetch(`${base}/v1/jobs?tenant=globex`, { headers: { cookie: s.cookie } });
    expect(others.status).toBe(403);
    const queues = await fetch(`${base}/v1/queues`, { headers: { cookie: s.cookie } });
    expect(queues.status).toBe(403);
  });

  it('judges a request with an Authorization header by that header alone', async () => {
    const s = await login(admin);
    const res = await fetch(`${base}/v1/jobs`, { headers: { cookie: s.cookie, authorization: 'Bearer cel_0123456789abcdef_nope' } });
    expect(res.status).toBe(401);
  });

  it('ends the sessions of a revoked key within a second, and on logout', async () => {
    const key = await createKey(app.store, { name: 'temp', scopes: ['jobs:read'], tenant: null });
    const s = await login(key.token);
    expect((await fetch(`${base}/v1/jobs`, { headers: { cookie: s.cookie } })).status).toBe(200);
    await revokeKey(app.store, key.key.id);
    await sleep(600);
    const after = await fetch(`${base}/v1/jobs`, { headers: { cookie: s.cookie } });
    expect(after.status).toBe(401);
    expect((await fetch(`${base}/dashboard/session`, { headers: { cookie: s.cookie } })).status).toBe(401);

    const t = await login(admin);
    const refused = await fetch(`${base}/dashboard/logout`, { method: 'POST', headers: { cookie: t.cookie } });
    expect(refused.status).toBe(403);
    const out = await fetch(`${base}/dashboard/logout`, { method: 'POST', headers: { cookie: t.cookie, 'x-csrf-token': t.csrf } });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toContain('Max-Age=0');
    expect((await fetch(`${base}/v1/jobs`, { headers: { cookie: t.cookie } })).status).toBe(401);
  });

  it('ignores a cookie that is not a session id it made', async () => {
    const res = await fetch(`${base}/v1/jobs`, { headers: { cookie: 'celerity_session=../../etc; other=1' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toContain('Bearer');
  });
});

describe('the session cookie over HTTPS', () => {
  afterAll(cleanup);

  it('is Secure when a trusted proxy says the request came over HTTPS', async () => {
    const app = await openTestApp('sqlite', [mail], { auth: 'keys', trustProxy: '127.0.0.1' });
    const key = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    const api = await buildServer(app, { logger: false });
    try {
      const login = (headers: Record<string, string>) => api.inject({ method: 'POST', url: '/dashboard/login', headers: { 'content-type': 'application/json', ...headers }, payload: { key } });
      expect(String((await login({ 'x-forwarded-proto': 'https' })).headers['set-cookie'])).toMatch(/; Secure$/);
      expect(String((await login({})).headers['set-cookie'])).not.toContain('Secure');
    } finally {
      await api.close();
    }
  });
});

describe('the dashboard with authentication off', () => {
  afterAll(cleanup);

  it('needs no login and says so', async () => {
    const app = await openTestApp('sqlite', [mail], { auth: 'off' });
    const api = await buildServer(app, { logger: false });
    try {
      const session = await api.inject({ method: 'GET', url: '/dashboard/session' });
      expect(session.statusCode).toBe(200);
      expect(session.json()).toMatchObject({ auth: 'off', scopes: ['admin'], csrf_token: null });
      const page = await api.inject({ method: 'GET', url: '/dashboard' });
      expect(page.body).toContain('data-auth="off"');
    } finally {
      await api.close();
    }
  });
});
