/**
 * The operating actions and the overview in a real browser, against the real
 * routes: retry with edited input, delete (jobs:delete), promote, the queues'
 * pause/resume/drain (admin), a bulk operation stopped, the schedules and the
 * throughput charts, and the search filters of the jobs page.
 */
import type { FastifyInstance } from 'fastify';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer, defineTask, schedule, type App } from '../../src/index.ts';
import { createKey } from '../../src/auth/key-store.ts';
import type { JobRecord } from '../../src/job-record.ts';
import { cleanup, openTestApp, startRecorder, startWorker, waitFor } from '../helpers.ts';
import { BROWSER_TEST_TIMEOUT, browserAvailable, launch, login, newPage, POLL } from './browser-helpers.ts';

const fails = defineTask({
  name: 'ops.fails',
  input: z.object({ n: z.number() }),
  retries: 0,
  handler: async ({ n }) => {
    if (n < 100) throw new Error(`n is ${n}, below 100`);
    return { n };
  },
});
const tick = defineTask({ name: 'ops.tick', input: z.object({}), handler: async () => ({ ticked: true }) });
const nightly = defineTask({ name: 'ops.nightly', input: z.object({}), handler: async () => null });
/** Logs through ctx.log, then fails: the job detail shows its log lines and, to an admin, its attempt's stack. */
const talks = defineTask({
  name: 'ops.talks',
  input: z.object({ ticket: z.string() }),
  retries: 0,
  handler: async ({ ticket }, ctx) => {
    ctx.log.info({ ticket }, 'looking up %s', ticket);
    ctx.log.warn('ticket %s has no owner', ticket);
    throw new Error(`ticket ${ticket} is closed`);
  },
});
/** On a queue no worker consumes: its jobs wait for the test. */
const held = defineTask({ name: 'ops.held', queue: 'held', input: z.object({ n: z.number() }), handler: async ({ n }) => n });

const run = browserAvailable() ? describe : describe.skip;

run('the operating actions and the overview in a browser', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  let app: App;
  let server: FastifyInstance;
  let base: string;
  let browser: Browser;
  const keys = {} as Record<'admin' | 'retrier' | 'deleter' | 'watcher', string>;
  const errors: string[] = [];

  beforeAll(async () => {
    app = await openTestApp(
      'sqlite',
      {
        tasks: [fails, tick, nightly, held, talks],
        schedules: [schedule(tick, { every: 2_000 }, {}, { id: 'ops-every' }), schedule(nightly, { cron: '0 3 * * *', tz: 'Europe/Paris' }, {}, { id: 'ops-nightly' })],
      },
      { auth: 'keys' },
    );
    keys.admin = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    keys.retrier = (await createKey(app.store, { name: 'retrier', scopes: ['jobs:read', 'jobs:retry', 'jobs:submit'], tenant: null })).token;
    keys.deleter = (await createKey(app.store, { name: 'deleter', scopes: ['jobs:read', 'jobs:delete'], tenant: null })).token;
    keys.watcher = (await createKey(app.store, { name: 'watcher', scopes: ['jobs:read', 'ops:read'], tenant: null })).token;
    await startRecorder(app);
    // Not the queue `celerity` of the bulk operations: the test of Stop needs one that stays queued.
    await startWorker(app, { queues: ['default'] });
    await app.startSchedules();
    server = await buildServer(app, { logger: false });
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

  async function page(key: string): Promise<Page> {
    const { page: p } = await newPage(browser, errors);
    await login(p, base, key);
    return p;
  }

  async function failed(n: number): Promise<string> {
    const job = await app.enqueue(fails, { n });
    await waitFor(async () => (await app.getJob(job.id))?.status === 'failed');
    return job.id;
  }

  it('shows the schedules with their next and last runs, and draws the throughput from GET /v1/stats', async () => {
    await waitFor(async () => ((await app.listJobs({ task: 'ops.tick', status: 'completed', limit: 5 })).jobs.length >= 2 ? true : undefined), 15_000);
    const p = await page(keys.admin);
    const every = p.locator('tr[data-schedule-id="ops-every"]');
    await expect.poll(() => every.textContent(), POLL).toContain('every 2.0 s');
    // The last run is the newest that started. Every 500 ms, one loaded CI run saw it
    // `started` at every refresh for 15 s: a newer run had always started before the
    // history had the last one's end.
    await expect.poll(() => every.locator('.badge').textContent(), POLL).toBe('completed');
    const nightlyRow = p.locator('tr[data-schedule-id="ops-nightly"]');
    expect(await nightlyRow.textContent()).toContain('cron 0 3 * * * (Europe/Paris)');
    expect(await nightlyRow.textContent()).toContain('not yet');
    // The last run links to its job.
    await every.getByRole('link').click();
    await p.getByRole('heading', { level: 1, name: /ops\.tick/ }).waitFor();
    expect(String(await p.evaluate('location.hash'))).toMatch(/^#\/jobs\/repeat/);

    await p.getByRole('link', { name: 'Overview' }).click();
    const charts = p.getByRole('img', { name: /^Jobs per minute|^Wait and run time/ });
    await expect.poll(() => charts.count(), POLL).toBe(2);
    // uPlot draws on canvases, under the page's CSP; its legend names the
    // series. The charts' frames (and their labels) come first: a loaded CI
    // run found no canvas yet right after them.
    await expect.poll(() => p.locator('.chart canvas').count(), POLL).toBeGreaterThanOrEqual(2);
    await expect.poll(() => p.locator('.u-legend').first().textContent(), POLL).toContain('completed');
    const label = (await charts.first().getAttribute('aria-label')) ?? '';
    expect(Number(/completed (\d+)/.exec(label)?.[1])).toBeGreaterThanOrEqual(2);
  });

  it('pauses, resumes and drains a queue from the overview, as an admin only', async () => {
    for (const n of [1, 2, 3]) await app.enqueue(held, { n });
    const p = await page(keys.admin);
    const row = p.getByRole('row', { name: /^held/ });
    await row.getByRole('button', { name: 'Pause held' }).click();
    await expect.poll(() => row.getByRole('cell').allTextContents(), POLL).toContain('paused');
    expect(await app.broker.queue('held').isPaused()).toBe(true);
    await row.getByRole('button', { name: 'Resume held' }).click();
    await expect.poll(() => app.broker.queue('held').isPaused(), POLL).toBe(false);
    await row.getByRole('button', { name: 'Drain held' }).click();
    await row.getByRole('button', { name: 'Confirm draining held' }).click();
    await expect.poll(() => row.getByRole('status').textContent(), POLL).toBe('3 waiting jobs removed');
    expect(await app.broker.queue('held').getWaitingCount()).toBe(0);
    // Celerity's own queue (maintenance, bulk runs) is offered neither Pause nor Drain.
    const internal = p.getByRole('row').filter({ has: p.getByRole('rowheader', { name: 'celerity', exact: true }) });
    await internal.waitFor();
    expect(await internal.getByRole('button').count()).toBe(0);
    expect(await internal.textContent()).toContain('internal');

    // ops:read sees the queues, and no button.
    const w = await page(keys.watcher);
    await w.getByRole('row', { name: /^held/ }).waitFor();
    expect(await w.getByRole('button', { name: /Pause|Resume|Drain/ }).count()).toBe(0);
  });

  it("shows each queue's tenants to an admin, and not to a key of ops:read", async () => {
    const jobs = await Promise.all([app.enqueue(tick, {}, { tenant: 'acme' }), app.enqueue(tick, {}, { tenant: 'acme' }), app.enqueue(tick, {}, { tenant: 'globex' })]);
    for (const job of jobs) await waitFor(async () => (await app.getJob(job.id))?.status === 'completed');
    const p = await page(keys.admin);
    const table = p.getByTestId('tenants-default');
    await expect.poll(() => table.getByRole('rowheader').allTextContents(), POLL).toEqual(expect.arrayContaining(['acme', 'globex']));
    expect(await table.locator('caption').textContent()).toContain('first in, first out');
    // A tenant links to its jobs in that queue.
    await table.getByRole('link', { name: 'globex' }).click();
    await p.getByRole('heading', { level: 1, name: 'Jobs' }).waitFor();
    expect(String(await p.evaluate('location.hash'))).toContain('tenant=globex');

    const w = await page(keys.watcher);
    await w.getByRole('row', { name: /^default/ }).waitFor();
    expect(await w.getByRole('heading', { name: 'Tenants' }).count()).toBe(0);
  });

  it('retries a failed job with edited input, and refuses an input that is not JSON without sending it', async () => {
    const id = await failed(1);
    const p = await page(keys.retrier);
    await p.goto(`${base}/dashboard/#/jobs/${id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    await p.getByText('Retry with edited input').click();
    await p.getByLabel('Input (JSON)').fill('{"n": 150}');
    await p.getByRole('button', { name: 'Retry with this input' }).click();
    await expect.poll(() => p.evaluate('location.hash'), POLL).not.toBe(`#/jobs/${id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('completed');
    await expect.poll(() => p.getByLabel('Result').textContent(), POLL).toContain('"n": 150');
    expect(await p.getByRole('link', { name: id }).count()).toBe(1);
    const retryId = String(await p.evaluate('location.hash')).replace('#/jobs/', '');
    // A key without jobs:delete is not offered Delete.
    expect(await p.getByRole('button', { name: 'Delete' }).count()).toBe(0);

    await p.goto(`${base}/dashboard/#/jobs/${id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    // The original links to its retry.
    await expect.poll(() => p.getByRole('list', { name: 'Retries of this job' }).getByRole('link', { name: retryId }).count(), POLL).toBe(1);
    await p.getByText('Retry with edited input').click();
    const requests: string[] = [];
    p.on('request', (r) => r.method() === 'POST' && requests.push(r.url()));
    await p.getByLabel('Input (JSON)').fill('{n: 150');
    await p.getByRole('button', { name: 'Retry with this input' }).click();
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('not JSON');
    expect(requests).toEqual([]);
    // An input the task's schema refuses: the API's 422 is shown.
    await p.getByLabel('Input (JSON)').fill('{"n": "many"}');
    await p.getByRole('button', { name: 'Retry with this input' }).click();
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('Invalid input for task "ops.fails": n:');
    expect(String(await p.evaluate('location.hash'))).toBe(`#/jobs/${id}`);
  });

  it('deletes a finished job with jobs:delete, after a confirmation', async () => {
    const id = await failed(2);
    const p = await page(keys.deleter);
    await p.goto(`${base}/dashboard/#/jobs/${id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('failed');
    expect(await p.getByRole('button', { name: 'Retry', exact: true }).count()).toBe(0);
    await p.getByRole('button', { name: 'Delete' }).click();
    await p.getByRole('button', { name: 'Confirm delete' }).click();
    await p.getByRole('heading', { level: 1, name: 'Jobs' }).waitFor();
    expect(await app.getJob(id)).toBeNull();
  });

  it('runs a delayed job now, and offers it only for a delayed job', async () => {
    const waiting = await app.enqueue(held, { n: 9 });
    const job = await app.enqueue(fails, { n: 500 }, { delay: 3_600_000 });
    const p = await page(keys.retrier);
    await p.goto(`${base}/dashboard/#/jobs/${waiting.id}`);
    await expect.poll(() => p.locator('h1 .badge').textContent(), POLL).toBe('queued');
    await p.getByRole('heading', { name: 'Attempts' }).waitFor();
    expect(await p.getByRole('button', { name: 'Run now' }).count()).toBe(0);
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await expect.poll(() => p.locator('.facts').textContent(), POLL).toContain('Due');
    await p.getByRole('button', { name: 'Run now' }).click();
    await expect.poll(() => p.locator('h1 .badge').textContent(), { timeout: 15_000 }).toBe('completed');
  });

  it("shows a job's log lines, and each attempt's stack to an admin", async () => {
    const job = await app.enqueue(talks, { ticket: 'T-7' });
    await waitFor(async () => (await app.getJob(job.id))?.status === 'failed');
    const p = await page(keys.admin);
    await p.goto(`${base}/dashboard/#/jobs/${job.id}`);
    const logs = p.getByTestId('job-logs');
    await expect.poll(() => logs.locator('tbody tr').allTextContents(), POLL).toHaveLength(2);
    const [first, second] = await logs.locator('tbody tr').allTextContents();
    expect(first).toContain('looking up T-7');
    expect(first).toContain('{"ticket":"T-7"}');
    expect(second).toContain('warn');
    expect(second).toContain('ticket T-7 has no owner');
    await p.getByText('Stack', { exact: true }).click();
    expect(await p.locator('td pre.stack').textContent()).toMatch(/^Error: ticket T-7 is closed\n\s+at /);

    // A reader sees the lines, not the stack.
    const r = await page(keys.retrier);
    await r.goto(`${base}/dashboard/#/jobs/${job.id}`);
    await expect.poll(() => r.getByTestId('job-logs').locator('tbody tr').count(), POLL).toBe(2);
    expect(await r.getByText('Stack', { exact: true }).count()).toBe(0);
  });

  it('stops a bulk operation that has not started', async () => {
    await failed(3);
    const p = await page(keys.admin);
    await p.getByRole('link', { name: 'Bulk actions' }).click();
    await p.getByLabel('Task').fill('ops.fails');
    // The filters of the jobs page: a condition on the input narrows the count to the one job.
    await p.getByLabel('Input or result fields').fill('input.n:3');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await expect.poll(() => p.getByTestId('bulk-count').textContent(), POLL).toBe('1');
    await p.getByLabel('Input or result fields').fill('');
    await p.getByRole('button', { name: 'Count matching jobs' }).click();
    await expect.poll(async () => Number(await p.getByTestId('bulk-count').textContent()), POLL).toBeGreaterThan(0);
    await p.getByRole('button', { name: /^Retry \d+ jobs?$/ }).click();
    // No worker takes the queue `celerity` here: the operation stays queued until stopped.
    const card = p.getByRole('heading', { name: /^Operation retry / }).locator('..');
    await expect.poll(() => card.locator('.badge').first().textContent(), POLL).toBe('queued');
    await card.getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => card.locator('.badge').first().textContent(), POLL).toBe('stopped');
    expect(await card.getByRole('button', { name: 'Stop' }).count()).toBe(0);
  });

  it('searches the jobs by id prefix, error text and input field, with the filters kept in the URL', async () => {
    const low = await failed(7);
    const high = await app.enqueue(fails, { n: 777 });
    await waitFor(async () => (await app.getJob(high.id))?.status === 'completed');
    const p = await page(keys.admin);
    await p.getByRole('link', { name: 'Jobs' }).click();
    const rows = p.locator('table.jobs tbody tr');
    const ids = () => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-job-id')));

    await p.getByLabel('Input or result fields').fill('input.n:777');
    await p.getByRole('button', { name: 'Apply filters' }).click();
    await expect.poll(ids, POLL).toEqual([high.id]);
    expect(decodeURIComponent(String(await p.evaluate('location.hash')))).toContain('where=input.n:777');

    await p.goto(`${base}/dashboard/#/jobs?error=${encodeURIComponent('n is 7,')}`);
    await expect.poll(ids, POLL).toEqual([low]);
    expect(await p.getByLabel('Error text').inputValue()).toBe('n is 7,');

    await p.goto(`${base}/dashboard/#/jobs?id_prefix=${encodeURIComponent(high.id.slice(0, 12))}`);
    await expect.poll(ids, POLL).toEqual([high.id]);
    // A malformed condition: the API's 400 names it.
    await p.getByLabel('Input or result fields').fill('input.n=7');
    await p.getByRole('button', { name: 'Apply filters' }).click();
    await expect.poll(() => p.getByRole('alert').textContent(), POLL).toContain('where');
  });
});

run('a search cut by its time budget, in a browser', { timeout: BROWSER_TEST_TIMEOUT }, () => {
  let server: FastifyInstance;
  let base: string;
  let browser: Browser;
  let admin: string;
  const errors: string[] = [];

  beforeAll(async () => {
    // A 1 ms budget over 9,000 rows: a search that checks rows one by one stops after its first chunk (as in search.test.ts).
    const app = await openTestApp('sqlite', [fails], { auth: 'keys', searchTimeout: 1 });
    const t0 = Date.now() - 86_400_000;
    const records = Array.from(
      { length: 9000 },
      (_, i): JobRecord => ({
        id: `p${String(i).padStart(5, '0')}`,
        task: 'ops.fails',
        queue: 'default',
        tenant: null,
        keyId: null,
        status: 'completed',
        attempts: 1,
        maxAttempts: 1,
        input: { n: i },
        result: { n: i },
        error: null,
        progress: null,
        createdAt: t0 + i * 1000,
        startedAt: t0 + i * 1000 + 10,
        finishedAt: t0 + i * 1000 + 20,
      }),
    );
    await app.store.write(records.map((record) => ({ record, eventSeq: '0000000000001-0000000000' })));
    admin = (await createKey(app.store, { name: 'ops', scopes: ['admin'], tenant: null })).token;
    server = await buildServer(app, { logger: false });
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

  it('says that the answer is partial, and continues the scan from its cursor', async () => {
    const { page: p } = await newPage(browser, errors);
    await login(p, base, admin);
    const searches: string[] = [];
    p.on('request', (r) => {
      if (new URL(r.url()).pathname === '/v1/jobs') searches.push(r.url());
    });
    // Task and queue that never meet: SQLite seeks by one and checks the other row by row, under the deadline.
    await p.goto(`${base}/dashboard/#/jobs?task=ops.fails&queue=nowhere`);
    await expect.poll(() => p.getByTestId('partial').count(), POLL).toBe(1);
    expect(await p.getByText('No jobs match.').count()).toBe(0);
    const before = searches.length;
    await p.getByRole('button', { name: 'Continue the search' }).click();
    await expect.poll(() => searches.slice(before).some((u) => new URL(u).searchParams.has('cursor')), POLL).toBe(true);
    expect(new URL(searches.at(-1)!).searchParams.get('queue')).toBe('nowhere');
  });
});
