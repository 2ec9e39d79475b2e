import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import type { App } from '../src/app.ts';
import type { JobRecord } from '../src/job-record.ts';
import { appMetrics } from '../src/ops/metrics.ts';
import type { HappyUpdate } from '../src/store/batch-upsert.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { UNRECORDABLE_ROW, writeIsolating, type BatchWriter } from '../src/store/isolate.ts';
import type { RecordedState } from '../src/store/job-store.ts';
import { RECORDER_GROUP } from '../src/store/recorder.ts';
import { storableJson, storableText } from '../src/store/storable.ts';
import { classifyWriteError } from '../src/store/write-errors.ts';
import { baseJobOptions } from '../src/client/enqueue.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, sleep, startCustomRecorder, startRecorder, startWorker, stores, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const echo = defineTask({
  name: 'poison.echo',
  input: z.object({ n: z.number(), fail: z.string().optional() }),
  retries: 0,
  handler: async ({ n, fail }) => {
    if (fail !== undefined) throw new Error(fail);
    return { n };
  },
});

const FAST = { blockMs: 100, maintenanceMs: 100 };

/** Waits until every job is in SQL in a final state, and returns the rows. */
async function finalInSql(app: App, ids: string[]): Promise<JobRecord[]> {
  return waitFor(async () => {
    const rows = await Promise.all(ids.map((id) => app.store.get(id)));
    return rows.every((r) => r?.status === 'completed' || r?.status === 'failed') ? (rows as JobRecord[]) : null;
  }, 15_000);
}

async function pending(app: App): Promise<number> {
  return ((await testRedis().xpending(app.broker.eventsKey('default'), RECORDER_GROUP)) as [number])[0];
}

/** A data error as PostgreSQL reports one (SQLSTATE class 22). */
function dataError(message = 'invalid input syntax for type json'): Error {
  return Object.assign(new Error(message), { code: '22P02' });
}

describe.each(stores)('recorder and rows a store refuses (%s store)', (kind) => {
  it('records a lone surrogate tenant and an error message with a lone surrogate and a NUL, and every job after them', async () => {
    const app = await openTestApp(kind, [echo]);
    // The API and enqueue refuse such a tenant now; a producer that skips
    // them (an older client, a raw BullMQ add) can still write one, and the
    // history must still take it.
    const odd = await app.broker.queue(echo.queue).add(echo.name, { input: { n: -1 }, tenant: '\ud800' }, { ...baseJobOptions(app.broker, echo), jobId: 'odd-tenant' });
    const failing = await app.enqueue(echo, { n: -2, fail: 'bad \ud800 byte \0 end' });
    const normal = [];
    for (let n = 0; n < 20; n++) normal.push(await app.enqueue(echo, { n }));
    await startWorker(app);
    await startCustomRecorder(app, FAST);

    const [oddRow, failingRow, ...rows] = await finalInSql(app, [odd.id!, failing.id, ...normal.map((h) => h.id)]);
    expect(oddRow).toMatchObject({ status: 'completed', tenant: '\uFFFD', result: { n: -1 } });
    expect(failingRow).toMatchObject({ status: 'failed', error: { message: 'bad \uFFFD byte \uFFFD end' } });
    expect(rows.map((r) => r.result)).toEqual(normal.map((_, n) => ({ n })));
    expect(await pending(app)).toBe(0);
  });

  it('writes a row the store refuses in minimal form, and the rest of its batch in full', async () => {
    const app = await openTestApp(kind, [echo]);
    const store = await app.openStore();
    const ids: string[] = [];
    for (let n = 0; n < 10; n++) ids.push((await app.enqueue(echo, { n })).id);
    const poison = ids[4]!;
    // A test double of the store: whatever it is, this job's row is refused
    // as data, in full writes and happy-path updates alike; its minimal form is not.
    const write = store.write.bind(store);
    const advance = store.advance.bind(store);
    store.write = async (states: RecordedState[], progressOnly: RecordedState[] = []) => {
      if (states.some((s) => s.record.id === poison && s.record.error?.type !== UNRECORDABLE_ROW)) throw dataError();
      return write(states, progressOnly);
    };
    store.advance = async (updates: HappyUpdate[]) => {
      if (updates.some((u) => u.id === poison)) throw dataError();
      return advance(updates);
    };
    onCleanup(() => {
      store.write = write;
      store.advance = advance;
    });
    await startWorker(app);
    await startRecorder(app);

    const rows = await finalInSql(app, ids);
    rows.forEach((row, n) => {
      if (row.id === poison) return;
      expect(row).toMatchObject({ status: 'completed', result: { n }, input: { n }, error: null });
    });
    expect(rows[4]).toMatchObject({ id: poison, task: 'poison.echo', status: 'completed', input: null, result: null, error: { type: UNRECORDABLE_ROW } });
    expect(rows[4]!.error!.message).toContain('invalid input syntax for type json');
    // Acknowledged: the stream moved on.
    await waitFor(async () => (await pending(app)) === 0);
    expect(app.recorderStats.minimalRows).toBeGreaterThanOrEqual(1);
    expect(app.recorderStats.isolatedBatches).toBeGreaterThanOrEqual(1);
    expect(await appMetrics(app).render()).toMatch(/celerity_recorder_unrecordable_rows_total\{kind="minimal"\} [1-9]/);
  });

  it('readiness and metrics report a history that lags behind', async () => {
    const app = await openTestApp(kind, [echo], { recorderMaxLag: 1000 });
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const metrics = appMetrics(app);
    const recorder = await startCustomRecorder(app, FAST);
    const first = await app.enqueue(echo, { n: 0 });
    await waitFor(() => app.store.get(first.id));
    expect((await api.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);

    // The recorder stops; jobs pile up in the stream.
    await recorder.stop();
    for (let n = 1; n <= 5; n++) await app.enqueue(echo, { n });
    await sleep(1_200);
    const res = await api.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toMatchObject({ code: 'not_ready', details: { redis: 'up', store: 'up', history: 'lagging' } });
    expect(res.json().error.message).toMatch(/job history trails the queues by \d+ s/);
    expect(res.json().error.details.history_lag_ms).toBeGreaterThan(1000);
    const text = await metrics.render();
    const lag = Number(/celerity_recorder_lag_seconds\{queue="default"\} ([\d.]+)/.exec(text)?.[1]);
    expect(lag).toBeGreaterThan(1);

    // A recorder catches up: ready again.
    await startCustomRecorder(app, FAST);
    await waitFor(async () => (await api.inject({ method: 'GET', url: '/readyz' })).statusCode === 200);
  });
});

describe('storable text', () => {
  it('replaces NULs and lone surrogates with U+FFFD, keeps valid pairs, and leaves clean text untouched', () => {
    expect(storableText('a\0b')).toBe('a\uFFFDb');
    expect(storableText('x\ud800y\udc00z')).toBe('x\uFFFDy\uFFFDz');
    expect(storableText('emoji 😀')).toBe('emoji 😀');
    const clean = 'plain';
    expect(storableText(clean)).toBe(clean);
    expect(JSON.parse(storableJson([{ tenant: '\ud800', message: 'n\0l', input: JSON.stringify({ s: '\ud800' }) }]))).toEqual([
      { tenant: '\uFFFD', message: 'n\uFFFDl', input: JSON.stringify({ s: '\ud800' }) },
    ]);
  });
});

describe('classifyWriteError', () => {
  it('tells an unavailable store from refused data', () => {
    expect(classifyWriteError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))).toBe('unavailable');
    expect(classifyWriteError(new Error('Connection terminated unexpectedly'))).toBe('unavailable');
    expect(classifyWriteError(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }))).toBe('unavailable');
    expect(classifyWriteError(Object.assign(new Error('relation "jobs" does not exist'), { code: '42P01' }))).toBe('unavailable');
    expect(classifyWriteError(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }))).toBe('unavailable');
    expect(classifyWriteError(dataError())).toBe('refused');
    expect(classifyWriteError(Object.assign(new Error('duplicate'), { code: '23505' }))).toBe('refused');
    expect(classifyWriteError(Object.assign(new Error('string or blob too big'), { code: 'SQLITE_TOOBIG' }))).toBe('refused');
    expect(classifyWriteError(new RangeError('Invalid string length'))).toBe('refused');
    expect(classifyWriteError(new TypeError('something else'))).toBe('unknown');
  });
});

describe('writeIsolating', () => {
  const state = (id: string): RecordedState => ({
    record: {
      id,
      task: 't',
      queue: 'q',
      tenant: 'x',
      keyId: 'key_x',
      status: 'completed',
      attempts: 1,
      maxAttempts: 1,
      input: { id },
      result: 1,
      error: null,
      progress: null,
      createdAt: 1,
      startedAt: 2,
      finishedAt: 3,
    },
    eventSeq: padStreamId('5-0'),
  });
  /** Records what is written; refuses any full row of `bad` ids with `err`. */
  function fakeStore(bad: Set<string>, err: () => Error = () => dataError()) {
    const written = new Map<string, JobRecord>();
    let calls = 0;
    const store: BatchWriter = {
      async write(states) {
        calls += 1;
        if (states.some((s) => bad.has(s.record.id) && s.record.error?.type !== UNRECORDABLE_ROW)) throw err();
        for (const s of states) written.set(s.record.id, s.record);
      },
    };
    return { store, written, calls: () => calls };
  }

  it('bisects a refused batch down to its bad rows, writes them in minimal form and the rest in full', async () => {
    const states = Array.from({ length: 100 }, (_, i) => state(`j${i}`));
    const { store, written, calls } = fakeStore(new Set(['j7', 'j63']));
    const outcome = await writeIsolating(store, states, [], { splitUnknown: false });
    expect(outcome.isolated).toBe(true);
    expect(outcome.minimal.map((s) => s.record.id).sort()).toEqual(['j63', 'j7']);
    expect(written.size).toBe(100);
    expect(written.get('j8')).toEqual(states[8]!.record);
    expect(written.get('j7')).toMatchObject({ id: 'j7', status: 'completed', input: null, tenant: 'x', keyId: 'key_x', error: { type: UNRECORDABLE_ROW } });
    expect(calls()).toBeLessThan(40);
  });

  it('retries an unavailable store whole, without splitting', async () => {
    const { store, calls } = fakeStore(new Set(['j1']), () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await expect(writeIsolating(store, [state('j0'), state('j1')], [], { splitUnknown: true })).rejects.toThrow('ECONNRESET');
    expect(calls()).toBe(1);
  });

  it('splits an unknown error only once asked to, and blames no row when every row fails alone', async () => {
    const bad = new Set(['j0', 'j1', 'j2']);
    const { store, written } = fakeStore(bad, () => new TypeError('odd'));
    const states = [state('j0'), state('j1'), state('j2')];
    await expect(writeIsolating(store, states, [], { splitUnknown: false })).rejects.toThrow('odd');
    await expect(writeIsolating(store, states, [], { splitUnknown: true })).rejects.toThrow('odd');
    expect(written.size).toBe(0);
  });
});
