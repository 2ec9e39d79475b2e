import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { type SqlBool, sql } from 'kysely';
import { z } from 'zod';
import { createKey } from '../src/auth/key-store.ts';
import { buildServer, defineTask } from '../src/index.ts';
import type { JobRecord, JobStatus } from '../src/job-record.ts';
import type { RecordedState } from '../src/store/job-store.ts';
import { parseInstant, parseJsonCondition } from '../src/store/job-search.ts';
import { jsonIndexExpression, searchIndexName } from '../src/store/search-indexes.ts';
import { onCleanup, openTestApp, stores, useCleanup, type StoreKind } from './helpers.ts';

useCleanup();

const task = defineTask({ name: 'mail.send', input: z.object({}).passthrough(), handler: async () => null });

const T0 = 1_700_000_000_000;
const TASKS = ['mail.send', 'reports.daily', 'csv.import'] as const;
const TENANTS = ['acme', 'globex', null] as const;
const KEY = 'aaaaaaaaaaaaaaaa';

/** A varied history: every filter matches some rows and misses others; pairs of rows share a creation time. */
function history(n: number): JobRecord[] {
  return Array.from({ length: n }, (_, i): JobRecord => {
    const createdAt = T0 + Math.floor(i / 2) * 1000;
    const queued = i % 11 === 0;
    const failed = !queued && i % 5 === 0;
    const status: JobStatus = queued ? 'queued' : failed ? 'failed' : 'completed';
    return {
      id: `j${String(i).padStart(5, '0')}`,
      task: TASKS[i % 3]!,
      queue: i % 2 ? 'imports' : 'default',
      tenant: TENANTS[Math.floor(i / 3) % 3]!,
      keyId: i % 4 === 0 ? KEY : null,
      status,
      attempts: queued ? 0 : 1,
      maxAttempts: 1,
      input: { ticket_id: `T-${i}`, n: i, nested: { flag: i % 2 === 0, maybe: i % 7 === 0 ? null : 'x' }, quote: i === 3 ? 'say "hi" é\n' : 'plain' },
      result: status === 'completed' ? { pages: i % 4, label: 'ok' } : null,
      error: failed ? { type: i % 10 === 0 ? 'ValueError' : 'TimeoutError', message: `Ticket T-${i} could not be parsed: 100% BAD_input`, stack: null } : null,
      progress: null,
      createdAt,
      startedAt: queued ? null : createdAt + 10,
      finishedAt: queued ? null : createdAt + 500,
    };
  });
}

function states(records: JobRecord[]): RecordedState[] {
  return records.map((record) => ({ record, eventSeq: '0000000000001-0000000000' }));
}

/** Newest first, as the API lists. */
function ordered(records: JobRecord[]): string[] {
  return [...records].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1)).map((r) => r.id);
}

interface Page {
  jobs: { job_id: string }[];
  next_cursor: string | null;
  partial: boolean;
}

async function setup(kind: StoreKind, n = 60, overrides: Record<string, string | number> = {}) {
  const app = await openTestApp(kind, [task], { auth: 'keys', ...overrides });
  const records = history(n);
  await app.store.write(states(records));
  const api = await buildServer(app, { logger: false });
  onCleanup(() => api.close());
  const admin = (await createKey(app.store, { name: 'admin', scopes: ['admin'] })).token;
  const acme = (await createKey(app.store, { name: 'acme', tenant: 'acme', scopes: ['jobs:read'] })).token;
  const acmeReports = (await createKey(app.store, { name: 'acme-reports', tenant: 'acme', scopes: ['jobs:read'], tasks: ['reports.*'] })).token;
  return { app, api, records, admin, acme, acmeReports };
}

function get(api: FastifyInstance, token: string, query: string) {
  return api.inject({ method: 'GET', url: `/v1/jobs?${query}`, headers: { authorization: `Bearer ${token}` } });
}

/** Every page of a search, checking that pages neither repeat nor skip. */
async function searchAll(api: FastifyInstance, token: string, query: string, limit = 7): Promise<{ ids: string[]; pages: Page[] }> {
  const ids: string[] = [];
  const pages: Page[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 1000; i++) {
    const res = await get(api, token, `${query}&limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json() as Page;
    pages.push(page);
    ids.push(...page.jobs.map((j) => j.job_id));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  expect(new Set(ids).size).toBe(ids.length);
  return { ids, pages };
}

const q = (params: Record<string, string | string[]>) =>
  Object.entries(params)
    .flatMap(([name, value]) => (Array.isArray(value) ? value : [value]).map((v) => `${name}=${encodeURIComponent(v)}`))
    .join('&');

describe.each(stores)('search over the history (%s)', (kind) => {
  it('filters on each field, and on several at once, paging newest first without gaps or repeats', async () => {
    const { api, records, admin } = await setup(kind);
    const cases: [Record<string, string | string[]>, (r: JobRecord) => boolean][] = [
      [{}, () => true],
      [{ status: 'failed' }, (r) => r.status === 'failed'],
      [{ task: 'reports.daily' }, (r) => r.task === 'reports.daily'],
      [{ queue: 'imports' }, (r) => r.queue === 'imports'],
      [{ tenant: 'globex' }, (r) => r.tenant === 'globex'],
      [{ key_id: KEY }, (r) => r.keyId === KEY],
      [{ id_prefix: 'j0001' }, (r) => r.id.startsWith('j0001')],
      [{ id_prefix: 'j00' }, () => true],
      [{ id_prefix: 'J00' }, () => false],
      [{ created_after: String(T0 + 10_000) }, (r) => r.createdAt >= T0 + 10_000],
      [{ created_before: new Date(T0 + 10_000).toISOString() }, (r) => r.createdAt < T0 + 10_000],
      [{ created_after: String(T0 + 5_000), created_before: String(T0 + 20_000) }, (r) => r.createdAt >= T0 + 5_000 && r.createdAt < T0 + 20_000],
      [{ finished_after: String(T0 + 20_500) }, (r) => r.finishedAt !== null && r.finishedAt >= T0 + 20_500],
      [{ finished_before: String(T0 + 3_500) }, (r) => r.finishedAt !== null && r.finishedAt < T0 + 3_500],
      [{ error: 'valueerror' }, (r) => r.error?.type === 'ValueError'],
      [{ error: 'could NOT be' }, (r) => r.error !== null],
      [{ error: 'T-15 ' }, (r) => r.id === 'j00015'],
      [{ error: '100% BAD_' }, (r) => r.error !== null],
      [{ error: '100_ BAD%' }, () => false],
      [{ where: 'input.ticket_id:"T-1"' }, (r) => r.id === 'j00001'],
      [{ where: 'input.n:12' }, (r) => r.id === 'j00012'],
      [{ where: 'input.n:12.0' }, (r) => r.id === 'j00012'],
      [{ where: 'input.n:"12"' }, () => false],
      [{ where: 'input.nested.flag:true' }, (r) => Number(r.id.slice(1)) % 2 === 0],
      [{ where: 'input.nested.maybe:null' }, (r) => Number(r.id.slice(1)) % 7 === 0],
      [{ where: 'input.nested.absent:null' }, () => false],
      [{ where: 'input.quote:"say \\"hi\\" é\\n"' }, (r) => r.id === 'j00003'],
      [{ where: 'result.pages:2' }, (r) => (r.result as { pages?: number } | null)?.pages === 2],
      [{ where: 'result.label:"ok"' }, (r) => r.status === 'completed'],
      [{ where: ['result.label:"ok"', 'input.nested.flag:false'] }, (r) => r.status === 'completed' && Number(r.id.slice(1)) % 2 === 1],
      [
        { status: 'completed', task: 'csv.import', queue: 'default', tenant: 'acme', where: 'result.pages:0' },
        (r) => r.status === 'completed' && r.task === 'csv.import' && r.queue === 'default' && r.tenant === 'acme' && (r.result as { pages: number }).pages === 0,
      ],
      [{ status: 'failed', error: 'TimeoutError', created_after: String(T0 + 4_000) }, (r) => r.error?.type === 'TimeoutError' && r.createdAt >= T0 + 4_000],
    ];
    for (const [params, predicate] of cases) {
      const expected = ordered(records.filter(predicate));
      const { ids, pages } = await searchAll(api, admin, q(params));
      expect(ids, JSON.stringify(params)).toEqual(expected);
      expect(pages.every((p) => p.partial === false)).toBe(true);
    }
    // Each case above must tell something: the filters are not vacuous.
    expect(ordered(records.filter((r) => r.status === 'failed')).length).toBeGreaterThan(3);
  });

  it("keeps a tenant key to its tenant's jobs, and a task-limited key to its tasks, whatever the filters", async () => {
    const { api, records, acme, acmeReports } = await setup(kind);
    const filters: [Record<string, string | string[]>, (r: JobRecord) => boolean][] = [
      [{}, () => true],
      [{ status: 'failed' }, (r) => r.status === 'failed'],
      [{ task: 'reports.daily' }, (r) => r.task === 'reports.daily'],
      [{ queue: 'imports' }, (r) => r.queue === 'imports'],
      [{ key_id: KEY }, (r) => r.keyId === KEY],
      [{ id_prefix: 'j000' }, (r) => r.id.startsWith('j000')],
      [{ created_after: String(T0) }, () => true],
      [{ finished_after: String(T0) }, (r) => r.finishedAt !== null],
      [{ error: 'ticket' }, (r) => r.error !== null],
      [{ where: 'result.label:"ok"' }, (r) => r.status === 'completed'],
      // Another tenant's job, named exactly: never matches.
      [{ where: 'input.ticket_id:"T-3"' }, (r) => r.id === 'j00003'],
    ];
    for (const [params, predicate] of filters) {
      const mine = ordered(records.filter((r) => r.tenant === 'acme' && predicate(r)));
      expect((await searchAll(api, acme, q(params))).ids, JSON.stringify(params)).toEqual(mine);
      const reports = ordered(records.filter((r) => r.tenant === 'acme' && r.task === 'reports.daily' && predicate(r)));
      expect((await searchAll(api, acmeReports, q(params))).ids, JSON.stringify(params)).toEqual(reports);
    }
    expect(records.find((r) => r.id === 'j00003')?.tenant).toBe('globex');
    const other = await get(api, acme, 'tenant=globex&status=failed');
    expect(other.statusCode).toBe(403);
    expect(other.json().error.details).toEqual({ field: 'tenant' });
  });

  it('answers 400 naming the field for bad filters, and binds every value (no injection)', async () => {
    const { api, app, records, admin } = await setup(kind);
    const bad: [string, string][] = [
      ['where=input.a-b:1', 'querystring.where'],
      ['where=foo.x:1', 'querystring.where'],
      ['where=input:1', 'querystring.where'],
      ['where=input.x', 'querystring.where'],
      ['where=input.1x:1', 'querystring.where'],
      ['where=input..x:1', 'querystring.where'],
      [`where=${encodeURIComponent('input.x:{"a":1}')}`, 'querystring.where'],
      [`where=${encodeURIComponent('input.x:[1]')}`, 'querystring.where'],
      ['where=input.x:abc', 'querystring.where'],
      [`where=${encodeURIComponent("input.x');drop table jobs;--:1")}`, 'querystring.where'],
      [`where=${encodeURIComponent('input.ok:1')}&where=${encodeURIComponent('result.x y:1')}`, 'querystring.where.1'],
      [Array.from({ length: 9 }, (_, i) => `where=input.k${i}:1`).join('&'), 'querystring.where'],
      ['created_after=yesterday', 'querystring.created_after'],
      ['created_after=2026-02-31', 'querystring.created_after'],
      ['created_before=2026-11-30T12:00:00', 'querystring.created_before'],
      ['finished_after=2026-11-30T25:00:00Z', 'querystring.finished_after'],
      ['finished_before=-5', 'querystring.finished_before'],
      ['created_after=1e12', 'querystring.created_after'],
      ['id_prefix=j%25', 'querystring.id_prefix'],
      ['id_prefix=', 'querystring.id_prefix'],
      ['error=', 'querystring.error'],
      ['error=a%00b', 'querystring.error'],
      ['queue=a%20b', 'querystring.queue'],
      ['search=x', 'querystring.search'],
    ];
    for (const [query, field] of bad) {
      const res = await get(api, admin, query);
      expect(res.statusCode, query).toBe(400);
      const body = res.json();
      expect(body.error.code, query).toBe('invalid_request');
      expect(
        body.error.details.issues.map((i: { path: string }) => i.path),
        query,
      ).toContain(field);
    }
    // Several bad fields: each is named.
    const both = await get(api, admin, 'created_after=x&where=input.x');
    expect(both.json().error.details.issues.map((i: { path: string }) => i.path)).toEqual(['querystring.created_after', 'querystring.where']);
    // Values that look like SQL are values.
    for (const query of [`where=${encodeURIComponent(`input.ticket_id:"'; drop table jobs; --"`)}`, `error=${encodeURIComponent("%' or 1=1 --")}`, `error=${encodeURIComponent('\\')}`]) {
      const res = await get(api, admin, query);
      expect(res.statusCode, query).toBe(200);
      expect(res.json().jobs).toEqual([]);
    }
    expect((await app.listJobs({ limit: 500 })).jobs).toHaveLength(records.length);
    // The library checks a JSON path it did not parse itself.
    await expect(app.listJobs({ limit: 1, json: [{ column: 'input', path: ["x') or 1=1 --"], value: 1 }] })).rejects.toMatchObject({ code: 'invalid_options' });
  });

  it('bounds a scan by the search timeout: a partial page and a cursor that continues it, or 503 query_timeout', async () => {
    const { api, records, admin } = await setup(kind, 9000, { searchTimeout: 1 });
    if (kind === 'sqlite') {
      // Two equalities that never meet: SQLite seeks by one and checks the other row by row, under the deadline.
      const never = await get(api, admin, 'task=mail.send&queue=nowhere&limit=10');
      expect(never.json()).toMatchObject({ jobs: [], partial: true, next_cursor: expect.any(String) });
    }
    // A JSON condition narrows no index: the search scans every row, in chunks.
    const search = `where=${encodeURIComponent('input.nested.maybe:null')}&limit=500`;
    const expected = ordered(records.filter((r) => (r.input as { nested: { maybe: unknown } }).nested.maybe === null));
    const first = await get(api, admin, search);
    if (first.statusCode === 503) {
      // PostgreSQL cancelled the first statement (statement_timeout): nothing found, nothing to continue.
      expect(kind).toBe('postgres');
      expect(first.json().error.code).toBe('query_timeout');
      return;
    }
    expect(first.statusCode).toBe(200);
    // 9,000 rows and a 1 ms budget: the first chunk ends the search.
    expect(first.json().partial).toBe(true);
    expect(first.json().next_cursor).toEqual(expect.any(String));
    expect(first.json().jobs.length).toBeLessThan(expected.length);
    const ids: string[] = [];
    let cursor: string | null = null;
    let partials = 0;
    for (let i = 0; i < 200; i++) {
      const res = await get(api, admin, `${search}${cursor ? `&cursor=${cursor}` : ''}`);
      if (res.statusCode === 503) continue;
      const page = res.json() as Page;
      if (page.partial) partials++;
      ids.push(...page.jobs.map((j) => j.job_id));
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    expect(cursor).toBeNull();
    expect(partials).toBeGreaterThan(0);
    expect(ids).toEqual(expected);
  });

  it('pages a broad id prefix (most ids) and a narrow one alike', async () => {
    const { api, records, admin } = await setup(kind, 9000);
    const cases: [Record<string, string>, (r: JobRecord) => boolean][] = [
      // 9,000 ids: more than SQLite seeks by prefix (it scans instead).
      [{ id_prefix: 'j0', status: 'failed' }, (r) => r.status === 'failed'],
      [{ id_prefix: 'j0', where: 'input.nested.maybe:null' }, (r) => Number(r.id.slice(1)) % 7 === 0],
      [{ id_prefix: 'j08', task: 'csv.import' }, (r) => r.id.startsWith('j08') && r.task === 'csv.import'],
      [{ id_prefix: 'j089' }, (r) => r.id.startsWith('j089')],
    ];
    for (const [params, predicate] of cases) {
      const { ids, pages } = await searchAll(api, admin, q(params), 100);
      expect(ids, JSON.stringify(params)).toEqual(ordered(records.filter(predicate)));
      expect(pages.every((p) => p.partial === false)).toBe(true);
    }
  });

  it('serves where conditions on CELERITY_SEARCH_PATHS from their index, with the answers of a scan', async () => {
    const paths = 'input.ticket_id,input.n,input.nested.flag,input.nested.maybe';
    const { app, api, records, admin, acme } = await setup(kind, 90, { searchPaths: paths });
    expect([...app.store.searchPaths].sort()).toEqual(paths.split(',').sort());
    const cases: [string, Record<string, string | string[]>, (r: JobRecord) => boolean][] = [
      ['a string', { where: 'input.ticket_id:"T-7"' }, (r) => r.id === 'j00007'],
      ['a number', { where: 'input.n:12' }, (r) => r.id === 'j00012'],
      ['a number written as a string matches nothing', { where: 'input.n:"12"' }, () => false],
      ['a boolean', { where: 'input.nested.flag:true' }, (r) => (r.input as { n: number }).n % 2 === 0],
      ['null, not a missing key', { where: 'input.nested.maybe:null' }, (r) => (r.input as { n: number }).n % 7 === 0],
      [
        'with an unindexed condition and a status',
        { where: ['input.nested.flag:false', 'input.quote:"plain"'], status: 'failed' },
        (r) => r.status === 'failed' && (r.input as { n: number }).n % 2 === 1,
      ],
      [
        'with a creation range',
        { where: 'input.nested.flag:true', created_after: String(T0 + 10_000), created_before: String(T0 + 30_000) },
        (r) => (r.input as { n: number }).n % 2 === 0 && r.createdAt >= T0 + 10_000 && r.createdAt < T0 + 30_000,
      ],
    ];
    for (const [what, params, matches] of cases) {
      const { ids } = await searchAll(api, admin, q(params), 4);
      expect(ids, what).toEqual(ordered(records.filter(matches)));
    }
    // A tenant's key: its own jobs only, though the index holds every tenant's.
    const { ids } = await searchAll(api, acme, q({ where: 'input.nested.flag:true' }), 4);
    expect(ids).toEqual(ordered(records.filter((r) => r.tenant === 'acme' && (r.input as { n: number }).n % 2 === 0)));
    expect(ids.length).toBeGreaterThan(0);

    // The planner takes the index for the expression the search writes.
    const expression = jsonIndexExpression(kind === 'postgres' ? 'postgres' : 'sqlite', { column: 'input', path: ['ticket_id'] });
    const index = searchIndexName({ column: 'input', path: ['ticket_id'] });
    const probe = app.store.db
      .selectFrom('jobs')
      .selectAll()
      .where(sql<SqlBool>`${expression} = ${kind === 'postgres' ? '"T-7"' : 'T-7'}`)
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .limit(5)
      .compile();
    const plan = await app.store.db.transaction().execute(async (tx) => {
      if (kind === 'postgres') await sql`set local enable_seqscan = off`.execute(tx);
      const explain = kind === 'postgres' ? 'explain ' : 'explain query plan ';
      const { rows } = await tx.executeQuery({ ...probe, sql: explain + probe.sql });
      return JSON.stringify(rows);
    });
    expect(plan).toContain(index);

    // Opening the store again finds the indexes ready and builds nothing.
    expect((await app.store.ensureSearchIndexes([{ column: 'input', path: ['ticket_id'] }]))[0]).toMatchObject({ state: 'ready', index });
  });

  it('refuses a bad CELERITY_SEARCH_PATHS in one line, naming the setting', async () => {
    const { loadConfig } = await import('../src/config.ts');
    for (const bad of ['ticket_id', 'input.', 'input.a-b', 'output.x', Array.from({ length: 17 }, (_, i) => `input.k${i}`).join(',')]) {
      expect(() => loadConfig({ env: {}, flags: { searchPaths: bad } }), bad).toThrow(/CELERITY_SEARCH_PATHS/);
    }
    expect(loadConfig({ env: {}, flags: { searchPaths: ' input.a , result.b.c ,input.a' } }).searchPaths).toEqual([
      { column: 'input', path: ['a'] },
      { column: 'result', path: ['b', 'c'] },
    ]);
  });

  it('answers every search within its timeout on indexed filters', async () => {
    const { api, records, admin } = await setup(kind, 60, { searchTimeout: 1000 });
    const res = await get(api, admin, 'status=failed&limit=500');
    expect(res.json()).toMatchObject({ partial: false, next_cursor: null });
    expect(res.json().jobs).toHaveLength(records.filter((r) => r.status === 'failed').length);
  });
});

describe('search syntax', () => {
  it('parses where conditions and instants', () => {
    expect(parseJsonCondition('input.ticket_id:"T-1"', 'w')).toEqual({ column: 'input', path: ['ticket_id'], value: 'T-1' });
    expect(parseJsonCondition('result.a.b_2:-1.5e3', 'w')).toEqual({ column: 'result', path: ['a', 'b_2'], value: -1500 });
    expect(parseJsonCondition('input.x:"a:b"', 'w')).toEqual({ column: 'input', path: ['x'], value: 'a:b' });
    expect(parseJsonCondition('input.x:false', 'w').value).toBe(false);
    expect(() => parseJsonCondition('input.x:', 'w')).toThrow(/w has a value that is not JSON/);
    expect(parseInstant('0', 'f')).toBe(0);
    expect(parseInstant('2026-11-30', 'f')).toBe(Date.UTC(2026, 10, 30));
    expect(parseInstant('2026-11-30T12:00:00.250+01:00', 'f')).toBe(Date.UTC(2026, 10, 30, 11, 0, 0, 250));
    expect(parseInstant('2024-02-29T00:00Z', 'f')).toBe(Date.UTC(2024, 1, 29));
    expect(() => parseInstant('2025-02-29', 'f')).toThrow(/f must be epoch milliseconds/);
  });
});
