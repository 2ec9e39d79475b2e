import { Job, type Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { fairKeys } from '../src/broker/fair-keys.ts';
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
 *   raised on every start and never lowered;
 * - idempotency restores BullMQ's deduplication key, `<queue key>:de:<id>`,
 *   holding the first job's id;
 * - BullMQ refuses custom job ids that are integers (`${parseInt(id)}` === id)
 *   or hold a `:` outside its own `repeat:<key>:<ms>` form; Celerity's
 *   stricter rule (src/limits.ts) keeps callers away from both;
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
