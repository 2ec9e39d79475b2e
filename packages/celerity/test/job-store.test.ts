import { describe, expect, it } from 'vitest';
import { ALL_TENANTS, taskPatternMatches } from '../src/auth/principal.ts';
import type { JobRecord } from '../src/job-record.ts';
import { JobStore, type RecordedState } from '../src/store/job-store.ts';
import { dropSchema, onCleanup, randomToken, stores, testEnv, TEST_DATABASE_URL, useCleanup, type StoreKind } from './helpers.ts';

useCleanup();

function openStore(kind: StoreKind): JobStore {
  const env = testEnv(kind);
  const store = new JobStore({ databaseUrl: env.config.databaseUrl, sqlitePath: env.sqlitePath, ...(env.schema ? { schema: env.schema } : {}) });
  onCleanup(() => store.close());
  return store;
}

describe.each(stores)('job store (%s)', (kind) => {
  it('migrates idempotently and starts empty', async () => {
    const store = openStore(kind);
    await store.migrate();
    await store.migrate();
    await store.ping();
    expect(await store.list({ limit: 10 })).toEqual({ jobs: [], nextCursor: null });
    expect(await store.get('nope')).toBeNull();
  });
});

describe.each(stores)('job store happy updates (%s)', (kind) => {
  it('moves the rows its events can follow, settles the ones already past them, and leaves the rest to a full write', async () => {
    const store = openStore(kind);
    await store.migrate();
    const seq = (n: number) => `000000000000${n}-0000000000`;
    const at = (id: string, n: number, over: Partial<JobRecord>): RecordedState => ({ ...state(id, { result: null, finishedAt: null, ...over }), eventSeq: seq(n) });
    await store.write([
      at('queued', 1, { status: 'queued', attempts: 0, startedAt: null }),
      // Written from the hash of a job that had started when its add was read (a backlog caught up).
      at('counted', 1, { status: 'queued', attempts: 1 }),
      at('started', 2, { status: 'started', attempts: 1 }),
      // Another recorder wrote a later event first.
      at('ahead', 9, { status: 'completed', attempts: 1, result: 1, finishedAt: 1_700_000_000_002 }),
      at('retrying', 3, { status: 'retrying', attempts: 1 }),
      at('second', 3, { status: 'started', attempts: 2 }),
    ]);
    const update = (id: string, from: 'queued' | 'queued-or-started') => ({
      id,
      seq: seq(5),
      status: 'completed' as const,
      from,
      startedAt: 1_700_000_000_001,
      finishedAt: 1_700_000_000_002,
      result: '1',
      progress: null,
      updatedAt: 1_700_000_000_003,
    });
    const outcome = await store.advance([
      update('queued', 'queued'),
      update('counted', 'queued'),
      // A start in hand does not follow a row already started; a completion alone does.
      update('started', 'queued'),
      update('ahead', 'queued-or-started'),
      update('retrying', 'queued-or-started'),
      update('second', 'queued-or-started'),
    ]);
    expect([...outcome.moved].sort()).toEqual(['counted', 'queued']);
    expect([...outcome.settled].sort()).toEqual(['ahead', 'counted', 'queued']);
    expect(await store.advance([update('started', 'queued-or-started')])).toEqual({ moved: new Set(['started']), settled: new Set(['started']) });
    for (const id of ['queued', 'counted', 'started']) expect(await store.get(id), id).toMatchObject({ status: 'completed', attempts: 1, result: 1, finishedAt: 1_700_000_000_002 });
    expect(await store.get('retrying')).toMatchObject({ status: 'retrying' });
    expect(await store.get('second')).toMatchObject({ status: 'started', attempts: 2 });
  });
});

describe('job store (postgres schemas)', () => {
  it('stores in different schemas of one database each get their own tables', async () => {
    // Tests, and several apps sharing a database, isolate themselves with
    // `dbSchema`. The migration bookkeeping must be looked up in the store's
    // own schema, not in whichever schema of the database happens to hold it.
    const schemas = [`t_${randomToken()}`, `t_${randomToken()}`];
    const opened = schemas.map((schema) => {
      const store = new JobStore({ databaseUrl: TEST_DATABASE_URL, sqlitePath: ':memory:', schema });
      onCleanup(() => dropSchema(schema));
      onCleanup(() => store.close());
      return store;
    });
    for (const store of opened) await store.migrate();
    for (const store of opened) expect(await store.list({ limit: 1 })).toEqual({ jobs: [], nextCursor: null });
  });
});

/** A finished job's state, as the recorder would write it. */
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

const ids = (page: { jobs: JobRecord[] }) => page.jobs.map((j) => j.id);

// Names a SQL pattern could get wrong: case, LIKE's and GLOB's wildcards, escape characters, non-ASCII.
const TASK_NAMES = ['reports.daily', 'Reports.daily', 'reports.eu.daily', 'REPORTS.weekly', 'a_b', 'axb', 'a%b', 'a[b]c', 'abc', 'a?c', 'a!b', 'a\\b', 'a*b', 'rapports.été', 'x'];

describe.each(stores)('job store scopes and filters (%s)', (kind) => {
  async function seeded(): Promise<JobStore> {
    const store = openStore(kind);
    await store.migrate();
    await store.write([
      state('j1', { tenant: 'a', keyId: 'key_a1' }, 1_000),
      state('j2', { tenant: 'a', keyId: 'key_a2', task: 'reports.daily' }, 2_000),
      state('j3', { tenant: 'b', keyId: 'key_b1' }, 3_000),
      state('j4', { tenant: null, keyId: null }, 4_000),
      state('j5', { tenant: null, keyId: 'key_n1' }, 5_000),
      state('wf', { tenant: 'a', task: 'workflow.chain' }, 6_000),
      state('wf.1', { tenant: 'a' }, 6_001),
      state('wf.2', { tenant: 'a' }, 6_002),
    ]);
    return store;
  }

  it('records the key id and reads it back', async () => {
    const store = await seeded();
    expect((await store.get('j1'))?.keyId).toBe('key_a1');
    expect((await store.get('j4'))?.keyId).toBeNull();
    // A later write of the same job without a key id (a minimal row, an older writer) keeps the recorded one.
    await store.write([{ ...state('j1', { tenant: 'a', keyId: null, status: 'failed' }, 1_000), eventSeq: '0000000000002-0000000000' }]);
    expect(await store.get('j1')).toMatchObject({ status: 'failed', keyId: 'key_a1' });
  });

  it('get and workflowSteps see only the scope', async () => {
    const store = await seeded();
    const a = { all: false, tenant: 'a' } as const;
    const none = { all: false, tenant: null } as const;
    expect((await store.get('j1', a))?.id).toBe('j1');
    expect(await store.get('j3', a)).toBeNull();
    expect(await store.get('j4', a)).toBeNull();
    expect((await store.get('j4', none))?.id).toBe('j4');
    expect(await store.get('j1', none)).toBeNull();
    expect((await store.get('j3', ALL_TENANTS))?.tenant).toBe('b');
    expect((await store.get('j3'))?.tenant).toBe('b');
    expect((await store.workflowSteps('wf', a)).map((s) => s.id)).toEqual(['wf.1', 'wf.2']);
    expect(await store.workflowSteps('wf', { all: false, tenant: 'b' })).toEqual([]);
    expect(await store.workflowSteps('wf', none)).toEqual([]);
    expect((await store.workflowSteps('wf')).length).toBe(2);
  });

  it('list: scope, tenant and key id filters, pages', async () => {
    const store = await seeded();
    expect(ids(await store.list({ limit: 50 }))).toEqual(['wf.2', 'wf.1', 'wf', 'j5', 'j4', 'j3', 'j2', 'j1']);
    expect(ids(await store.list({ limit: 50, scope: ALL_TENANTS }))).toHaveLength(8);
    expect(ids(await store.list({ limit: 50, scope: { all: false, tenant: 'a' } }))).toEqual(['wf.2', 'wf.1', 'wf', 'j2', 'j1']);
    expect(ids(await store.list({ limit: 50, scope: { all: false, tenant: 'b' } }))).toEqual(['j3']);
    expect(ids(await store.list({ limit: 50, scope: { all: false, tenant: null } }))).toEqual(['j5', 'j4']);
    expect(ids(await store.list({ limit: 50, scope: { all: false, tenant: 'nobody' } }))).toEqual([]);
    // The tenant filter narrows a scope; it never widens it.
    expect(ids(await store.list({ limit: 50, tenant: 'b' }))).toEqual(['j3']);
    expect(ids(await store.list({ limit: 50, tenant: 'b', scope: { all: false, tenant: 'a' } }))).toEqual([]);
    expect(ids(await store.list({ limit: 50, tenant: 'a', scope: { all: false, tenant: null } }))).toEqual([]);
    expect(ids(await store.list({ limit: 50, keyId: 'key_a2' }))).toEqual(['j2']);
    expect(ids(await store.list({ limit: 50, keyId: 'key_b1', scope: { all: false, tenant: 'a' } }))).toEqual([]);
    expect(ids(await store.list({ limit: 50, keyId: 'key_n1', scope: { all: false, tenant: null } }))).toEqual(['j5']);
    // Pages keep the scope.
    const first = await store.list({ limit: 2, scope: { all: false, tenant: 'a' } });
    expect(ids(first)).toEqual(['wf.2', 'wf.1']);
    const second = await store.list({ limit: 2, scope: { all: false, tenant: 'a' }, cursor: first.nextCursor! });
    expect(ids(second)).toEqual(['wf', 'j2']);
    const third = await store.list({ limit: 2, scope: { all: false, tenant: 'a' }, cursor: second.nextCursor! });
    expect(third).toMatchObject({ nextCursor: null });
    expect(ids(third)).toEqual(['j1']);
  });

  it('list: task patterns match as taskPatternMatches does (case, wildcards, escapes)', async () => {
    const store = openStore(kind);
    await store.migrate();
    await store.write(TASK_NAMES.map((task, i) => state(`t${String(i).padStart(2, '0')}`, { task, tenant: i % 2 ? 'a' : null }, 1_000 + i)));
    const patterns = ['reports.*', 'Reports.*', '*.daily', 'R*', 'a_b', 'a_*', '*%*', 'a%*', 'a[*', 'a[b]c', 'a?*', 'a?c', '*!*', '*\\*', 'a*b', 'a*', '*', '*.été', 'x*', '*x', 'nothing*'];
    for (const pattern of patterns) {
      const expected = TASK_NAMES.filter((t) => taskPatternMatches(pattern, t)).sort();
      const got = (await store.list({ limit: 100, taskPatterns: [pattern] })).jobs.map((j) => j.task).sort();
      expect({ pattern, tasks: got }).toEqual({ pattern, tasks: expected });
    }
    // One of several; with a scope; none at all matches nothing.
    const several = (await store.list({ limit: 100, taskPatterns: ['a_b', 'Reports.*', 'x'] })).jobs.map((j) => j.task).sort();
    expect(several).toEqual(['Reports.daily', 'a_b', 'x']);
    const scoped = (await store.list({ limit: 100, taskPatterns: ['a*'], scope: { all: false, tenant: 'a' } })).jobs.map((j) => j.task).sort();
    expect(scoped).toEqual(TASK_NAMES.filter((t, i) => i % 2 === 1 && taskPatternMatches('a*', t)).sort());
    expect(await store.list({ limit: 100, taskPatterns: [] })).toEqual({ jobs: [], nextCursor: null });
  });

  it('rowSecurityEnforced is false for a store that bypasses it', async () => {
    // SQLite has no row security; the tests' PostgreSQL role is a superuser, which PostgreSQL exempts.
    const store = openStore(kind);
    await store.migrate();
    expect(await store.rowSecurityEnforced()).toBe(false);
  });
});
