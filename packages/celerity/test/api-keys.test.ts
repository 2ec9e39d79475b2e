import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { KeyAuthenticator } from '../src/auth/authenticator.ts';
import { createKey, findKey, listKeys, parseToken, revokeKey } from '../src/auth/key-store.ts';
import { taskPatternMatches } from '../src/auth/principal.ts';
import { buildServer, createApp, defineTask, InvalidOptionsError } from '../src/index.ts';
import { cleanup, onCleanup, openTestApp, startRecorder, startWorker, testEnv, waitFor, type TestEnv } from './helpers.ts';
import { processEnv } from './process-helpers.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const CLI = join(ROOT, 'packages', 'celerity', 'bin', 'celerity.js');

const noop = defineTask({ name: 'reports.daily', input: z.object({}), handler: async () => ({}) });

afterEach(cleanup);

describe('API keys', () => {
  it('are high-entropy tokens of which only a hash is stored', async () => {
    const app = await openTestApp('sqlite', [noop]);
    const { token, key } = await createKey(app.store, { name: 'ci', tenant: 'acme', scopes: ['jobs:submit', 'jobs:read'] });
    expect(token).toMatch(/^cel_[0-9a-z]{16}_[A-Za-z0-9_-]{43}$/);
    expect(parseToken(token)?.id).toBe(key.id);
    const row = await app.store.db.selectFrom('api_keys').selectAll().where('id', '=', key.id).executeTakeFirstOrThrow();
    expect(JSON.stringify(row)).not.toContain(parseToken(token)?.secret);
    expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);
    const second = await createKey(app.store, { name: 'ci', scopes: ['admin'] });
    expect(second.token).not.toBe(token);
  });

  it('checks the secret of every request: a wrong one is refused after the right one was accepted, and a revoked key after its cached read', async () => {
    const app = await openTestApp('sqlite', [noop]);
    const { token, key } = await createKey(app.store, { name: 'ci', tenant: 'acme', scopes: ['jobs:read'] });
    const authenticator = new KeyAuthenticator(() => app.openStore(), { cacheMs: 200 });
    onCleanup(() => authenticator.close());
    const secret = parseToken(token)!.secret;
    // Same id, same length, one character off: only the secret tells them apart.
    const wrong = `cel_${key.id}_${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`;
    for (let i = 0; i < 3; i++) {
      expect((await authenticator.authenticate(`Bearer ${token}`)).ok).toBe(true);
      expect(authenticator.authenticateCached(`Bearer ${token}`)?.ok).toBe(true);
      expect(await authenticator.authenticate(`Bearer ${wrong}`)).toEqual({ ok: false, failure: 'invalid' });
      expect(authenticator.authenticateCached(`Bearer ${wrong}`)).toEqual({ ok: false, failure: 'invalid' });
    }
    await revokeKey(app.store, key.id);
    await waitFor(async () => !(await authenticator.authenticate(`Bearer ${token}`)).ok, 2_000);
  });

  it('refuses bad fields, naming each', async () => {
    const app = await openTestApp('sqlite', [noop]);
    const err = await createKey(app.store, { name: '', scopes: ['jobs:write'], tasks: ['bad pattern!'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).details.issues.map((i) => i.path)).toEqual(['name', 'scopes', 'tasks']);
    expect(await listKeys(app.store)).toEqual([]);
  });

  it('match task patterns with * for any characters', () => {
    expect(taskPatternMatches('reports.*', 'reports.daily')).toBe(true);
    expect(taskPatternMatches('reports.*', 'reports.eu.daily')).toBe(true);
    expect(taskPatternMatches('reports.*', 'reportsX')).toBe(false);
    expect(taskPatternMatches('reports.*', 'mail.reports.x')).toBe(false);
    expect(taskPatternMatches('*.daily', 'reports.daily')).toBe(true);
    expect(taskPatternMatches('a*b*c', 'abc')).toBe(true);
    expect(taskPatternMatches('a*b*c', 'acb')).toBe(false);
    expect(taskPatternMatches('a*a', 'a')).toBe(false);
    expect(taskPatternMatches('exact', 'exact')).toBe(true);
  });

  it('are refused by another API process within 1 s of their revocation, and their last use is recorded', async () => {
    const first = await openTestApp('sqlite', [noop], { auth: 'keys' });
    // A second process: its own app and server on the same store and Redis.
    const second = createApp({ tasks: [noop], config: first.env.config });
    onCleanup(() => second.close());
    const [a, b] = [await buildServer(first, { logger: false }), await buildServer(second, { logger: false })];
    onCleanup(() => a.close());
    onCleanup(() => b.close());
    const { token, key } = await createKey(first.store, { name: 'ci', tenant: 'acme', scopes: ['jobs:read'] });
    const get = (api: typeof a) => api.inject({ method: 'GET', url: '/v1/jobs', headers: { authorization: `Bearer ${token}` } });
    expect((await get(b)).statusCode).toBe(200);
    expect((await get(a)).statusCode).toBe(200);
    // Revoked through the first process' store; the second has the key cached.
    await revokeKey(first.store, key.id);
    const revokedAt = Date.now();
    let status = 200;
    while (status === 200 && Date.now() - revokedAt < 2_000) {
      status = (await get(b)).statusCode;
      if (status === 200) await new Promise((r) => setTimeout(r, 20));
    }
    expect(status).toBe(401);
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    await b.close();
    await a.close();
    const used = await findKey(first.store, key.id);
    expect(used?.lastUsedAt).toBeGreaterThan(0);
  });

  it('answer 401 for a missing, malformed, unknown or revoked key with the same shape, and 503 when the store is down', async () => {
    const app = await openTestApp('sqlite', [noop], { auth: 'keys' });
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const revoked = await createKey(app.store, { name: 'old', scopes: ['jobs:read'] });
    await revokeKey(app.store, 'old');
    const unknown = 'cel_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    const answers = [];
    for (const header of [undefined, 'Basic abc', 'Bearer nope', `Bearer ${unknown}`, `Bearer ${revoked.token}`]) {
      const res = await api.inject({ method: 'GET', url: '/v1/jobs', headers: header ? { authorization: header } : {} });
      expect(res.statusCode).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="celerity"/);
      answers.push(res.json().error.message);
    }
    // Unknown and revoked read alike.
    expect(answers[3]).toBe(answers[4]);
    const live = await createKey(app.store, { name: 'live', scopes: ['jobs:read'] });
    const authenticator = new KeyAuthenticator(async () => {
      throw new Error('connection refused');
    });
    onCleanup(() => authenticator.close());
    await expect(authenticator.authenticate(`Bearer ${live.token}`)).rejects.toMatchObject({ code: 'store_unavailable', httpStatus: 503 });
  });

  it('let Prometheus read /metrics with CELERITY_METRICS_TOKEN, and nothing else', async () => {
    const app = await openTestApp('sqlite', [noop], { auth: 'keys', metricsToken: 'scrape-token-0123456789' });
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const bearer = { authorization: 'Bearer scrape-token-0123456789' };
    expect((await api.inject({ method: 'GET', url: '/metrics', headers: bearer })).statusCode).toBe(200);
    expect((await api.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer scrape-token-wrong' } })).statusCode).toBe(401);
    expect((await api.inject({ method: 'GET', url: '/v1/queues', headers: bearer })).statusCode).toBe(401);
  });
});

describe('a tenant key end to end', () => {
  it("hands the key's tenant to the handler as ctx.tenant and records the key", async () => {
    const whoami = defineTask({ name: 'who.am.i', input: z.object({}), handler: async (_input, ctx) => ({ tenant: ctx.tenant }) });
    const app = await openTestApp('postgres', [whoami], { auth: 'keys' });
    await startWorker(app);
    await startRecorder(app);
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const { token, key } = await createKey(app.store, { name: 'acme-ci', tenant: 'acme', scopes: ['jobs:submit', 'jobs:read'] });
    const auth = { authorization: `Bearer ${token}` };
    const res = await api.inject({ method: 'POST', url: '/v1/jobs', headers: auth, payload: { task: 'who.am.i', input: {} } });
    expect(res.statusCode).toBe(202);
    const id = res.json().job_id as string;
    const done = await waitFor(async () => {
      const job = (await api.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: auth })).json();
      return job.status === 'completed' ? job : undefined;
    });
    expect(done).toMatchObject({ tenant: 'acme', key_id: key.id, result: { tenant: 'acme' } });
    // And in the history, listed by the key that submitted it.
    const listed = await waitFor(async () => {
      const page = (await api.inject({ method: 'GET', url: `/v1/jobs?key_id=${key.id}`, headers: auth })).json();
      return page.jobs.length === 1 && page.jobs[0].status === 'completed' ? page.jobs : undefined;
    });
    expect(listed[0]).toMatchObject({ job_id: id, key_id: key.id, tenant: 'acme' });
  });
});

describe('celerity keys and a closed serve', () => {
  const run = (args: string[], env: TestEnv, extra: Record<string, string> = {}) => spawnSync(process.execPath, [CLI, ...args], { env: processEnv(env, extra), encoding: 'utf8', timeout: 60_000 });

  it.each(['sqlite', 'postgres'] as const)('creates, lists and revokes keys (%s); the key alone goes to stdout', async (kind) => {
    const env = testEnv(kind);
    const store = env;
    const created = run(['keys', 'create', '--name', 'ci', '--tenant', 'acme', '--scopes', 'jobs:submit,jobs:read', '--tasks', 'reports.*'], store);
    expect(created.status).toBe(0);
    expect(created.stdout.trim()).toMatch(/^cel_[0-9a-z]{16}_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('tenant acme');
    const listed = JSON.parse(run(['keys', 'list', '--json'], store).stdout) as { keys: { id: string; name: string; tenant: string; scopes: string[]; tasks: string[]; revoked_at: string | null }[] };
    expect(listed.keys).toEqual([expect.objectContaining({ name: 'ci', tenant: 'acme', scopes: ['jobs:submit', 'jobs:read'], tasks: ['reports.*'], revoked_at: null })]);
    expect(created.stdout).toContain(listed.keys[0]?.id);
    const revoked = run(['keys', 'revoke', 'ci'], store);
    expect(revoked.status).toBe(0);
    expect(revoked.stdout).toContain(listed.keys[0]?.id);
    const again = run(['keys', 'revoke', 'ci'], store);
    expect(again.status).toBe(1);
    expect(again.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('says in one line what is wrong with a key to create', () => {
    const env = testEnv('sqlite');
    const res = run(['keys', 'create', '--name', 'ci', '--scopes', 'jobs:write'], env);
    expect(res.status).toBe(2);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);
    expect(res.stderr).toContain('--scopes');
    expect(res.stdout).toBe('');
  });

  it('refuses to serve without a key, in one line, unless CELERITY_AUTH=off', () => {
    const env = testEnv('sqlite');
    const res = run(['serve', '--app', join(ROOT, 'examples', 'quickstart', 'app.ts'), '--port', '0'], env);
    expect(res.status).toBe(1);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);
    expect(res.stderr).toContain('celerity keys create');
    expect(res.stderr).toContain('CELERITY_AUTH=off');
  });
});
