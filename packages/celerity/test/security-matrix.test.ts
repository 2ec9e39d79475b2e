/**
 * The access matrix of docs/security.md, checked cell by cell: every route of
 * the API (every one its OpenAPI document lists must have a row), crossed
 * with no key, a bad key, a revoked key, the wrong scope, a key limited to
 * other tasks, another tenant's key and the right key. Beyond the status, no
 * answer to a key of another tenant carries the first tenant's data, and its
 * 404 is byte for byte the 404 of a job that does not exist.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer, defineTask, signWebhook, type App } from '../src/index.ts';
import { createKey, revokeKey } from '../src/auth/key-store.ts';
import { cleanup, openTestApp, startRecorder, stores, type StoreKind } from './helpers.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const HOOK_SECRET = 'matrix-webhook-secret-0123456789';

const reports = defineTask({ name: 'reports.daily', input: z.object({ day: z.string() }), handler: async () => ({ ok: true }) });
const mail = defineTask({ name: 'mail.send', input: z.object({ to: z.string() }), handler: async () => ({ sent: true }) });
const count = defineTask({ name: 'files.count', input: z.object({ file: z.any() }), accepts: ['text/csv'], handler: async () => ({ rows: 1 }) });
const hook = defineTask({ name: 'tickets.hook', input: z.object({ ticket: z.string() }), webhook: { secret: HOOK_SECRET }, handler: async () => ({}) });

const CASES = ['No key', 'Bad key', 'Revoked key', 'Wrong scope', 'Other tasks', 'Another tenant', 'Right key'] as const;
type Case = (typeof CASES)[number];

interface Row {
  method: string;
  path: string;
  scope: string;
  expected: Record<Case, number>;
}

/** The table of docs/security.md "What each route answers". */
function documentedMatrix(): Row[] {
  const text = readFileSync(join(ROOT, 'docs', 'security.md'), 'utf8');
  const section = text.slice(text.indexOf('## What each route answers'));
  const lines = section.split('\n').filter((l) => /^\| `(GET|POST|DELETE|PUT|PATCH) /.test(l));
  return lines.map((line) => {
    const cells = line
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    const [method, path] = (cells[0] as string).replace(/`/g, '').split(' ') as [string, string];
    const expected = Object.fromEntries(CASES.map((c, i) => [c, Number(/\d{3}/.exec(cells[2 + i] as string)?.[0])])) as Record<Case, number>;
    return { method, path, scope: (cells[1] as string).replace(/`/g, ''), expected };
  });
}

/**
 * An SSE answer stays open: a 200 is read as its status and headers, and the
 * request is dropped (on its own connection, so that nothing lingers); any
 * other answer is read whole.
 */
function streamStatus(url: string, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false });
    req.on('error', reject);
    req.on('response', (res) => {
      const head = new Headers(Object.entries(res.headers).map(([k, v]) => [k, String(v)]));
      if (res.statusCode === 200) {
        req.destroy();
        resolve(new Response('', { status: 200, headers: head }));
        return;
      }
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve(new Response(body, { status: res.statusCode ?? 0, headers: head })));
    });
    req.end();
  });
}

const ALL_JOB_SCOPES = ['jobs:submit', 'jobs:read', 'jobs:cancel', 'jobs:retry', 'jobs:delete', 'ops:read'];

describe.each(stores)('the access matrix of docs/security.md (%s)', (kind: StoreKind) => {
  let app: App;
  let api: FastifyInstance;
  let base: string;
  const keys = {} as Record<'right' | 'otherTasks' | 'otherTenant' | 'revoked' | 'opsOnly' | 'jobsOnly' | 'admin', string>;
  // An acme job of mail.send: read and cancelled by the cases; its id and input must never reach globex.
  let acmeJob: string;
  const ACME_SECRET = 'acme-private-recipient@example.com';

  beforeAll(async () => {
    // The matrix sends a bad key to every route from one address: far past the
    // limit on failed authentications, which test/auth-failure-limit.test.ts covers.
    app = await openTestApp(kind, [reports, mail, count, hook], { auth: 'keys', metricsToken: undefined, authFailureLimit: 0 });
    await startRecorder(app);
    const store = app.store;
    const make = async (scopes: string[], tenant: string | null, tasks?: string[]) => (await createKey(store, { name: `k${scopes.join('')}`, scopes, tenant, tasks })).token;
    keys.right = await make(ALL_JOB_SCOPES, 'acme');
    keys.otherTasks = await make(ALL_JOB_SCOPES, 'acme', ['reports.*']);
    keys.otherTenant = await make(ALL_JOB_SCOPES, 'globex');
    keys.opsOnly = await make(['ops:read'], 'acme');
    keys.jobsOnly = await make(['jobs:submit', 'jobs:read', 'jobs:cancel', 'jobs:retry', 'jobs:delete'], 'acme');
    keys.admin = await make(['admin'], null);
    const revoked = await createKey(store, { name: 'revoked', scopes: ALL_JOB_SCOPES, tenant: 'acme' });
    await revokeKey(store, revoked.key.id);
    keys.revoked = revoked.token;
    acmeJob = (await app.enqueue(mail, { to: ACME_SECRET }, { tenant: 'acme' })).id;
    await app.enqueue(reports, { day: '2026-11-30' }, { tenant: 'acme' });
    await app.enqueue(reports, { day: 'globex-day' }, { tenant: 'globex' });
    api = await buildServer(app, { logger: false });
    await api.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(api.server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    await api?.close();
    await cleanup();
  });

  /** The key a case sends to a route that needs `scope`. */
  function keyFor(c: Case, scope: string): string | undefined {
    switch (c) {
      case 'No key':
        return undefined;
      case 'Bad key':
        return 'cel_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
      case 'Revoked key':
        return keys.revoked;
      case 'Wrong scope':
        return scope === 'ops:read' ? keys.jobsOnly : keys.opsOnly;
      case 'Other tasks':
        return keys.otherTasks;
      case 'Another tenant':
        return keys.otherTenant;
      case 'Right key':
        return keys.right;
    }
  }

  /** A fresh queued acme job, for the cases that change it (the right key cancels it). */
  async function freshAcmeJob(): Promise<string> {
    return (await app.enqueue(mail, { to: ACME_SECRET }, { tenant: 'acme' })).id;
  }

  /** An acme bulk operation started by the right key (it waits: no worker consumes its queue here). */
  let acmeOperation: string | undefined;
  async function acmeBulk(): Promise<string> {
    acmeOperation ??= (await app.startBulk({ keyId: keys.right.slice(4, 20), keyName: 'right', scope: { all: false, tenant: 'acme' }, taskPatterns: null }, 'retry', { status: 'failed' })).id;
    return acmeOperation;
  }

  async function send(row: Row, c: Case): Promise<Response> {
    // Queue actions are an admin's: the right key is one.
    const key = row.scope === 'admin' && c === 'Right key' ? keys.admin : keyFor(c, row.scope);
    const headers: Record<string, string> = key ? { authorization: `Bearer ${key}` } : {};
    const url = (path: string) => `${base}${path}`;
    switch (`${row.method} ${row.path}`) {
      case 'POST /v1/jobs': {
        const options = c === 'Another tenant' ? { tenant: 'acme' } : undefined;
        return fetch(url('/v1/jobs'), {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify({ task: 'mail.send', input: { to: 'x@example.com' }, options }),
        });
      }
      case 'GET /v1/jobs':
        return fetch(url(c === 'Another tenant' ? '/v1/jobs?tenant=acme' : '/v1/jobs'), { headers });
      case 'GET /v1/jobs/{id}':
        return fetch(url(`/v1/jobs/${acmeJob}`), { headers });
      case 'GET /v1/jobs/{id}/logs':
        return fetch(url(`/v1/jobs/${acmeJob}/logs`), { headers });
      case 'POST /v1/jobs/{id}/cancel':
        return fetch(url(`/v1/jobs/${c === 'Right key' ? await freshAcmeJob() : acmeJob}/cancel`), { method: 'POST', headers });
      case 'POST /v1/jobs/{id}/retry': {
        let id = acmeJob;
        if (c === 'Right key') {
          id = await freshAcmeJob();
          await app.cancel(id);
        }
        return fetch(url(`/v1/jobs/${id}/retry`), { method: 'POST', headers });
      }
      case 'DELETE /v1/jobs/{id}':
        return fetch(url(`/v1/jobs/${c === 'Right key' ? await freshAcmeJob() : acmeJob}`), { method: 'DELETE', headers });
      case 'POST /v1/jobs/{id}/promote': {
        const id = c === 'Right key' ? (await app.enqueue(mail, { to: ACME_SECRET }, { tenant: 'acme', delay: 3_600_000 })).id : acmeJob;
        return fetch(url(`/v1/jobs/${id}/promote`), { method: 'POST', headers });
      }
      case 'POST /v1/queues/{name}/pause':
      case 'POST /v1/queues/{name}/resume':
      case 'POST /v1/queues/{name}/drain':
        // The maintenance queue: draining `default` would take acme's job from the other rows.
        return fetch(url(row.path.replace('{name}', 'celerity')), { method: 'POST', headers });
      case 'GET /v1/queues/{name}/tenants':
        return fetch(url('/v1/queues/default/tenants'), { headers });
      case 'PUT /v1/queues/{name}/tenants/{tenant}/weight':
        return fetch(url('/v1/queues/default/tenants/acme/weight'), { method: 'PUT', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ weight: 2 }) });
      case 'POST /v1/bulk': {
        const filter = c === 'Another tenant' ? { tenant: 'acme' } : { status: 'failed', task: 'mail.send' };
        return fetch(url('/v1/bulk'), { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ action: 'retry', filter }) });
      }
      case 'GET /v1/bulk/{id}':
        return fetch(url(`/v1/bulk/${await acmeBulk()}`), { headers });
      case 'POST /v1/bulk/{id}/stop':
        return fetch(url(`/v1/bulk/${await acmeBulk()}/stop`), { method: 'POST', headers });
      case 'POST /v1/uploads': {
        const form = new FormData();
        form.set('task', 'files.count');
        if (c === 'Another tenant') form.set('options', JSON.stringify({ tenant: 'acme' }));
        form.set('file', new Blob(['a,b\n1,2\n'], { type: 'text/csv' }), 'rows.csv');
        return fetch(url('/v1/uploads'), { method: 'POST', headers, body: form });
      }
      case 'GET /v1/stats':
        // Aggregates of every tenant: a tenant's ops:read key reads the same as any other (see docs/security.md).
        return fetch(url('/v1/stats?granularity=hour&task=mail.send'), { headers });
      case 'GET /v1/events':
        return streamStatus(url('/v1/events'), headers);
      case 'POST /v1/hooks/{task}': {
        const body = JSON.stringify({ ticket: 'T-1' });
        const signed: Record<string, string> = c === 'Right key' ? { 'celerity-signature': signWebhook(HOOK_SECRET, body) } : {};
        return fetch(url('/v1/hooks/tickets.hook'), { method: 'POST', headers: { ...headers, ...signed, 'content-type': 'application/json' }, body });
      }
      case 'GET /dashboard/assets/{file}': {
        const page = await (await fetch(url('/dashboard'))).text();
        return fetch(url(/src="([^"]+\.js)"/.exec(page)?.[1] ?? '/dashboard/assets/none.js'), { headers });
      }
      case 'POST /dashboard/login':
        return fetch(url('/dashboard/login'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(key ? { key } : {}) });
      case 'GET /dashboard/session':
      case 'POST /dashboard/logout': {
        // The key logs in; the route is sent the session cookie (and CSRF token) it got, as a browser would.
        const login = key ? await fetch(url('/dashboard/login'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) }) : undefined;
        const session: Record<string, string> = {};
        if (login?.ok) {
          session.cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] as string;
          session['x-csrf-token'] = ((await login.json()) as { csrf_token: string }).csrf_token;
        }
        return fetch(url(row.path), { method: row.method, headers: session });
      }
      default:
        return fetch(url(row.path), { method: row.method, headers });
    }
  }

  it('has a row for every route of the OpenAPI document', async () => {
    const spec = (await (await fetch(`${base}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const documented = new Set(documentedMatrix().map((r) => `${r.method} ${r.path}`));
    const routes = Object.entries(spec.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
    expect(routes.filter((r) => !documented.has(r))).toEqual([]);
  });

  it('answers every cell as documented, in the error shape, without leaking the other tenant', async () => {
    const matrix = documentedMatrix();
    expect(matrix.length).toBeGreaterThanOrEqual(13);
    const failures: string[] = [];
    for (const row of matrix) {
      for (const c of CASES) {
        const res = await send(row, c);
        const text = await res.text();
        const where = `${row.method} ${row.path} / ${c}`;
        if (res.status !== row.expected[c]) failures.push(`${where}: ${res.status}, expected ${row.expected[c]} (${text.slice(0, 200)})`);
        if (res.status >= 400) {
          const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
          if (typeof body.error?.code !== 'string' || typeof body.error.message !== 'string') failures.push(`${where}: not the error shape: ${text.slice(0, 200)}`);
          const scheme = row.scope === 'signature' ? 'Celerity-Signature' : 'Bearer';
          if (res.status === 401 && !res.headers.get('www-authenticate')?.startsWith(scheme)) failures.push(`${where}: 401 without WWW-Authenticate: ${scheme}`);
        }
        if (c === 'Another tenant' && (text.includes(ACME_SECRET) || (!row.path.startsWith('/v1/jobs/{id}') && text.includes(acmeJob)))) {
          failures.push(`${where}: the answer carries acme's job`);
        }
      }
    }
    expect(failures).toEqual([]);
  });

  it("answers another tenant's job exactly as a job that does not exist", async () => {
    const missing = `${acmeJob.slice(0, -4)}zzzz`;
    for (const [method, suffix] of [
      ['GET', ''],
      ['GET', '/logs'],
      ['POST', '/cancel'],
    ] as const) {
      const theirs = await fetch(`${base}/v1/jobs/${acmeJob}${suffix}`, { method, headers: { authorization: `Bearer ${keys.otherTenant}` } });
      const none = await fetch(`${base}/v1/jobs/${missing}${suffix}`, { method, headers: { authorization: `Bearer ${keys.otherTenant}` } });
      expect(theirs.status).toBe(404);
      expect(none.status).toBe(404);
      expect((await theirs.text()).replaceAll(acmeJob, 'ID')).toBe((await none.text()).replaceAll(missing, 'ID'));
    }
  });

  it("lists only the key's tenant and tasks; an admin sees every tenant", async () => {
    const list = async (key: string, query = '') =>
      ((await (await fetch(`${base}/v1/jobs${query}`, { headers: { authorization: `Bearer ${key}` } })).json()) as { jobs: { tenant: string; task: string }[] }).jobs;
    // The history is written by the recorder: wait until it holds the three seeded jobs.
    const seeded = async () => (await list(keys.admin)).filter((j) => j.tenant === 'acme' || j.tenant === 'globex').length >= 3;
    for (let i = 0; i < 200 && !(await seeded()); i++) await new Promise((r) => setTimeout(r, 25));
    const globex = await list(keys.otherTenant);
    expect(globex.length).toBeGreaterThan(0);
    expect(globex.every((j) => j.tenant === 'globex')).toBe(true);
    const acmeReports = await list(keys.otherTasks);
    expect(acmeReports.length).toBeGreaterThan(0);
    expect(acmeReports.every((j) => j.tenant === 'acme' && j.task.startsWith('reports.'))).toBe(true);
    const all = await list(keys.admin);
    // Maintenance ticks have no tenant; the admin sees them too.
    expect([...new Set(all.map((j) => j.tenant))]).toEqual(expect.arrayContaining(['acme', 'globex']));
    expect((await list(keys.admin, '?tenant=globex')).every((j) => j.tenant === 'globex')).toBe(true);
  });

  it('takes the tenant from the key, records the key, and lists by key', async () => {
    const res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.right}`, 'content-type': 'application/json' },
      body: JSON.stringify({ task: 'reports.daily', input: { day: 'x' } }),
    });
    expect(res.status).toBe(202);
    const { job_id } = (await res.json()) as { job_id: string };
    const job = await app.getJob(job_id);
    expect(job?.tenant).toBe('acme');
    expect(job?.keyId).toBe(keys.right.slice(4, 20));
    // Same tenant named explicitly: accepted.
    const same = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.right}`, 'content-type': 'application/json' },
      body: JSON.stringify({ task: 'reports.daily', input: { day: 'y' }, options: { tenant: 'acme' } }),
    });
    expect(same.status).toBe(202);
  });

  it('keeps internal tasks, chosen job ids and upload handles from tenant keys', async () => {
    const post = (key: string, body: unknown) =>
      fetch(`${base}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const internal = await post(keys.right, { task: 'celerity.purge', input: {} });
    expect(internal.status).toBe(403);
    expect(((await internal.json()) as { error: { details: { task: string } } }).error.details.task).toBe('celerity.purge');
    const chosen = await post(keys.right, { task: 'reports.daily', input: { day: 'x' }, options: { job_id: acmeJob } });
    expect(chosen.status).toBe(422);
    expect(await chosen.text()).not.toContain(ACME_SECRET);
    const handle = await post(keys.right, { task: 'files.count', input: { file: { upload_id: '01jzzzzzzzzzzzzzzzzzzzzzzz', path: '/etc/passwd' } } });
    expect(handle.status).toBe(422);
    expect(((await handle.json()) as { error: { details: { issues: { path: string }[] } } }).error.details.issues[0]?.path).toBe('input.file');
  });

  it('scopes idempotency keys to the tenant', async () => {
    const post = (key: string) =>
      fetch(`${base}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'idempotency-key': 'order-42' },
        body: JSON.stringify({ task: 'reports.daily', input: { day: 'same' } }),
      });
    const acme = (await (await post(keys.right)).json()) as { job_id: string };
    const again = await post(keys.right);
    expect(((await again.json()) as { job_id: string }).job_id).toBe(acme.job_id);
    const globex = await post(keys.otherTenant);
    expect(globex.status).toBe(202);
    expect(globex.headers.get('idempotent-replayed')).toBeNull();
    expect(((await globex.json()) as { job_id: string }).job_id).not.toBe(acme.job_id);
  });
});
