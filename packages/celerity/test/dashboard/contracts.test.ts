/**
 * The page's side of the operating actions being built on other branches:
 * retry (with edited input) and bulk actions after a dry-run count. Until
 * they merge, this test serves stand-ins that speak their announced
 * contracts, and checks what the page sends (body, CSRF token) and shows.
 * A stand-in steps aside once the real route exists, and its test is
 * skipped: the real flows are then browser.test.ts's it.todo's to write.
 */
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer, defineTask, type App } from '../../src/index.ts';
import { createKey } from '../../src/auth/key-store.ts';
import { cleanup, openTestApp, startRecorder, startWorker, waitFor } from '../helpers.ts';
import { BROWSER_TEST_TIMEOUT, browserAvailable, launch, login, newPage, POLL } from './browser-helpers.ts';

const fails = defineTask({
  name: 'contract.fails',
  input: z.object({ n: z.number() }),
  retries: 0,
  handler: async ({ n }) => {
    if (n < 100) throw new Error(`n is ${n}, below 100`);
    return { n };
  },
});

interface Seen {
  route: string;
  body: unknown;
  csrf: string | undefined;
}

const run = browserAvailable() ? describe : describe.skip;

run('the operating actions against their announced contracts', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  let app: App;
  let server: FastifyInstance;
  let base: string;
  let browser: Browser;
  let admin: string;
  const seen: Seen[] = [];
  const errors: string[] = [];
  const standIn = { retry: false, bulk: false, stats: false };

  beforeAll(async () => {
    app = await openTestApp('sqlite', [fails], { auth: 'keys' });
    admin = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    await startRecorder(app);
    await startWorker(app);
    server = await buildServer(app, { logger: false });
    const note = (route: string, request: { body: unknown; headers: Record<string, unknown> }) => seen.push({ route, body: request.body, csrf: request.headers['x-csrf-token'] as string | undefined });
    // Stand-ins outside the API's context (no auth: this is about the page). Each does what its contract says, with Celerity's own calls.
    standIn.retry = !server.hasRoute({ method: 'POST', url: '/v1/jobs/:id/retry' });
    if (standIn.retry) {
      server.post<{ Params: { id: string }; Body: { input?: unknown } | undefined }>('/v1/jobs/:id/retry', async (request, reply) => {
        note('retry', request);
        const old = await app.getJob(request.params.id);
        if (!old) return reply.status(404).send({ error: { code: 'job_not_found', message: 'no such job', details: null } });
        const job = await app.enqueueByName(old.task, request.body?.input ?? old.input);
        return reply.status(202).send({ job_id: job.id, retry_of: old.id });
      });
    }
    standIn.bulk = !server.hasRoute({ method: 'POST', url: '/v1/bulk' });
    if (standIn.bulk) {
      server.post<{ Body: { action: string; filter: { status?: 'failed'; task?: string }; dry_run: boolean } }>('/v1/bulk', async (request) => {
        note('bulk', request);
        const { jobs } = await app.listJobs({ status: request.body.filter.status, task: request.body.filter.task, limit: 1000 });
        if (request.body.dry_run) return { count: jobs.length };
        for (const j of jobs) await app.enqueueByName(j.task, j.input);
        return { id: 'op-1' };
      });
      server.get('/v1/bulk/:id', async () => ({ id: 'op-1', status: 'completed', done: 3, total: 3 }));
    }
    standIn.stats = !server.hasRoute({ method: 'GET', url: '/v1/stats' });
    if (standIn.stats) {
      server.get<{ Querystring: Record<string, string> }>('/v1/stats', async (request) => {
        note('stats', { body: request.query, headers: request.headers });
        // Ten minutes of made-up points: this checks the drawing, not the numbers.
        const to = Date.parse(request.query.to ?? '');
        return {
          series: Array.from({ length: 10 }, (_, i) => ({
            t: new Date(to - (10 - i) * 60_000).toISOString(),
            completed: 10 + i,
            failed: i % 3,
            wait_p50: 5,
            wait_p95: 20 + i,
            run_p50: 40,
            run_p95: 90,
          })),
        };
      });
    }
    await server.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
    browser = await launch();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await cleanup();
    expect(errors).toEqual([]);
  });

  async function page(): Promise<Page> {
    const { page: p } = await newPage(browser, errors);
    await login(p, base, admin);
    return p;
  }

  it('retries a failed job, then retries it with edited input, from its page', async (ctx) => {
    if (!standIn.retry) ctx.skip();
    const job = await app.enqueue(fails, { n: 1 });
    await waitFor(async () => (await app.getJob(job.id))?.status === 'failed');
    const p = await page();
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    await p.getByRole('button', { name: 'Retry', exact: true }).click();
    // The page moves to the new job, which fails the same way.
    await expect.poll(() => p.evaluate('location.hash'), POLL).not.toContain(job.id);
    const retried = String(await p.evaluate('location.hash'))
      .split('/')
      .pop() as string;
    expect((await app.getJob(retried))?.task).toBe('contract.fails');
    expect(seen.at(-1)).toMatchObject({ route: 'retry', csrf: expect.any(String) });

    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    await p.getByText('Retry with edited input').click();
    await p.getByLabel('Input (JSON)').fill('{"n": 150}');
    await p.getByRole('button', { name: 'Retry with this input' }).click();
    await expect.poll(() => p.evaluate('location.hash'), POLL).not.toContain(job.id);
    expect(seen.at(-1)).toMatchObject({ route: 'retry', body: { input: { n: 150 } } });
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('completed');

    // Not JSON: said on the page, nothing sent.
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await p.getByText('Retry with edited input').click();
    const before = seen.length;
    await p.getByLabel('Input (JSON)').fill('{n: 150');
    await p.getByRole('button', { name: 'Retry with this input' }).click();
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('not JSON');
    expect(seen.length).toBe(before);
  });

  it("bulk-retries one task's failed jobs after a dry-run count", async (ctx) => {
    if (!standIn.bulk) ctx.skip();
    for (const n of [1, 2, 3]) await app.enqueue(fails, { n });
    await waitFor(async () => (await app.listJobs({ status: 'failed', task: 'contract.fails', limit: 100 })).jobs.length >= 3);
    const count = (await app.listJobs({ status: 'failed', task: 'contract.fails', limit: 100 })).jobs.length;
    const p = await page();
    await p.getByRole('link', { name: 'Bulk actions' }).click();
    await p.getByLabel('Action', { exact: true }).selectOption('retry');
    await p.getByLabel('Status').selectOption('failed');
    await p.getByLabel('Task').fill('contract.fails');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await expect.poll(() => p.getByTestId('bulk-count').textContent(), POLL).toBe(String(count));
    expect(seen.at(-1)).toMatchObject({ route: 'bulk', body: { action: 'retry', filter: { status: 'failed', task: 'contract.fails' }, dry_run: true } });
    const confirm = p.getByRole('button', { name: `Retry ${count} jobs` });
    // Changing the filter withdraws the count, and the button with it.
    await p.getByLabel('Task').fill('contract.other');
    expect(await confirm.count()).toBe(0);
    await p.getByLabel('Task').fill('contract.fails');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await confirm.click();
    expect(seen.at(-1)).toMatchObject({ route: 'bulk', body: { dry_run: false }, csrf: expect.any(String) });
    await expect.poll(() => p.getByRole('heading', { name: 'Operation op-1' }).count(), POLL).toBe(1);
    await expect.poll(() => p.locator('pre').textContent(), POLL).toContain('"status": "completed"');
  });

  it("draws the throughput charts from the stats API, under the page's CSP", async (ctx) => {
    if (!standIn.stats) ctx.skip();
    const p = await page();
    const charts = p.getByRole('img', { name: /^Jobs per minute|^Wait and run time/ });
    await expect.poll(() => charts.count(), POLL).toBe(2);
    // uPlot draws on canvases; its legend names the series.
    expect(await p.locator('.chart canvas').count()).toBeGreaterThanOrEqual(2);
    expect(await p.locator('.u-legend').first().textContent()).toContain('completed');
    expect(await charts.first().getAttribute('aria-label')).toContain('completed 145');
    expect(seen.find((s) => s.route === 'stats')?.body).toMatchObject({ granularity: 'minute', from: expect.any(String), to: expect.any(String) });
  });
});
