/**
 * The dashboard in a real browser (chromium, headless) against a real server:
 * buildServer with the dashboard, a worker, the recorder, Redis and SQLite.
 * Each test is one thing a person does; none reloads a page unless it says so.
 */
import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer, chain, defineTask, step, uploadRefSchema, type App } from '../../src/index.ts';
import { createKey } from '../../src/auth/key-store.ts';
import { cleanup, deferred, openTestApp, startRecorder, startWorker, waitFor, type Deferred } from '../helpers.ts';
import { BROWSER_TEST_TIMEOUT, browserAvailable, launch, login, newPage, POLL } from './browser-helpers.ts';

// Expressions evaluated in the page are strings: the tests' TypeScript has no DOM types.

const released = new Map<string, Deferred>();

/** Completes when the test releases it: the job stays `started` as long as the test needs. */
const gated = defineTask({
  name: 'ui.gated',
  queue: 'later',
  input: z.object({ gate: z.string() }),
  handler: async ({ gate }) => {
    await released.get(gate)?.promise;
    return { opened: gate };
  },
});

/** Reports rising progress until cancelled. */
const spin = defineTask({
  name: 'ui.spin',
  input: z.object({ step_ms: z.number().int().default(150) }),
  handler: async ({ step_ms }, ctx) => {
    for (let i = 1; ; i++) {
      await new Promise((r) => setTimeout(r, step_ms));
      if (ctx.signal.aborted) throw ctx.signal.reason;
      await ctx.progress({ percent: Math.min(99, i * 3), rows: i * 10 });
    }
  },
});

const note = defineTask({ name: 'ui.note', input: z.object({ text: z.string() }), handler: async ({ text }) => ({ length: text.length }) });
const double = defineTask({ name: 'ui.double', input: z.object({ length: z.number() }).passthrough(), handler: async ({ length }) => ({ length: length * 2 }) });

/** On a queue no worker consumes here: its jobs stay queued. */
const parked = defineTask({ name: 'ui.parked', queue: 'parked', input: z.object({ n: z.number() }), handler: async ({ n }) => n });

/** Tokens whose first run failed: a job fails the first time it sees its token, and completes when run again (a retry). */
const failedOnce = new Set<string>();
const flakyHandler = async ({ token }: { token: string }) => {
  if (!failedOnce.has(token)) {
    failedOnce.add(token);
    throw new Error(`first run of ${token}`);
  }
  return { token, ran: 'again' };
};
const flaky = defineTask({ name: 'ui.flaky', retries: 0, input: z.object({ token: z.string() }), handler: flakyHandler });
/** The same, under another name: the bulk test's own task, so that its count is exact. */
const batch = defineTask({ name: 'ui.batch', retries: 0, input: z.object({ token: z.string() }), handler: flakyHandler });
/** Fails every time: a failed job of another task, which a bulk retry of ui.batch must leave alone. */
const broken = defineTask({
  name: 'ui.broken',
  retries: 0,
  input: z.object({}),
  handler: async () => {
    throw new Error('always');
  },
});

/** An uploaded CSV, row by row, with its progress after each: slow enough for the page to see the bar rise. */
const csvImport = defineTask({
  name: 'ui.csv',
  accepts: ['text/csv'],
  // `gate`: after its first row, the import waits until the test opens that gate.
  input: z.object({ file: uploadRefSchema, row_ms: z.number().int().default(250), gate: z.string().optional() }),
  handler: async ({ file, row_ms, gate }, ctx) => {
    const rows = (await readFile(file.path, 'utf8')).split('\n').slice(1).filter(Boolean);
    for (let i = 1; i <= rows.length; i++) {
      await new Promise((r) => setTimeout(r, row_ms));
      await ctx.progress({ percent: Math.round((i / rows.length) * 100), rows_done: i, rows_total: rows.length });
      if (i === 1 && gate) await released.get(gate)?.promise;
    }
    return { imported: rows.length };
  },
});

const run = browserAvailable() ? describe : describe.skip;

run('the dashboard in a browser (sqlite)', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  let app: App;
  let server: FastifyInstance;
  let base: string;
  let browser: Browser;
  const keys = {} as Record<'admin' | 'viewer' | 'acme' | 'globex', string>;
  const errors: string[] = [];

  beforeAll(async () => {
    app = await openTestApp('sqlite', [gated, spin, note, double, parked, flaky, batch, broken, csvImport], { auth: 'keys' });
    keys.admin = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    keys.viewer = (await createKey(app.store, { name: 'viewer', scopes: ['jobs:read'], tenant: 'acme' })).token;
    keys.acme = (await createKey(app.store, { name: 'acme-ops', scopes: ['jobs:read', 'jobs:cancel', 'jobs:retry', 'ops:read'], tenant: 'acme' })).token;
    keys.globex = (await createKey(app.store, { name: 'globex-ops', scopes: ['jobs:read', 'jobs:cancel'], tenant: 'globex' })).token;
    await startRecorder(app);
    // The default queue only: `later` gets its worker when a test wants its jobs to run.
    await startWorker(app, { queues: ['default'] });
    server = await buildServer(app, { logger: false });
    await server.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
    browser = await launch();
  }, 60_000);

  afterAll(async () => {
    for (const gate of released.values()) gate.resolve();
    await browser?.close();
    await server?.close();
    await cleanup();
    expect(errors).toEqual([]);
  });

  async function page(): Promise<Page> {
    return (await newPage(browser, errors)).page;
  }

  /** The jobs table's row of a job. */
  const row = (p: Page, id: string) => p.locator(`tr[data-job-id="${id}"]`);

  it('refuses a bad key with a message, and lands on the overview with a good one', async () => {
    const p = await page();
    await p.goto(`${base}/dashboard`);
    await p.getByLabel('API key').fill('cel_0123456789abcdef_notakey');
    await p.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('not valid');
    await p.getByLabel('API key').fill(keys.admin);
    await p.getByRole('button', { name: 'Log in' }).click();
    await p.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    // The overview reads the queues and workers of the API with the session cookie.
    await p.getByRole('rowheader', { name: 'default' }).waitFor();
    await p.getByRole('cell', { name: 'default', exact: true }).first().waitFor();
    expect(await p.getByTestId('who').textContent()).toContain('ops');
    // The cookie is HttpOnly: the page's script cannot read it.
    expect(await p.evaluate('document.cookie')).toBe('');
    const [cookie] = await p.context().cookies();
    expect(cookie).toMatchObject({ name: 'celerity_session', httpOnly: true, sameSite: 'Strict' });
  });

  it('shows a submitted job in the jobs table, and sees it go from queued to completed without a reload', async () => {
    const p = await page();
    await login(p, base, keys.admin);
    await p.getByRole('link', { name: 'Jobs' }).click();
    await p.getByRole('heading', { level: 1, name: 'Jobs' }).waitFor();
    // A marker that a reload would wipe.
    await p.evaluate('window.marker = 42');
    // The page follows the events once it says so (a job added before shows through the read it makes as the stream opens, if recorded by then).
    await expect.poll(() => p.getByTestId('live-mode').textContent(), POLL).toBe('· Live');
    const gate = deferred();
    released.set('q2c', gate);
    const job = await app.enqueue(gated, { gate: 'q2c' });
    await expect.poll(() => row(p, job.id).locator('.badge').textContent(), { timeout: 15_000 }).toBe('queued');
    // Now a worker takes it, and the test lets it finish.
    await startWorker(app, { queues: ['later'] });
    gate.resolve();
    await expect.poll(() => row(p, job.id).locator('.badge').textContent(), { timeout: 15_000 }).toBe('completed');
    expect(await p.evaluate('window.marker')).toBe(42);
    // The row links to the job's page.
    await row(p, job.id).getByRole('link').click();
    await p.getByRole('heading', { level: 1, name: /ui\.gated/ }).waitFor();
    await expect.poll(() => p.getByLabel('Result').textContent(), POLL).toContain('"opened": "q2c"');
  });

  it("shows a running job's progress rising, and cancels it from its page", async () => {
    const job = await app.enqueue(spin, { step_ms: 150 }, { tenant: 'acme' });
    const p = await page();
    await login(p, base, keys.acme);
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await p.getByRole('heading', { level: 1, name: /ui\.spin/ }).waitFor();
    const percent = async () => Number.parseInt((await p.getByTestId('progress-percent').textContent()) ?? '0', 10);
    await expect.poll(percent, { timeout: 15_000 }).toBeGreaterThan(0);
    // The percent stops at 99 after 5 s, which a slow machine can reach before the page loads; the rows counter keeps rising.
    const rows = async () =>
      Number.parseInt(
        (await p
          .locator('.counters div', { has: p.locator('dt', { hasText: /^rows$/ }) })
          .locator('dd')
          .textContent()) ?? '0',
        10,
      );
    const first = await rows();
    await expect.poll(rows, { timeout: 15_000 }).toBeGreaterThan(first);
    await p.getByRole('button', { name: 'Cancel job' }).click();
    await expect.poll(() => p.locator('h1 .badge').textContent(), { timeout: 20_000 }).toBe('cancelled');
    expect((await app.getJob(job.id))?.status).toBe('cancelled');
    // Nothing left to cancel.
    expect(await p.getByRole('button', { name: 'Cancel job' }).count()).toBe(0);
  });

  it('shows a viewer no action, and refuses its cookie a forced POST', async () => {
    const gate = deferred();
    released.set('viewer', gate);
    const job = await app.enqueue(gated, { gate: 'viewer' }, { tenant: 'acme' });
    const p = await page();
    await login(p, base, keys.viewer);
    expect(await p.getByTestId('who').textContent()).toContain('read only');
    expect(await p.getByRole('link', { name: 'Bulk actions' }).count()).toBe(0);
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await p.getByRole('heading', { level: 1, name: /ui\.gated/ }).waitFor();
    await p.getByRole('heading', { name: 'Details' }).waitFor();
    expect(await p.getByRole('button', { name: /Cancel|Retry|Delete/ }).count()).toBe(0);
    // The page's own token does not help a key without the scope.
    const statuses = await p.evaluate(async (id) => {
      const session = (await (await fetch('/dashboard/session')).json()) as { csrf_token: string };
      const withToken = await fetch(`/v1/jobs/${id}/cancel`, { method: 'POST', headers: { 'x-csrf-token': session.csrf_token } });
      const withoutToken = await fetch(`/v1/jobs/${id}/cancel`, { method: 'POST' });
      return [withToken.status, ((await withToken.json()) as { error: { code: string } }).error.code, withoutToken.status];
    }, job.id);
    expect(statuses).toEqual([403, 'forbidden', 403]);
    expect((await app.getJob(job.id))?.status).not.toBe('cancelled');
    gate.resolve();
  });

  it("shows a tenant's key its tenant's jobs only", async () => {
    const acme = await app.enqueue(note, { text: 'acme-only' }, { tenant: 'acme' });
    const globex = await app.enqueue(note, { text: 'globex-only' }, { tenant: 'globex' });
    await waitFor(async () => (await app.listJobs({ limit: 100 })).jobs.filter((j) => j.id === acme.id || j.id === globex.id).length === 2);
    const p = await page();
    await login(p, base, keys.globex);
    await p.goto(`${base}/dashboard/#/jobs?task=ui.note`);
    await row(p, globex.id).waitFor({ timeout: 15_000 });
    expect(await row(p, acme.id).count()).toBe(0);
    const tenants = await p.locator('table.jobs tbody tr td:nth-child(5)').allTextContents();
    expect(tenants.length).toBeGreaterThan(0);
    expect(new Set(tenants)).toEqual(new Set(['globex']));
    // Another tenant's job by its URL: as if it did not exist.
    await p.goto(`${base}/dashboard/#/jobs/${acme.id}`);
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('No such job');
  });

  it("shows a workflow's steps with their statuses", async () => {
    const handle = await app.workflow(chain(step(note, { text: 'abc' }), step(double)));
    await handle.wait({ timeoutMs: 15_000 });
    const p = await page();
    await login(p, base, keys.admin);
    await p.goto(`${base}/dashboard/#/jobs/${handle.id}`);
    const steps = p.getByRole('list', { name: 'Workflow steps' });
    await steps.waitFor();
    await expect.poll(() => steps.locator('[data-step]').allTextContents(), POLL).toEqual(['1. ui.note completed', '2. ui.double completed']);
  });

  it('works at a narrow width and in dark mode, by keyboard', async () => {
    const { page: p } = await newPage(browser, errors, { width: 390, colorScheme: 'dark' });
    await p.goto(`${base}/dashboard/`);
    expect(await p.evaluate('document.documentElement.dataset.theme')).toBe('dark');
    // The key field has the focus; Enter submits.
    await p.getByLabel('API key').waitFor();
    await expect.poll(() => p.evaluate('document.activeElement?.id'), POLL).toBe('api-key');
    await p.keyboard.type(keys.admin);
    await p.keyboard.press('Enter');
    await p.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
    // Nothing wider than the screen but the tables' own scrolling boxes.
    expect(await p.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await p.keyboard.press('Tab');
    expect(await p.evaluate('document.activeElement?.textContent')).toBe('Skip to content');
    await p.keyboard.press('Enter');
    expect(await p.evaluate('document.activeElement?.id')).toBe('main');
    const toggle = p.getByRole('button', { name: 'Dark mode' });
    expect(await toggle.getAttribute('aria-pressed')).toBe('true');
    await toggle.focus();
    await p.keyboard.press('Space');
    await expect.poll(() => p.evaluate('document.documentElement.dataset.theme'), POLL).toBe('light');
    expect(await toggle.getAttribute('aria-pressed')).toBe('false');
  });

  it("shows a queue's depth and paused state, pages through its jobs with the cursor, and filters from the form", async () => {
    const ids = (await app.enqueueMany(Array.from({ length: 55 }, (_, n) => ({ task: parked, input: { n } })))).map((j) => j.id);
    await app.broker.queue('parked').pause();
    await waitFor(async () => (await app.listJobs({ task: 'ui.parked', limit: 100 })).jobs.length === 55);
    const p = await page();
    await login(p, base, keys.admin);
    const queue = p.getByRole('row', { name: /^parked/ });
    await expect.poll(() => queue.getByRole('cell').allTextContents(), { timeout: 10_000 }).toEqual(expect.arrayContaining(['55', 'paused']));

    await queue.getByRole('link', { name: 'parked' }).click();
    await p.getByRole('heading', { level: 1, name: 'Jobs' }).waitFor();
    expect(await p.getByLabel('Queue').inputValue()).toBe('parked');
    // The queue's link filters the jobs by queue: a full first page.
    const rows = p.locator('table.jobs tbody tr');
    await expect.poll(() => rows.count(), POLL).toBe(50);
    expect(await p.getByRole('alert').count()).toBe(0);
    await p.getByLabel('Queue').fill('');
    await p.getByLabel('Task').fill('ui.parked');
    await p.getByLabel('Status').selectOption('queued');
    await p.getByRole('button', { name: 'Apply filters' }).click();
    await expect.poll(() => p.evaluate('location.hash'), POLL).toContain('status=queued');
    await expect.poll(() => rows.count(), POLL).toBe(50);
    const first = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-job-id')));
    await p.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(() => rows.count(), POLL).toBe(5);
    const second = await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-job-id')));
    expect(new Set([...first, ...second])).toEqual(new Set(ids));
    expect(await p.getByRole('button', { name: 'Next page' }).count()).toBe(0);
    await p.getByRole('button', { name: 'First page' }).click();
    await expect.poll(() => rows.count(), POLL).toBe(50);
    await app.broker.queue('parked').resume();
  });

  it('retries a failed job from its page: the new job completes, and links back to the original', async () => {
    const job = await app.enqueue(flaky, { token: 'retry-page' }, { tenant: 'acme' });
    await waitFor(async () => (await app.getJob(job.id))?.status === 'failed');
    const p = await page();
    await login(p, base, keys.acme);
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    expect(await p.getByText('first run of retry-page').count()).toBeGreaterThan(0);
    await p.getByRole('button', { name: 'Retry', exact: true }).click();
    // The page moves to the new job, which runs again and completes.
    await expect.poll(() => p.evaluate('location.hash'), POLL).not.toBe(`#/jobs/${job.id}`);
    const retried = decodeURIComponent(String(await p.evaluate('location.hash')).replace('#/jobs/', ''));
    await expect.poll(() => p.locator('h1 .badge').textContent(), { timeout: 20_000 }).toBe('completed');
    await expect.poll(() => p.getByLabel('Result').textContent(), POLL).toContain('"ran": "again"');
    expect(await app.getJob(retried)).toMatchObject({ task: 'ui.flaky', status: 'completed', retryOf: job.id, tenant: 'acme' });
    // "Retry of" links back to the original, which keeps its failure.
    await p.getByRole('link', { name: job.id }).click();
    await expect.poll(() => p.evaluate('location.hash'), POLL).toBe(`#/jobs/${job.id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
  });

  it('bulk-retries the failed jobs of one task after a dry-run count, follows the operation to its end, and the jobs run again', async () => {
    const failed = await Promise.all(['b1', 'b2', 'b3'].map((token) => app.enqueue(batch, { token })));
    const other = await app.enqueue(broken, {});
    await waitFor(async () => (await app.listJobs({ status: 'failed', limit: 100 })).jobs.filter((j) => [...failed, other].some((f) => f.id === j.id)).length === 4);
    const p = await page();
    await login(p, base, keys.admin);
    await p.getByRole('link', { name: 'Bulk actions' }).click();
    await p.getByLabel('Action', { exact: true }).selectOption('retry');
    await p.getByLabel('Status').selectOption('failed');
    await p.getByLabel('Task').fill('ui.batch');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await expect.poll(() => p.getByTestId('bulk-count').textContent(), POLL).toBe('3');
    const confirm = p.getByRole('button', { name: 'Retry 3 jobs' });
    // Changing the filter withdraws the count, and the button with it.
    await p.getByLabel('Task').fill('ui.broken');
    expect(await confirm.count()).toBe(0);
    await p.getByLabel('Task').fill('ui.batch');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await confirm.click();
    // The operation runs as the internal task celerity.bulk, on its own queue, which this suite's worker leaves out until now.
    await expect.poll(() => p.getByRole('heading', { name: /^Operation retry / }).count(), POLL).toBe(1);
    await startWorker(app, { queues: ['celerity'] });
    await expect.poll(() => p.getByTestId('bulk-progress').textContent(), { timeout: 20_000, interval: 200 }).toBe('3 of 3');
    await expect
      .poll(
        () =>
          p
            .getByRole('heading', { name: /^Operation retry / })
            .locator('..')
            .locator('.badge')
            .first()
            .textContent(),
        POLL,
      )
      .toBe('completed');
    expect(await p.getByRole('progressbar', { name: 'Progress of the operation' }).getAttribute('value')).toBe('3');
    expect(await p.getByRole('button', { name: 'Stop' }).count()).toBe(0);
    // Each failed job of the task has a new job, which completes; the other task's failure is left alone.
    await waitFor(async () => (await app.listJobs({ task: 'ui.batch', status: 'completed', limit: 100 })).jobs.length === 3, 20_000);
    const again = (await app.listJobs({ task: 'ui.batch', status: 'completed', limit: 100 })).jobs;
    expect(new Set(again.map((j) => j.retryOf))).toEqual(new Set(failed.map((f) => f.id)));
    expect((await app.listJobs({ task: 'ui.broken', limit: 100 })).jobs).toHaveLength(1);
    // The operation is in the audit log, with its key and filter.
    await p.getByRole('link', { name: 'Audit log' }).first().click();
    const entry = p.locator('table.audit tbody tr').first();
    await expect.poll(() => entry.textContent(), POLL).toContain('status=failed task=ui.batch');
    expect(await entry.textContent()).toContain('ops');
  });

  it('shows the progress bar of a CSV import rising, from an upload through POST /v1/uploads', async () => {
    // The import holds after its first row until the page has shown it: under the suite's
    // load the page can take longer to load than the rows take to import (in one CI run the
    // spin test's percent, above, reached its cap before its page showed it).
    const gate = deferred();
    released.set('csv', gate);
    const csv = ['key,summary', ...Array.from({ length: 24 }, (_, i) => `T-${i},row ${i}`)].join('\n');
    const form = new FormData();
    form.set('task', 'ui.csv');
    form.set('input', JSON.stringify({ row_ms: 100, gate: 'csv' }));
    form.set('file', new Blob([csv], { type: 'text/csv' }), 'tickets.csv');
    const res = await fetch(`${base}/v1/uploads`, { method: 'POST', headers: { authorization: `Bearer ${keys.admin}` }, body: form });
    expect(res.status).toBe(202);
    const { job_id: id } = (await res.json()) as { job_id: string };
    const p = await page();
    await login(p, base, keys.admin);
    await p.goto(`${base}/dashboard/#/jobs/${id}`);
    await p.getByRole('heading', { level: 1, name: /ui\.csv/ }).waitFor();
    const percent = async () => Number.parseInt((await p.getByTestId('progress-percent').textContent()) ?? '0', 10);
    await expect.poll(percent, { timeout: 15_000, interval: 50 }).toBeGreaterThan(0);
    const first = await percent();
    expect(first).toBeLessThan(100);
    gate.resolve();
    await expect.poll(percent, { timeout: 15_000, interval: 50 }).toBeGreaterThan(first);
    await expect.poll(() => p.locator('h1 .badge').textContent(), { timeout: 20_000 }).toBe('completed');
    expect(await percent()).toBe(100);
    expect(await p.locator('.counters').textContent()).toContain('rows_total24');
    await expect.poll(() => p.getByLabel('Result').textContent(), POLL).toContain('"imported": 24');
  });
});

run('the dashboard in a browser: authentication off, and a blocked address', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  let browser: Browser;
  const errors: string[] = [];
  beforeAll(async () => {
    browser = await launch();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await cleanup();
    expect(errors).toEqual([]);
  });

  it('opens without a login and says that every visitor is an admin', async () => {
    const app = await openTestApp('sqlite', [note], { auth: 'off' });
    await startRecorder(app);
    const server = await buildServer(app, { logger: false });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const { context, page: p } = await newPage(browser, errors);
    try {
      await p.goto(`http://127.0.0.1:${(server.server.address() as { port: number }).port}/dashboard/`);
      await p.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
      expect(await p.getByRole('status').textContent()).toContain('CELERITY_AUTH=off');
      expect(await p.getByRole('button', { name: 'Log out' }).count()).toBe(0);
      expect(await p.getByLabel('API key').count()).toBe(0);
    } finally {
      // The page first: a poll arriving while the server closes would be answered 503.
      await context.close();
      await server.close();
    }
  });

  it("names the server's refusal, not the network, when the address is blocked for failed authentications", async () => {
    const app = await openTestApp('sqlite', [note], { auth: 'keys', authFailureLimit: 2, rateLimitWindow: 60_000 });
    const key = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    const server = await buildServer(app, { logger: false });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const origin = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
    const { context, page: p } = await newPage(browser, errors);
    try {
      await login(p, origin, key);
      // The browser and this process share 127.0.0.1: bad keys from here block the page's address too.
      let status = 0;
      for (let i = 0; i < 5 && status !== 429; i++) {
        status = (await fetch(`${origin}/v1/jobs`, { headers: { authorization: `Bearer cel_0123456789abcdef_bad${i}` } })).status;
      }
      expect(status).toBe(429);
      await p.reload();
      const alert = p.getByRole('alert');
      await expect.poll(() => alert.textContent(), POLL).toContain('Too many failed authentications from this address');
      expect(await alert.textContent()).not.toContain('cannot reach');
      expect(await p.getByRole('button', { name: 'Try again' }).count()).toBe(1);
    } finally {
      await context.close();
      await server.close();
    }
  });
});
