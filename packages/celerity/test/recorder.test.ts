import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { jobView } from '../src/api/job-view.ts';
import type { App } from '../src/app.ts';
import type { JobRecord } from '../src/job-record.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { RECORDER_GROUP } from '../src/store/recorder.ts';
import { defineTask } from '../src/task.ts';
import { chain, step } from '../src/workflows/workflow.ts';
import { openTestApp, sleep, startCustomRecorder, startRecorder, startWorker, stores, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({
  name: 'math.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

/** Fast-cycling recorder options, so that claims and trims happen within a test. */
const FAST = { blockMs: 100, maintenanceMs: 100 };

async function enqueueMany(app: App, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await app.enqueue(add, { a: i, b: 1 })).id);
  return ids;
}

/** Runs a worker until every given job completed in Redis, then closes it. */
async function runToCompletion(app: App, ids: string[]): Promise<void> {
  const worker = await startWorker(app);
  const queue = app.broker.queue('default');
  await waitFor(async () => (await queue.getJobCounts('completed')).completed === ids.length);
  await worker.close();
}

/** Waits until every job is in SQL with `status`, and returns the rows. */
async function inSql(app: App, ids: string[], status: JobRecord['status']): Promise<JobRecord[]> {
  return waitFor(async () => {
    const rows = await Promise.all(ids.map((id) => app.store.get(id)));
    return rows.every((r) => r?.status === status) ? (rows as JobRecord[]) : null;
  });
}

async function groupNames(app: App, key: string): Promise<string[]> {
  const groups = (await app.broker.redis.xinfo('GROUPS', key)) as unknown[][];
  return groups.map((g) => String(g[g.indexOf('name') + 1]));
}

describe.each(stores)('recorder (%s store)', (kind) => {
  it('records events that waited in the stream while no recorder ran', async () => {
    const app = await openTestApp(kind, [add]);
    const key = app.broker.eventsKey('default');
    const ids = await enqueueMany(app, 5);
    await runToCompletion(app, ids);

    // Nothing recorded yet: no consumer group, no rows, the events are waiting.
    expect(await groupNames(app, key)).toEqual([]);
    expect(await app.broker.redis.xlen(key)).toBeGreaterThanOrEqual(ids.length * 3);
    expect((await app.listJobs({ limit: 100 })).jobs).toEqual([]);

    await startRecorder(app);
    const rows = await inSql(app, ids, 'completed');
    expect(rows.map((r) => r.result)).toEqual(ids.map((_, i) => ({ sum: i + 1 })));
    for (const row of rows) {
      expect(row.attempts).toBe(1);
      expect(row.finishedAt).not.toBeNull();
    }
  });

  it('records the key id a job was submitted with, by every way of submitting, as the API shows it from Redis', async () => {
    const app = await openTestApp(kind, [add]);
    await startWorker(app);
    await startRecorder(app);
    const one = await app.enqueue(add, { a: 1, b: 1 }, { tenant: 'acme', keyId: 'key_1' });
    const byName = await app.enqueueByName('math.add', { a: 1, b: 2 }, { keyId: 'key_2' });
    const [bulk] = await app.enqueueMany([{ task: add, input: { a: 1, b: 3 }, options: { keyId: 'key_3' } }]);
    const wf = await app.workflow(chain(step(add, { a: 1, b: 4 })), { keyId: 'key_4' });
    const plain = await app.enqueue(add, { a: 1, b: 5 });
    const handles = [one, byName, bulk!, wf, plain];
    for (const h of handles) await h.wait();
    const live = await Promise.all(handles.map((h) => app.getJob(h.id)));
    expect(live.map((r) => r?.keyId)).toEqual(['key_1', 'key_2', 'key_3', 'key_4', null]);
    const rows = await inSql(
      app,
      handles.map((h) => h.id),
      'completed',
    );
    expect(rows.map((r) => r.keyId)).toEqual(['key_1', 'key_2', 'key_3', 'key_4', null]);
    expect((await app.store.get(`${wf.id}.1`))?.keyId).toBe('key_4');
    expect(live.map((r) => jobView(r!).key_id)).toEqual(rows.map((r) => jobView(r).key_id));
    await expect(app.enqueue(add, { a: 1, b: 1 }, { keyId: '' })).rejects.toThrow(/keyId/);
  });

  it('records a job added by raw BullMQ without attempts as one attempt at most, as the API shows it from Redis', async () => {
    const app = await openTestApp(kind, [add]);
    await startRecorder(app);
    // BullMQ stores `attempts: 0` for such a job, and runs it once.
    const job = await app.broker.queue('default').add('math.add', { input: { a: 1, b: 1 } });
    const [row] = await inSql(app, [job.id!], 'queued');
    const live = await app.getJob(job.id!);
    expect(row!.maxAttempts).toBe(1);
    expect(live?.maxAttempts).toBe(1);
  });

  it('claims the pending entries of a dead consumer', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');
    await redis.xgroup('CREATE', key, RECORDER_GROUP, '0', 'MKSTREAM');
    const ids = await enqueueMany(app, 3);
    await runToCompletion(app, ids);

    // A recorder that read everything, then died before acknowledging.
    const reply = (await redis.xreadgroup('GROUP', RECORDER_GROUP, 'dead-consumer', 'COUNT', 10_000, 'STREAMS', key, '>')) as [string, [string, string[]][]][];
    const delivered = reply[0]![1].length;
    expect(delivered).toBe(await redis.xlen(key));
    expect(((await redis.xpending(key, RECORDER_GROUP)) as [number])[0]).toBe(delivered);
    await sleep(60);

    const recorder = await startCustomRecorder(app, { ...FAST, claimIdleMs: 50 });
    const rows = await inSql(app, ids, 'completed');
    expect(rows.map((r) => r.result)).toEqual([{ sum: 1 }, { sum: 2 }, { sum: 3 }]);
    // Taken over and acknowledged: nothing is pending any more, for anyone.
    await waitFor(async () => ((await redis.xpending(key, RECORDER_GROUP)) as [number])[0] === 0);
    expect(await redis.xpending(key, RECORDER_GROUP, '-', '+', 10, 'dead-consumer')).toEqual([]);
    expect(recorder.recorded).toBe(delivered);
  });

  it('does not claim entries of a consumer that is still within claimIdleMs', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');
    await redis.xgroup('CREATE', key, RECORDER_GROUP, '0', 'MKSTREAM');
    const ids = await enqueueMany(app, 2);
    await redis.xreadgroup('GROUP', RECORDER_GROUP, 'busy-consumer', 'COUNT', 10_000, 'STREAMS', key, '>');

    await startCustomRecorder(app, { ...FAST, claimIdleMs: 60_000 });
    await sleep(400);
    expect(await Promise.all(ids.map((id) => app.store.get(id)))).toEqual([null, null]);
    const pending = (await redis.xpending(key, RECORDER_GROUP, '-', '+', 100)) as [string, string][];
    expect(pending.length).toBeGreaterThan(0);
    expect(new Set(pending.map((p) => p[1]))).toEqual(new Set(['busy-consumer']));
  });

  it('replays idempotently: an older event never moves a row backwards', async () => {
    const app = await openTestApp(kind, [add]);
    const store = app.store;
    const base: JobRecord = {
      id: 'job-replay',
      task: 'math.add',
      queue: 'default',
      tenant: 'acme',
      keyId: null,
      status: 'queued',
      attempts: 0,
      maxAttempts: 4,
      input: { a: 1, b: 2 },
      result: null,
      error: null,
      progress: null,
      createdAt: 1_700_000_000_000,
      startedAt: null,
      finishedAt: null,
    };
    const started: JobRecord = { ...base, status: 'started', attempts: 1, startedAt: 1_700_000_000_100, progress: { percent: 50 } };
    const completed: JobRecord = { ...started, status: 'completed', result: { sum: 3 }, finishedAt: 1_700_000_000_200, progress: { percent: 100 } };
    const seq = (n: number) => padStreamId(`1700000000${n}-0`);
    // The derived attempt history is checked once below; the rest compares the record itself.
    const getPlain = async () => {
      const { attemptHistory: _history, ...record } = (await store.get('job-replay'))!;
      return record;
    };

    await store.write([{ record: completed, eventSeq: seq(300) }]);
    expect(await getPlain()).toEqual(completed);
    expect((await store.get('job-replay'))!.attemptHistory).toEqual([{ attempt: 1, status: 'completed', startedAt: 1_700_000_000_100, finishedAt: 1_700_000_000_200, error: null }]);

    // A replayed batch (older events) arrives after the newer one.
    await store.write([{ record: started, eventSeq: seq(200) }]);
    await store.write([{ record: base, eventSeq: seq(100) }]);
    expect(await getPlain()).toEqual(completed);

    // The same position again is not newer either.
    await store.write([{ record: { ...completed, status: 'failed', result: null, error: { type: 'Error', message: 'x', stack: null } }, eventSeq: seq(300) }]);
    expect(await getPlain()).toEqual(completed);

    // Progress-only refreshes change the snapshot and nothing else.
    await store.write([], [{ record: { ...started, progress: { percent: 99, stage: 'late' } }, eventSeq: seq(250) }]);
    expect(await getPlain()).toEqual({ ...completed, progress: { percent: 99, stage: 'late' } });

    // A newer state does move it, and a state without progress keeps the last snapshot.
    await store.write([{ record: { ...completed, status: 'failed', result: null, progress: null, error: { type: 'TypeError', message: 'later', stack: 'TypeError: later' } }, eventSeq: seq(400) }]);
    expect(await getPlain()).toMatchObject({
      status: 'failed',
      result: null,
      error: { type: 'TypeError', message: 'later', stack: 'TypeError: later' },
      progress: { percent: 99, stage: 'late' },
    });

    // Stream positions compare numerically, not as raw strings ('9' < '10').
    await store.write([{ record: { ...base, id: 'job-order' }, eventSeq: padStreamId('9-0') }]);
    await store.write([{ record: { ...completed, id: 'job-order' }, eventSeq: padStreamId('10-0') }]);
    await store.write([{ record: { ...started, id: 'job-order' }, eventSeq: padStreamId('9-5') }]);
    expect((await store.get('job-order'))?.status).toBe('completed');
  });

  it('trims the stream once its entries are recorded', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');
    const ids = await enqueueMany(app, 150);
    const before = await redis.xlen(key);
    expect(before).toBeGreaterThanOrEqual(300);

    await startCustomRecorder(app, FAST);
    await inSql(app, ids, 'queued');
    const after = await waitFor(async () => {
      const len = await redis.xlen(key);
      return len < before / 2 ? len : null;
    });
    expect(after).toBeLessThan(before / 2);
    // Only acknowledged entries went: nothing is pending, nothing was lost.
    expect(((await redis.xpending(key, RECORDER_GROUP)) as [number])[0]).toBe(0);
  });

  it('keeps entries that are pending (delivered but not acknowledged) when trimming', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');
    await redis.xgroup('CREATE', key, RECORDER_GROUP, '0', 'MKSTREAM');
    await enqueueMany(app, 150);
    const before = await redis.xlen(key);
    // The first entries are held by a live consumer that has not acknowledged them.
    const reply = (await redis.xreadgroup('GROUP', RECORDER_GROUP, 'slow-consumer', 'COUNT', 10, 'STREAMS', key, '>')) as [string, [string, string[]][]][];
    const held = reply[0]![1].map(([id]) => id);
    expect(held).toHaveLength(10);

    const recorder = await startCustomRecorder(app, { ...FAST, claimIdleMs: 60_000 });
    await waitFor(() => recorder.recorded === before - held.length);
    await sleep(350); // several maintenance rounds
    for (const id of held) expect(await redis.xrange(key, id, id)).toHaveLength(1);
    expect(await redis.xlen(key)).toBe(before);
  });

  it('reconciles from Redis when events were trimmed before being recorded', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');

    // A recorder ran once, so the group exists and has read the stream so far...
    const first = await startCustomRecorder(app, FAST);
    const early = await app.enqueue(add, { a: 0, b: 0 });
    await inSql(app, [early.id], 'queued');
    await first.stop();

    // ...then no recorder ran while jobs went through, and the stream's length
    // cap dropped their events (BullMQ trims with XADD MAXLEN ~, XTRIM is the
    // same operation).
    const ids = await enqueueMany(app, 4);
    await runToCompletion(app, [early.id, ...ids]);
    const later = await app.enqueue(add, { a: 7, b: 7 }, { delay: 60_000 });
    await redis.xtrim(key, 'MAXLEN', 0);
    expect(await redis.xlen(key)).toBe(0);

    await startCustomRecorder(app, FAST);
    const rows = await inSql(app, [early.id, ...ids], 'completed');
    expect(rows.map((r) => r.result)).toEqual([{ sum: 0 }, { sum: 1 }, { sum: 2 }, { sum: 3 }, { sum: 4 }]);
    expect(await waitFor(() => app.store.get(later.id))).toMatchObject({ status: 'queued', input: { a: 7, b: 7 } });
  });

  it('reconciles when pending entries of a dead consumer were trimmed before being claimed', async () => {
    const app = await openTestApp(kind, [add]);
    const redis = testRedis();
    const key = app.broker.eventsKey('default');

    // Recorded as queued...
    const first = await startCustomRecorder(app, FAST);
    const handle = await app.enqueue(add, { a: 20, b: 22 });
    await inSql(app, [handle.id], 'queued');
    await first.stop();
    // ...then a recorder read the job's later events and died without
    // acknowledging them, and the length cap dropped them.
    await runToCompletion(app, [handle.id]);
    const reply = (await redis.xreadgroup('GROUP', RECORDER_GROUP, 'dead-consumer', 'COUNT', 10_000, 'STREAMS', key, '>')) as [string, [string, string[]][]][];
    expect(reply[0]![1].length).toBeGreaterThan(0);
    await redis.xtrim(key, 'MAXLEN', 0);
    await sleep(60);

    await startCustomRecorder(app, { ...FAST, claimIdleMs: 50 });
    const [row] = await inSql(app, [handle.id], 'completed');
    expect(row!.result).toEqual({ sum: 42 });
    await waitFor(async () => ((await redis.xpending(key, RECORDER_GROUP)) as [number])[0] === 0);
  });
});
