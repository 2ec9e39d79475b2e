/**
 * PostgreSQL row-level security on `jobs`, seen by a role it applies to: a
 * LOGIN role that is neither a superuser nor BYPASSRLS (the tests' own role
 * is a superuser, which PostgreSQL exempts). Each test makes such a role,
 * lets it own a schema of its own, runs Celerity's store as that role, and
 * drops role and schema at the end.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { jobView } from '../src/api/job-view.ts';
import { ALL_TENANTS, type TenantScope } from '../src/auth/principal.ts';
import { readJob } from '../src/client/status.ts';
import type { JobRecord } from '../src/job-record.ts';
import { purgeHistory } from '../src/schedules/maintenance.ts';
import { readKeptLogs } from '../src/store/job-logs.ts';
import { JobStore, type RecordedState } from '../src/store/job-store.ts';
import { withTenantScope } from '../src/store/tenant-scope.ts';
import { defineTask } from '../src/task.ts';
import { chain, step } from '../src/workflows/workflow.ts';
import { dropSchema, onCleanup, openTestApp, randomToken, startRecorder, startWorker, TEST_DATABASE_URL, useCleanup, waitFor } from './helpers.ts';

useCleanup();

/** Runs `fn` on a client of `url`, then ends it. */
async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/**
 * A new non-superuser LOGIN role that may create schemas in the test
 * database; returns its URL (trust authentication: no password). Dropped
 * by cleanup, after everything registered later (its stores, its schemas).
 */
async function restrictedRole(): Promise<{ url: string }> {
  const role = `celerity_rls_${randomToken()}`;
  const admin = new URL(TEST_DATABASE_URL);
  const database = decodeURIComponent(admin.pathname.slice(1));
  await withClient(TEST_DATABASE_URL, async (c) => {
    await c.query(`create role ${pg.escapeIdentifier(role)} login nosuperuser nobypassrls`);
    await c.query(`grant create on database ${pg.escapeIdentifier(database)} to ${pg.escapeIdentifier(role)}`);
  });
  onCleanup(() =>
    withClient(TEST_DATABASE_URL, async (c) => {
      // DROP OWNED also revokes what the role was granted (the database's CREATE).
      await c.query(`drop owned by ${pg.escapeIdentifier(role)} cascade`);
      await c.query(`drop role ${pg.escapeIdentifier(role)}`);
    }),
  );
  const url = new URL(TEST_DATABASE_URL);
  url.username = role;
  url.password = '';
  return { url: url.toString() };
}

function state(id: string, over: Partial<JobRecord> = {}, createdAt = 1_700_000_000_000): RecordedState {
  const record: JobRecord = {
    id,
    task: 'math.add',
    queue: 'default',
    tenant: null,
    keyId: null,
    status: 'completed',
    attempts: 1,
    maxAttempts: 1,
    input: { id },
    result: 1,
    error: null,
    progress: null,
    createdAt,
    startedAt: createdAt + 1,
    finishedAt: createdAt + 2,
    ...over,
  };
  return { record, eventSeq: '0000000000001-0000000000' };
}

const ids = (jobs: { id: string }[]) => jobs.map((j) => j.id).sort();
const A: TenantScope = { all: false, tenant: 'a' };
const B: TenantScope = { all: false, tenant: 'b' };
const NONE: TenantScope = { all: false, tenant: null };
// A tenant that must survive the setting's quoting (a quote, a backslash).
const ODD = `o'brien\\x`;

describe('row-level security (postgres, non-superuser role)', () => {
  it('hides every row from a query without a scope, and shows each scope only its rows', async () => {
    const { url } = await restrictedRole();
    const schema = `t_${randomToken()}`;
    onCleanup(() => dropSchema(schema));
    const store = new JobStore({ databaseUrl: url, sqlitePath: ':memory:', schema });
    onCleanup(() => store.close());
    await store.migrate();
    expect(await store.rowSecurityEnforced()).toBe(true);

    await store.write([
      state('a1', { tenant: 'a', keyId: 'key_a', task: 'reports.daily' }, 1_000),
      state('a2', { tenant: 'a', keyId: 'key_a2', task: 'Reports.daily' }, 2_000),
      state('b1', { tenant: 'b', keyId: 'key_b', task: 'reports.daily' }, 3_000),
      state('n1', { tenant: null, keyId: null, task: 'reports_x' }, 4_000),
      state('o1', { tenant: ODD, keyId: null }, 5_000),
      state('q1', { tenant: 'a', status: 'queued', attempts: 0, result: null, startedAt: null, finishedAt: null }, 6_000),
    ]);

    // No scope set: nothing, on a plain connection of the role and through the store's own pool.
    const raw = await withClient(url, (c) => c.query<{ n: string }>(`select count(*)::text as n from ${pg.escapeIdentifier(schema)}.jobs`));
    expect(raw.rows[0]!.n).toBe('0');
    expect(await store.db.selectFrom('jobs').select('id').execute()).toEqual([]);
    // The superuser, exempt, sees them all: the rows are there.
    const all = await withClient(TEST_DATABASE_URL, (c) => c.query<{ n: string }>(`select count(*)::text as n from ${pg.escapeIdentifier(schema)}.jobs`));
    expect(all.rows[0]!.n).toBe('6');

    // The policy alone (no condition of the query) scopes what a transaction sees.
    const seen = (scope: TenantScope) => withTenantScope(store, scope, (db) => db.selectFrom('jobs').select('id').execute()).then(ids);
    expect(await seen(A)).toEqual(['a1', 'a2', 'q1']);
    expect(await seen(B)).toEqual(['b1']);
    expect(await seen(NONE)).toEqual(['n1']);
    expect(await seen({ all: false, tenant: ODD })).toEqual(['o1']);
    expect(await seen({ all: false, tenant: 'nobody' })).toEqual([]);
    expect(await seen(ALL_TENANTS)).toEqual(['a1', 'a2', 'b1', 'n1', 'o1', 'q1']);
    // Nor may a transaction write outside its scope (WITH CHECK).
    const foreign = { ...toInsert('x1'), tenant: 'b' };
    await expect(withTenantScope(store, A, (db) => db.insertInto('jobs').values(foreign).execute())).rejects.toThrow(/row-level security/);
    await expect(
      withClient(url, (c) => c.query(`insert into ${pg.escapeIdentifier(schema)}.jobs (id, task, queue, status, created_at, updated_at, event_seq) values ('x2', 't', 'q', 'queued', 1, 1, '0')`)),
    ).rejects.toThrow(/row-level security/);

    // The store's reads.
    expect((await store.get('a1', A))?.keyId).toBe('key_a');
    expect(await store.get('b1', A)).toBeNull();
    expect(await store.get('n1', A)).toBeNull();
    expect((await store.get('n1', NONE))?.id).toBe('n1');
    expect(await store.get('a1', NONE)).toBeNull();
    expect((await store.get('b1'))?.tenant).toBe('b');
    expect(ids((await store.list({ limit: 50, scope: A })).jobs)).toEqual(['a1', 'a2', 'q1']);
    expect(ids((await store.list({ limit: 50, scope: NONE })).jobs)).toEqual(['n1']);
    expect(ids((await store.list({ limit: 50 })).jobs)).toHaveLength(6);
    expect(ids((await store.list({ limit: 50, scope: ALL_TENANTS, taskPatterns: ['reports.*'] })).jobs)).toEqual(['a1', 'b1']);
    expect(ids((await store.list({ limit: 50, scope: ALL_TENANTS, taskPatterns: ['reports_*'] })).jobs)).toEqual(['n1']);
    expect(ids((await store.list({ limit: 50, scope: A, taskPatterns: ['*.daily'] })).jobs)).toEqual(['a1', 'a2']);
    expect(ids((await store.list({ limit: 50, scope: ALL_TENANTS, keyId: 'key_b' })).jobs)).toEqual(['b1']);
    expect(ids((await store.list({ limit: 50, scope: A, keyId: 'key_b' })).jobs)).toEqual([]);

    // The recorder's happy path (an UPDATE of its own) sees the rows.
    const { moved } = await store.advance([
      { id: 'q1', seq: '0000000000002-0000000000', status: 'started', from: 'queued', startedAt: 6_001, finishedAt: null, result: null, progress: null, updatedAt: 6_001 },
    ]);
    expect([...moved]).toEqual(['q1']);
    expect((await store.get('q1'))?.status).toBe('started');

    // Maintenance purges every tenant's history.
    const purged = await purgeHistory(store, 1, Date.now() + 2 * 86_400_000);
    expect(purged.deleted).toBe(5);
    expect(ids((await store.list({ limit: 50 })).jobs)).toEqual(['q1']);

    // The same store through a superuser: row security does not apply, and the store says so.
    const exempt = new JobStore({ databaseUrl: TEST_DATABASE_URL, sqlitePath: ':memory:', schema });
    onCleanup(() => exempt.close());
    expect(await exempt.rowSecurityEnforced()).toBe(false);
  });

  it("reads a tenant's page from the ordered index, not by sorting all its rows", async () => {
    // The planner's estimate of the policy decides the plan: an OR of
    // comparisons with the setting was estimated at ~1% of the rows, and a
    // page of 50 then sorted every row of the tenant.
    const { url } = await restrictedRole();
    const schema = `t_${randomToken()}`;
    onCleanup(() => dropSchema(schema));
    const store = new JobStore({ databaseUrl: url, sqlitePath: ':memory:', schema });
    onCleanup(() => store.close());
    await store.migrate();
    for (let batch = 0; batch < 4; batch++) {
      await store.write(Array.from({ length: 1000 }, (_, i) => state(`p${batch}-${String(i).padStart(4, '0')}`, { tenant: i % 2 ? 'a' : 'b' }, batch * 1000 + i)));
    }
    const plan = await withTenantScope(store, A, async (db) => {
      await sql`analyze jobs`.execute(db);
      const { rows } = await sql<{ 'QUERY PLAN': string }>`explain select * from jobs where tenant = 'a' order by created_at desc, id desc limit 51`.execute(db);
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    expect(plan).toMatch(/Index Scan Backward using jobs_(tenant_)?created/);
    expect(plan).not.toContain('Sort');
  });

  it('runs the whole pipeline (enqueue, worker, recorder, reads, purge) as the restricted role', async () => {
    const { url } = await restrictedRole();
    const echo = defineTask({
      name: 'rls.echo',
      input: z.object({ n: z.number() }),
      handler: async ({ n }, ctx) => {
        // Kept log lines: the recorder copies them to job_logs under its row-level security.
        ctx.log.info({ n }, 'echoing');
        return { n };
      },
    });
    const flaky = defineTask({
      name: 'rls.flaky',
      input: z.object({ n: z.number() }),
      retries: 2,
      backoff: { base: 10, max: 10, jitter: 'none' },
      handler: async ({ n }, ctx) => {
        if (ctx.attempt === 1) throw new Error('the first attempt fails');
        return { n };
      },
    });
    const app = await openTestApp('postgres', [echo, flaky], { databaseUrl: url });
    expect(await app.store.rowSecurityEnforced()).toBe(true);
    await startWorker(app);
    await startRecorder(app);

    const a = await app.enqueue(echo, { n: 1 }, { tenant: 'a', keyId: 'key_a' });
    const b = await app.enqueue(echo, { n: 2 }, { tenant: 'b', keyId: 'key_b' });
    const none = await app.enqueue(echo, { n: 3 });
    const retried = await app.enqueue(flaky, { n: 4 }, { tenant: 'a', keyId: 'key_a' });
    const many = await app.enqueueMany([
      { task: echo, input: { n: 5 }, options: { tenant: 'b', keyId: 'key_b' } },
      { task: 'rls.echo', input: { n: 6 }, options: { keyId: 'key_n' } },
    ]);
    const wf = await app.workflow(chain(step(echo, { n: 7 }), step(echo)), { tenant: 'a', keyId: 'key_a' });
    for (const handle of [a, b, none, retried, ...many, wf]) expect((await handle.wait()).status).toBe('completed');

    // While Redis holds the jobs, the live record carries the key id too.
    expect((await app.getJob(a.id))?.keyId).toBe('key_a');

    const store = app.store;
    const expected = [a, b, none, retried, ...many].map((h) => h.id).concat([wf.id, `${wf.id}.1`, `${wf.id}.2`]);
    await waitFor(async () => {
      const { jobs } = await store.list({ limit: 100, scope: ALL_TENANTS });
      return jobs.length === expected.length && jobs.every((j) => j.status === 'completed');
    });
    const row = (await store.get(retried.id))!;
    expect(row).toMatchObject({ tenant: 'a', keyId: 'key_a', attempts: 2, status: 'completed' });
    expect(row.attemptHistory?.map((h) => h.status)).toEqual(['failed', 'completed']);
    expect(jobView(row).key_id).toBe('key_a');
    // The SQL row equals what the API shows from Redis, key id included.
    expect(jobView((await app.getJob(retried.id))!)).toEqual(jobView(row));

    expect(ids((await store.list({ limit: 100, scope: A })).jobs)).toEqual([a.id, retried.id, wf.id, `${wf.id}.1`, `${wf.id}.2`].sort());
    expect(ids((await store.list({ limit: 100, scope: B })).jobs)).toEqual([b.id, many[0]!.id].sort());
    expect(ids((await store.list({ limit: 100, scope: NONE })).jobs)).toEqual([none.id, many[1]!.id].sort());
    expect(ids((await store.list({ limit: 100, keyId: 'key_a' })).jobs)).toEqual([a.id, retried.id, wf.id, `${wf.id}.1`, `${wf.id}.2`].sort());
    expect(ids((await store.list({ limit: 100, keyId: 'key_n', scope: NONE })).jobs)).toEqual([many[1]!.id]);
    expect(ids((await store.list({ limit: 100, taskPatterns: ['rls.f*'] })).jobs)).toEqual([retried.id]);
    expect((await store.workflowSteps(wf.id, A)).map((s) => s.id)).toEqual([`${wf.id}.1`, `${wf.id}.2`]);
    expect(await store.workflowSteps(wf.id, B)).toEqual([]);

    // SQL reads of a job Redis does not hold (no queue to look in) keep to the scope.
    expect((await readJob(app.broker, store, [], b.id, B))?.keyId).toBe('key_b');
    expect(await readJob(app.broker, store, [], b.id, A)).toBeNull();
    expect((await readJob(app.broker, store, [], b.id))?.id).toBe(b.id);

    // A job's kept log lines are visible exactly where its row is (migration 0012).
    const linesOf = (id: string, scope: TenantScope) => readKeptLogs(store, id, scope);
    expect((await waitFor(() => linesOf(a.id, A)))?.map((l) => l.msg)).toEqual(['echoing']);
    expect(await linesOf(a.id, ALL_TENANTS)).toHaveLength(1);
    expect(await linesOf(a.id, B)).toBeNull();
    expect(await linesOf(a.id, NONE)).toBeNull();
    expect(await waitFor(() => linesOf(none.id, NONE))).toHaveLength(1);
    expect(await linesOf(none.id, A)).toBeNull();
    // Without a scope, nothing; and only the every-tenant scope writes.
    expect(await store.db.selectFrom('job_logs').selectAll().execute()).toEqual([]);
    await expect(withTenantScope(store, A, (db) => db.updateTable('job_logs').set({ lines: '[]' }).where('id', '=', a.id).execute())).rejects.toThrow(/row-level security/);

    const purged = await purgeHistory(store, 1, Date.now() + 2 * 86_400_000);
    expect(purged.deleted).toBe(expected.length);
    expect(await linesOf(a.id, ALL_TENANTS)).toBeNull();
  });
});

/** A minimal row for a direct insert. */
function toInsert(id: string) {
  return {
    id,
    task: 't',
    queue: 'q',
    tenant: null as string | null,
    key_id: null,
    status: 'queued',
    attempts: 0,
    max_attempts: 1,
    input: null,
    result: null,
    error_type: null,
    error_message: null,
    error_stack: null,
    progress: null,
    created_at: 1,
    started_at: null,
    finished_at: null,
    updated_at: 1,
    attempt_history: null,
    event_seq: '0',
  };
}
