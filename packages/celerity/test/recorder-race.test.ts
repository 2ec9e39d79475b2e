import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { App } from '../src/app.ts';
import type { JobRecord } from '../src/job-record.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { forgetJobLogs, readKeptLogs } from '../src/store/job-logs.ts';
import { RECORDER_GROUP, Recorder } from '../src/store/recorder.ts';
import { defineTask } from '../src/task.ts';
import { deferred, openTestApp, startWorker, stores, testRedis, useCleanup, waitFor, type Deferred, type StoreKind } from './helpers.ts';

useCleanup();

/** Holds a job's first attempt until the test opens its gate. */
const gates = new Map<number, Deferred>();

/** Fails its first attempt, completes the second. */
const flaky = defineTask({
  name: 'race.flaky',
  input: z.object({ n: z.number() }),
  retries: 2,
  backoff: { base: 10, max: 10, jitter: 'none' },
  handler: async ({ n }, ctx) => {
    if (ctx.attempt === 1) {
      await gates.get(n)?.promise;
      throw new Error(`first attempt fails (${n})`);
    }
    return { n, attempt: ctx.attempt };
  },
});

/** Fails for good. */
const doomed = defineTask({
  name: 'race.doomed',
  input: z.object({}),
  retries: 0,
  handler: async () => {
    throw new Error('doomed for good');
  },
});

/** Succeeds at once, after a log line. */
const quick = defineTask({
  name: 'race.quick',
  input: z.object({ n: z.number() }),
  handler: async ({ n }, ctx) => {
    ctx.log.info({ n }, 'quick ran');
    return { n };
  },
});

type Entry = [string, string[]];

/**
 * A recorder that is never started: the test hands it entries in the order
 * it chooses, as the consumer group would deliver them to one of several
 * recorders, and it writes them as it would.
 */
function recorderFor(app: App): { feed(entries: Entry[]): Promise<void> } {
  const recorder = new Recorder({
    redis: app.broker.redis,
    store: app.store,
    queues: [app.broker.queue('default')],
    logger: app.logger,
    batchSize: 1000,
    prefix: app.config.prefix,
  });
  const key = app.broker.eventsKey('default');
  const apply = (recorder as unknown as { applyReply(reply: [string, Entry[]][]): Promise<void> }).applyReply.bind(recorder);
  return { feed: (entries) => apply([[key, entries]]) };
}

/** The events of job `id` in its queue's stream so far, in stream order (the recorders' group is created first). */
async function eventsOf(app: App, id: string): Promise<Entry[]> {
  const key = app.broker.eventsKey('default');
  const all = (await app.broker.redis.xrange(key, '-', '+')) as Entry[];
  return all.filter(([, fields]) => fields[fields.indexOf('jobId') + 1] === id);
}

async function createGroup(app: App): Promise<void> {
  await testRedis().xgroup('CREATE', app.broker.eventsKey('default'), RECORDER_GROUP, '0', 'MKSTREAM');
}

/** Runs the app's jobs with a worker until job `id` reaches `end` in Redis. */
async function runUntil(app: App, id: string, end: 'completed' | 'failed'): Promise<void> {
  const worker = await startWorker(app);
  await waitFor(async () => (await app.broker.queue('default').getJobState(id)) === end);
  await worker.close();
}

const eventOf = ([, fields]: Entry) => fields[fields.indexOf('event') + 1];

/**
 * A job of `task` enqueued, its enqueue written by recorder A, then run to
 * completion: the events after the enqueue are the test's to deliver.
 */
async function ranAfterEnqueue(kind: StoreKind, task: typeof flaky | typeof quick, input: { n: number }) {
  const app = await openTestApp(kind, [task]);
  await createGroup(app);
  const { id } = await app.enqueue(task, input);
  const a = recorderFor(app);
  await a.feed(await eventsOf(app, id));
  await runUntil(app, id, 'completed');
  return { app, id, a };
}

/** The fields the history must agree on with the live record. */
function comparable(r: JobRecord | null) {
  if (!r) return r;
  return { status: r.status, attempts: r.attempts, attemptHistory: r.attemptHistory, startedAt: r.startedAt, finishedAt: r.finishedAt, result: r.result, error: r.error };
}

describe.each(stores)('recorder races (%s store)', (kind) => {
  it('a retried job is recorded with every attempt when its completion alone reaches another recorder first', async () => {
    const app = await openTestApp(kind, [flaky]);
    await createGroup(app);
    const gate = deferred();
    gates.set(1, gate);
    const { id } = await app.enqueue(flaky, { n: 1 });
    const a = recorderFor(app);
    const b = recorderFor(app);

    // Each batch is written when its events are the newest, as a live recorder would.
    // Recorder A writes the enqueue, then the first start (the row reads
    // `started`, attempt 1).
    await a.feed(await eventsOf(app, id));
    const worker = await startWorker(app);
    const firstStart = await waitFor(async () => (await eventsOf(app, id)).find((e) => eventOf(e) === 'active'));
    await a.feed([firstStart]);
    // The first attempt fails, the second completes. Recorder A reads the
    // failure, the retry and the second start, and is slow to write them;
    // recorder B gets the completion alone, which looks like the end of a
    // first attempt, and the row is where a first attempt would leave it.
    gate.resolve();
    await waitFor(async () => (await app.broker.queue('default').getJobState(id)) === 'completed');
    await worker.close();
    const entries = await eventsOf(app, id);
    const done = entries.findIndex((e) => eventOf(e) === 'completed');
    const held = entries.slice(entries.findIndex(([entryId]) => entryId === firstStart[0]) + 1, done);
    expect(held.map(eventOf)).toEqual(['delayed', 'waiting', 'active']);
    await b.feed([entries[done]!]);
    await a.feed(held);

    const live = await app.getJob(id);
    expect(live?.attempts).toBe(2);
    expect(live?.attemptHistory?.map((h) => h.status)).toEqual(['failed', 'completed']);
    expect(comparable(await app.store.get(id))).toEqual(comparable(live));
  });

  it('a retried job is recorded with every attempt when its second start and completion reach another recorder first', async () => {
    const { app, id, a } = await ranAfterEnqueue(kind, flaky, { n: 2 });
    const b = recorderFor(app);

    // The row reads `queued` when B gets the second start and the completion,
    // which alone look like a first attempt's; A still holds the first attempt.
    const entries = await eventsOf(app, id);
    const actives = entries.flatMap((e, i) => (eventOf(e) === 'active' ? [i] : []));
    const done = entries.findIndex((e) => eventOf(e) === 'completed');
    await b.feed([entries[actives[1]!]!, entries[done]!]);
    await a.feed(entries.slice(actives[0], actives[1]));

    const live = await app.getJob(id);
    expect(live?.attemptHistory?.map((h) => h.status)).toEqual(['failed', 'completed']);
    expect(comparable(await app.store.get(id))).toEqual(comparable(live));
  });

  it('a job whose completion reaches another recorder before its start is completed from its events, and the late start writes nothing', async () => {
    const { app, id, a } = await ranAfterEnqueue(kind, quick, { n: 7 });
    const b = recorderFor(app);
    const entries = await eventsOf(app, id);
    const start = entries.find((e) => eventOf(e) === 'active')!;
    const done = entries.find((e) => eventOf(e) === 'completed')!;

    // Full writes (the hash read whole, the row upserted) are what the happy path saves.
    const fullWrites: string[] = [];
    const write = app.store.write.bind(app.store);
    app.store.write = async (states, progressOnly) => {
      fullWrites.push(...states.map((s) => s.record.id));
      return write(states, progressOnly);
    };
    try {
      // B gets the completion while the row still reads `queued`: one attempt
      // (the hash's count), so the completion and the hash's times are the whole story.
      await b.feed([done]);
      const live = await app.getJob(id);
      expect(live).toMatchObject({ status: 'completed', attempts: 1, result: { n: 7 } });
      expect(comparable(await app.store.get(id))).toEqual(comparable(live));
      // A's start comes late: the row is already past it.
      await a.feed([start]);
      expect(comparable(await app.store.get(id))).toEqual(comparable(live));
      expect(fullWrites).toEqual([]);
    } finally {
      app.store.write = write;
    }
  });

  it('a completion delivered again after a crash before its log lines were kept keeps them, though its row is already final', async () => {
    const { app, id, a } = await ranAfterEnqueue(kind, quick, { n: 8 });
    const entries = await eventsOf(app, id);
    const done = entries.find((e) => eventOf(e) === 'completed')!;
    await a.feed(entries.slice(entries.findIndex((e) => eventOf(e) === 'active')));
    const kept = () => readKeptLogs(app.store, id, ALL_TENANTS);
    expect((await kept())?.map((l) => l.msg)).toEqual(['quick ran']);

    // The crash: the row was written, the lines not yet copied, nothing acknowledged.
    await forgetJobLogs(app.store, id);
    expect(await kept()).toBeNull();
    await recorderFor(app).feed([done]);
    expect((await kept())?.map((l) => l.msg)).toEqual(['quick ran']);
    expect(await app.store.get(id)).toMatchObject({ status: 'completed', result: { n: 8 } });
  });

  it('a job that failed and whose hash is gone is finished from its failed event', async () => {
    const app = await openTestApp(kind, [doomed]);
    await createGroup(app);
    const { id } = await app.enqueue(doomed, {});
    await runUntil(app, id, 'failed');
    const entries = await eventsOf(app, id);
    const failed = entries.findIndex((e) => eventOf(e) === 'failed');
    const a = recorderFor(app);
    await a.feed(entries.slice(0, failed));
    expect((await app.store.get(id))?.status).toBe('started');

    // Retention (or SQL down for longer than it) removed the job from Redis.
    const queue = app.broker.queue('default');
    await app.broker.redis.del(queue.toKey(id), `${queue.toKey(id)}:logs`);
    await a.feed(entries.slice(failed));

    const row = await app.store.get(id);
    expect(row).toMatchObject({ status: 'failed', attempts: 1, error: { message: 'doomed for good' } });
    expect(row?.finishedAt).toBe(Number(entries[failed]![0].split('-')[0]));
    expect(row?.attemptHistory).toEqual([{ attempt: 1, status: 'failed', startedAt: row?.startedAt, finishedAt: row?.finishedAt, error: { type: 'Error', message: 'doomed for good' } }]);
  });

  it('a progress-only write never inserts a row nor moves one back', async () => {
    const app = await openTestApp(kind, [flaky]);
    const store = app.store;
    const record: JobRecord = {
      id: 'job-progress',
      task: 'race.flaky',
      queue: 'default',
      tenant: null,
      keyId: null,
      status: 'queued',
      attempts: 0,
      maxAttempts: 3,
      input: { n: 1 },
      result: null,
      error: null,
      progress: { percent: 10 },
      createdAt: 1_700_000_000_000,
      startedAt: null,
      finishedAt: null,
    };
    const seq = (n: number) => padStreamId(`1700000000${n}-0`);
    // The progress event of a running job, written before its start is in SQL.
    await store.write([], [{ record, eventSeq: seq(300) }]);
    expect(await store.get(record.id)).toBeNull();

    await store.write([{ record: { ...record, status: 'started', attempts: 1, startedAt: 1_700_000_000_200 }, eventSeq: seq(200) }]);
    await store.write([], [{ record: { ...record, progress: { percent: 60 } }, eventSeq: seq(400) }]);
    expect(await store.get(record.id)).toMatchObject({ status: 'started', attempts: 1, progress: { percent: 60 } });
  });
});
