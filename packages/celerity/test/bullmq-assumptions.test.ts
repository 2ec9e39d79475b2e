import { DelayedError, FlowProducer, Job, type Queue, UnrecoverableError, Worker, Worker as BullWorker } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRedis } from '../src/broker/connection.ts';
import { ChurnMap, ChurnSet } from '../src/churn-map.ts';
import { useChurnTables } from '../src/worker/bullmq-tables.ts';
import { bullmqDelayed, bullmqInternals, bullmqRemovedEvent, jobLogMarker } from '../src/broker/keys.ts';
import { fairKeys } from '../src/broker/fair-keys.ts';
import { readJobFactsAt } from '../src/broker/job-hashes.ts';
import { recordFromJob, type JobFacts, type JobStatus } from '../src/job-record.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startWorker, testRedis, useCleanup, waitFor } from './helpers.ts';

/**
 * What Celerity assumes of BullMQ's internals, checked against the BullMQ it
 * runs on (pinned in packages/celerity/package.json). A BullMQ upgrade that
 * breaks one of these fails here first, not in a user's history:
 * - the recorder reads the per-queue event stream, whose `active` and
 *   `completed` entries name the job but carry no time (times come from the
 *   job hash: `processedOn`, `finishedOn`);
 * - the recorder's happy path trusts the hash field `ats` (attempts started),
 *   raised on every start and never lowered by BullMQ (the limit gate lowers
 *   it for a start it holds back, which did not happen);
 * - the limits (src/rate-limits/) find a job's hash at `<prefix>:<queue>:<id>`
 *   and its lock at `<hash key>:lock` while it runs (gone once it ends), and
 *   `job.moveToDelayed` from active spends no attempt (`atm` unchanged), leaves
 *   `ats` as the move to active set it, and appends `delayed` to the stream;
 * - idempotency restores BullMQ's deduplication key, `<queue key>:de:<id>`,
 *   holding the first job's id;
 * - BullMQ refuses custom job ids that are integers (`${parseInt(id)}` === id)
 *   or hold a `:` outside its own `repeat:<key>:<ms>` form; Celerity's
 *   stricter rule (src/limits.ts) keeps callers away from both;
 * - every key BullMQ writes for a queue starts with `<prefix>:`, so that a
 *   hash tag in the prefix puts all of them in one Redis Cluster slot
 *   (`clusterHashTag` in src/broker/keys.ts; test/redis-cluster.test.ts runs
 *   on a real cluster).
 * - a delayed job's score in the queue's delayed set is its due time × 0x1000
 *   plus a counter (`bullmqDelayed` in src/broker/keys.ts), for a delay given
 *   at enqueue and for a retry's backoff alike;
 * - a field Celerity adds to a job's hash (`jobLogMarker`) stays there
 *   through BullMQ's completion;
 * - a job's log (`job.log`) answers the list's length, and refuses with
 *   "Missing key" for a job that is gone (the job log writer's cap,
 *   src/worker/job-log.ts).
 * - a job's facts read from its hash as the recorder reads them, many at
 *   once (`readJobFactsAt` in src/broker/job-hashes.ts), are those of the
 *   job `Job.fromId` builds, and make the same record, in every state;
 * - a worker's per-job collections (src/worker/bullmq-tables.ts): the lock
 *   manager's `trackedJobs`, a Map made in the constructor, and the main
 *   loop's `AsyncFifoQueue.pending`, a Set, stored in `mainLoopQueue` before
 *   the loop adds to it; replaced, they carry jobs, locks, `close()` and a
 *   processor's abort signal as before;
 * - the fair stage (src/broker/fair-keys.ts): the keys `wait`, `delayed` and
 *   the job hash with its `timestamp`; a delayed job stays in `delayed`; the
 *   promote script puts a delayed job on `wait` for FIFO and answers "not in
 *   the delayed state" (changing nothing) for any other job.
 */
useCleanup();

const flaky = defineTask({
  name: 'assume.flaky',
  retries: 1,
  backoff: { base: 1, max: 1 },
  input: z.object({ fail: z.boolean() }),
  handler: async ({ fail }, ctx) => {
    if (fail && ctx.attempt === 1) throw new Error('first attempt fails');
    return { attempt: ctx.attempt };
  },
});

describe('BullMQ internals Celerity depends on', () => {
  it('event stream entries, the job hash fields and ats', async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const handle = await app.enqueue(flaky, { fail: true });
    await startWorker(app);
    await handle.wait({ timeoutMs: 15_000 });
    const redis = testRedis();
    const entries = (await redis.xrange(app.broker.eventsKey(flaky.queue), '-', '+')) as [string, string[]][];
    const mine = entries.map(([, fields]) => Object.fromEntries(pairs(fields))).filter((e) => e.jobId === handle.id);
    const events = mine.map((e) => e.event);
    // A failed attempt with one left shows as `retrying`/`delayed`, not `failed`.
    expect(events[0]).toBe('added');
    expect(events.filter((e) => e === 'active')).toHaveLength(2);
    expect(events.at(-1)).toBe('completed');
    for (const e of mine.filter((x) => x.event === 'active' || x.event === 'completed')) {
      expect(Object.keys(e).sort()).toEqual(e.event === 'active' ? ['event', 'jobId', 'prev'] : ['event', 'jobId', 'prev', 'returnvalue']);
    }
    const queue = app.broker.queue(flaky.queue);
    const [ats, processedOn, finishedOn] = await redis.hmget(queue.toKey(handle.id), 'ats', 'processedOn', 'finishedOn');
    expect(Number(ats)).toBe(2);
    expect(Number(processedOn)).toBeGreaterThan(0);
    expect(Number(finishedOn)).toBeGreaterThanOrEqual(Number(processedOn));

    // A removal's announcement, which a delete of a job Redis let go imitates.
    await (await Job.fromId(queue, handle.id))!.remove();
    const after = (await redis.xrange(app.broker.eventsKey(flaky.queue), '-', '+')) as [string, string[]][];
    expect(after.at(-1)![1]).toEqual(bullmqRemovedEvent(handle.id, 'completed'));
  });

  it("the job hash and lock keys, and moveToDelayed's attempt counts", async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue: Queue = app.broker.queue(flaky.queue);
    const redis = testRedis();
    const prefix = app.config.prefix;
    const job = await queue.add('x', {});
    expect(queue.toKey(job.id!)).toBe(bullmqInternals.jobKey(prefix, queue.name, job.id!));
    const seen: { lock: string | null; ats: string | null }[] = [];
    const connection = createRedis(app.config, 'worker');
    const worker = new BullWorker(
      queue.name,
      async (active: Job, token?: string) => {
        const key = bullmqInternals.jobKey(prefix, queue.name, active.id!);
        seen.push({ lock: await redis.get(`${key}${bullmqInternals.lockSuffix}`), ats: await redis.hget(key, bullmqInternals.attemptsStartedField) });
        if (seen.length === 1) {
          await active.moveToDelayed(Date.now() + 50, token!);
          throw new DelayedError();
        }
        return 'done';
      },
      { connection, prefix },
    );
    try {
      await waitFor(async () => (await queue.getJobState(job.id!)) === 'completed', 10_000);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    // The lock holds the worker's token while the job runs; each move to active raised ats.
    expect(seen.map((s) => s.ats)).toEqual(['1', '2']);
    expect(seen.every((s) => typeof s.lock === 'string' && s.lock.length > 0)).toBe(true);
    const key = queue.toKey(job.id!);
    expect(await redis.exists(`${key}${bullmqInternals.lockSuffix}`)).toBe(0);
    const [atm, processedOn] = await redis.hmget(key, 'atm', bullmqInternals.processedOnField);
    // The delay spent no attempt: only the completion counted one.
    expect(Number(atm)).toBe(1);
    expect(Number(processedOn)).toBeGreaterThan(0);
    const entries = (await redis.xrange(app.broker.eventsKey(queue.name), '-', '+')) as [string, string[]][];
    const events = entries
      .map(([, fields]) => Object.fromEntries(pairs(fields)))
      .filter((e) => e.jobId === job.id)
      .map((e) => e.event);
    expect(events.slice(events.indexOf('active'))).toEqual(['active', 'delayed', 'waiting', 'active', 'completed']);
  });

  it("a worker's per-job Map and Set, replaced before it runs, carry its jobs and locks", async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue: Queue = app.broker.queue('assume-tables');
    const redis = testRedis();
    const connection = createRedis(app.config, 'worker');
    const seen: { tracked: boolean; pending: number; lock: boolean }[] = [];
    let worker!: BullWorker;
    worker = new BullWorker(
      queue.name,
      async (job: Job, token?: string, signal?: AbortSignal) => {
        const internals = worker as unknown as { lockManager: { trackedJobs: Map<string, unknown> }; mainLoopQueue: { pending: Set<unknown> } };
        const key = bullmqInternals.jobKey(app.config.prefix, queue.name, job.id!);
        seen.push({
          tracked: internals.lockManager.trackedJobs.has(job.id!),
          pending: internals.mainLoopQueue.pending.size,
          lock: (await redis.get(`${key}${bullmqInternals.lockSuffix}`)) === token,
        });
        if (job.name === 'wait-for-abort') {
          // The lock manager finds the job in its table to abort it.
          await new Promise<void>((resolve) => signal!.addEventListener('abort', () => resolve(), { once: true }));
          throw new UnrecoverableError('aborted');
        }
        return job.data.n;
      },
      { connection, prefix: app.config.prefix, concurrency: 4, autorun: false },
    );
    const replaced = useChurnTables(worker);
    const internals = worker as unknown as { lockManager: { trackedJobs: unknown }; mainLoopQueue: { pending: unknown } | null };
    expect(replaced.trackedJobs).toBe(true);
    expect(internals.lockManager.trackedJobs).toBeInstanceOf(ChurnMap);
    expect(replaced.pending()).toBe(false);
    try {
      const jobs = await queue.addBulk(Array.from({ length: 20 }, (_, n) => ({ name: 'n', data: { n } })));
      void worker.run();
      await waitFor(async () => (await queue.getJobCounts('completed')).completed === 20, 10_000);
      expect(replaced.pending()).toBe(true);
      expect(internals.mainLoopQueue!.pending).toBeInstanceOf(ChurnSet);
      expect(await Promise.all(jobs.map(async (j) => (await queue.getJob(j.id!))!.returnvalue))).toEqual(jobs.map((_, n) => n));
      expect(seen).toHaveLength(20);
      expect(seen.every((s) => s.tracked && s.lock)).toBe(true);
      // The other jobs' promises, while one runs (at concurrency 4).
      expect(Math.max(...seen.map((s) => s.pending))).toBeGreaterThanOrEqual(1);
      const aborted = await queue.add('wait-for-abort', {});
      await waitFor(() => seen.length === 21);
      expect(worker.cancelJob(aborted.id!)).toBe(true);
      await waitFor(async () => (await queue.getJobState(aborted.id!)) === 'failed', 10_000);
      await waitFor(() => (worker as unknown as { lockManager: { trackedJobs: Map<string, unknown> } }).lockManager.trackedJobs.size === 0);
    } finally {
      await worker.close();
      connection.disconnect();
    }
  });

  it("a job's facts read with its hash, many at once, are the Job.fromId job's and make the same record, in every state", async () => {
    const app = await openTestApp('sqlite', [flaky]);
    // A Celerity job retried once, then completed: attempts, a failed attempt's stack, a result.
    const retried = await app.enqueue(flaky, { fail: true });
    await startWorker(app);
    await retried.wait({ timeoutMs: 15_000 });
    const queue: Queue = app.broker.queue(flaky.queue);
    const raw: Queue = app.broker.queue('assume-raw');
    const delayed = await raw.add('d', { a: 1 }, { delay: 60_000, priority: 3, attempts: 4, backoff: { type: 'fixed', delay: 5 }, removeOnComplete: { age: 60 } });
    const deduplicated = await raw.add('dd', { b: [1, 2] }, { deduplication: { id: 'dedup-1' } });
    const progressed = await raw.add('p', {});
    await progressed.updateProgress({ done: 3, total: 9 });
    const flows = new FlowProducer({ connection: app.broker.redis, prefix: app.config.prefix });
    const flow = await flows.add({ name: 'parent', queueName: raw.name, data: { p: true }, children: [{ name: 'child', queueName: raw.name, data: { c: true } }] });
    await flows.close();
    const toFail = await raw.add('fail', {}, { attempts: 1 });
    const toComplete = await raw.add('ok', { n: 1 });
    // Started once, then held back without spending the attempt: ats 1, atm 0.
    const held = await raw.add('hold', {});
    const connection = createRedis(app.config, 'worker');
    const worker = new BullWorker(
      raw.name,
      async (job: Job, token?: string) => {
        if (job.name === 'fail') throw new UnrecoverableError('no way');
        if (job.name === 'hold') {
          await job.moveToDelayed(Date.now() + 60_000, token!);
          throw new DelayedError();
        }
        return { echoed: job.data };
      },
      { connection, prefix: app.config.prefix },
    );
    try {
      await waitFor(async () => (await raw.getJobState(toFail.id!)) === 'failed' && (await raw.getJobState(toComplete.id!)) === 'completed' && (await raw.getJobState(held.id!)) === 'delayed', 10_000);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    await testRedis().hset(raw.toKey(toComplete.id!), jobLogMarker.field, '1');
    const facts = (j: JobFacts) => ({
      id: j.id,
      name: j.name,
      data: j.data,
      attempts: j.opts.attempts,
      attemptsStarted: j.attemptsStarted,
      attemptsMade: j.attemptsMade,
      returnvalue: j.returnvalue,
      failedReason: j.failedReason,
      stacktrace: j.stacktrace,
      progress: j.progress,
      timestamp: j.timestamp,
      processedOn: j.processedOn,
      finishedOn: j.finishedOn,
    });
    const statuses: JobStatus[] = ['queued', 'retrying', 'started', 'completed', 'failed', 'cancelled'];
    const cases: [Queue, string][] = [
      [queue, retried.id],
      ...[delayed, deduplicated, progressed, toFail, toComplete, held, flow.job, ...(flow.children ?? []).map((c) => c.job)].map((j): [Queue, string] => [raw, j.id!]),
    ];
    for (const [q, id] of cases) {
      const expected = await Job.fromId(q, id);
      expect(expected, id).toBeDefined();
      const [read] = await readJobFactsAt(await q.getBackend().client, (jobId) => q.toKey(jobId), [id]);
      expect(facts(read!.job!), `${q.name}:${id}`).toEqual(facts(expected!));
      for (const status of statuses) expect(recordFromJob(read!.job!, q.name, status), `${q.name}:${id} as ${status}`).toEqual(recordFromJob(expected!, q.name, status));
    }
    // Several at once, in order, a job that is gone among them; the log marker Celerity adds to the hash.
    const many = await readJobFactsAt(await raw.getBackend().client, (jobId) => raw.toKey(jobId), [toComplete.id!, 'gone', toFail.id!]);
    expect(many.map((r) => r.job?.id)).toEqual([toComplete.id, undefined, toFail.id]);
    expect(many.map((r) => r.logged)).toEqual([true, false, false]);
  });

  it('every key of a queue and of its jobs starts with the prefix', async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue = app.broker.queue(flaky.queue);
    for (const key of Object.values(queue.keys)) expect(key.startsWith(`${app.config.prefix}:`), key).toBe(true);
    const handle = await app.enqueue(flaky, { fail: true }, { idempotencyKey: 'assume-prefix' });
    await startWorker(app);
    await handle.wait({ timeoutMs: 15_000 });
    const redis = testRedis();
    // Whatever names the job (its hash, its log...) lies under the prefix, wherever the id sits in the key.
    const written = await redis.keys(`*${handle.id}*`);
    expect(written.length).toBeGreaterThanOrEqual(2);
    for (const key of written) expect(key.startsWith(`${app.config.prefix}:`), key).toBe(true);
  });

  it("a delayed job's due time in the delayed set, and job.log's answers", async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue: Queue = app.broker.queue(flaky.queue);
    const redis = testRedis();
    const a = await queue.add('x', {}, { delay: 60_000 });
    const b = await queue.add('x', {}, { delay: 60_000, timestamp: a.timestamp });
    const key = bullmqDelayed.key(app.config.prefix, flaky.queue);
    expect(bullmqDelayed.dueAt(Number(await redis.zscore(key, a.id!)))).toBe(a.timestamp + 60_000);
    expect(bullmqDelayed.dueAt(Number(await redis.zscore(key, b.id!)))).toBe(a.timestamp + 60_000);
    // A retry's backoff: moved to the delayed set at (failure time + backoff).
    const slow = await queue.add('y', {}, { attempts: 2, backoff: { type: 'fixed', delay: 3_600_000 } });
    const worker = new Worker(
      flaky.queue,
      async () => {
        throw new Error('later');
      },
      { connection: redis.duplicate({ maxRetriesPerRequest: null }), prefix: app.config.prefix },
    );
    const failedAt = await new Promise<number>((resolve) => worker.on('failed', () => resolve(Date.now())));
    await worker.close();
    const due = bullmqDelayed.dueAt(Number(await redis.zscore(key, slow.id!)));
    expect(due).toBeGreaterThanOrEqual(failedAt - 1_000 + 3_600_000);
    expect(due).toBeLessThanOrEqual(failedAt + 3_600_000);

    // The log marker: set on the job's hash (queueQualifiedName:id is the hash's key), kept when BullMQ finishes the job.
    const marked = await queue.add('z', {});
    expect(`${marked.queueQualifiedName}:${marked.id}`).toBe(queue.toKey(marked.id!));
    await redis.eval(jobLogMarker.script, 1, queue.toKey(marked.id!), jobLogMarker.field);
    const finisher = new Worker(flaky.queue, async (job) => (job.id === marked.id ? 'done' : Promise.reject(new Error('not this one'))), {
      connection: redis.duplicate({ maxRetriesPerRequest: null }),
      prefix: app.config.prefix,
    });
    await waitFor(async () => (await queue.getJobState(marked.id!)) === 'completed');
    await finisher.close();
    expect(await redis.hget(queue.toKey(marked.id!), jobLogMarker.field)).toBe('1');
    expect((await Job.fromId(queue, marked.id!))?.returnvalue).toBe('done');
    // Not on a job that is gone.
    await redis.eval(jobLogMarker.script, 1, queue.toKey('nosuchjob'), jobLogMarker.field);
    expect(await redis.exists(queue.toKey('nosuchjob'))).toBe(0);

    expect(await a.log('one')).toBe(1);
    expect(await a.log('two')).toBe(2);
    await a.remove();
    await expect(a.log('three')).rejects.toThrow(/^Missing key/);
  });

  it('the deduplication key and the refused integer ids', async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue: Queue = app.broker.queue(flaky.queue);
    const job = await queue.add('x', {}, { deduplication: { id: 'k1', ttl: 60_000 } });
    expect(await testRedis().get(`${queue.toKey('de')}:k1`)).toBe(job.id);
    await expect(queue.add('x', {}, { jobId: '42' })).rejects.toThrow();
    await expect(queue.add('x', {}, { jobId: '-1' })).rejects.toThrow();
    await expect(queue.add('x', {}, { jobId: 'a:1' })).rejects.toThrow();
    // The scheduler's own form, which Celerity's path ids must still read.
    expect((await queue.add('x', {}, { jobId: 'repeat:a:1' })).id).toBe('repeat:a:1');
    await waitFor(async () => (await Job.fromId(queue, 'repeat:a:1')) !== undefined);
  });
});

describe('BullMQ internals the fair stage depends on', () => {
  it('wait, delayed, the job timestamp and the promote script', async () => {
    const app = await openTestApp('sqlite', [flaky]);
    const queue: Queue = app.broker.queue(flaky.queue);
    const { prefix } = app.config;
    const redis = testRedis();
    const first = await queue.add('x', {}, { delay: 3_600_000, timestamp: 1_700_000_000_123 });
    const second = await queue.add('x', {}, { delay: 3_600_000 });
    expect(await redis.zscore(fairKeys.bullDelayed(prefix, flaky.queue), first.id!)).not.toBeNull();
    expect(await redis.hget(`${fairKeys.bullJobPrefix(prefix, flaky.queue)}${first.id}`, 'timestamp')).toBe('1700000000123');
    const backend = queue.backend as unknown as { promote(id: string): Promise<void> };
    await backend.promote(first.id!);
    await backend.promote(second.id!);
    // Workers take from the tail: promoted first, taken first.
    expect(await redis.lrange(fairKeys.bullWait(prefix, flaky.queue), 0, -1)).toEqual([second.id, first.id]);
    expect(await redis.zcard(fairKeys.bullDelayed(prefix, flaky.queue))).toBe(0);
    await expect(backend.promote(first.id!)).rejects.toThrow(/is not in the delayed state/);
    await expect(backend.promote('no-such-job')).rejects.toThrow(/is not in the delayed state/);
    expect(await redis.llen(fairKeys.bullWait(prefix, flaky.queue))).toBe(2);
    // The tenants view: `completed` scored by finishedOn; `data` holds the envelope.
    await queue.obliterate({ force: true });
    const done = await app.enqueue(flaky, { fail: false }, { tenant: 'acme' });
    await startWorker(app);
    await done.wait({ timeoutMs: 10_000 });
    const [data, finishedOn] = await redis.hmget(`${fairKeys.bullJobPrefix(prefix, flaky.queue)}${done.id}`, 'data', 'finishedOn');
    expect(JSON.parse(data!).tenant).toBe('acme');
    expect(await redis.zscore(fairKeys.bullCompleted(prefix, flaky.queue), done.id)).toBe(finishedOn);
    expect(await redis.type(fairKeys.bullActive(prefix, flaky.queue))).toMatch(/^(list|none)$/);
  });
});

function pairs(fields: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < fields.length; i += 2) out.push([fields[i]!, fields[i + 1]!]);
  return out;
}
