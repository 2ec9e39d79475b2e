import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/task.ts';
import { LARGE_ENTRY_BYTES, readBatch, waitForEntries, type Batch, type Idle } from '../src/store/recorder-read.ts';
import { jobLogMarker } from '../src/broker/keys.ts';
import type { Redis } from 'ioredis';
import { createRedis, type RedisClient } from '../src/broker/connection.ts';
import { Recorder } from '../src/store/recorder.ts';
import { deleteRedisKeys, onCleanup, openTestApp, randomToken, startRecorder, startWorker, stores, testRedis, useCleanup, waitFor } from './helpers.ts';

/**
 * The recorder's one-script read (src/store/recorder-read.ts): what it
 * delivers, the hash fields it takes with the entries, and its idle answer,
 * on real BullMQ entries and on hand-made ones for the edges.
 */
useCleanup();

const echo = defineTask({ name: 'read.echo', input: z.object({ n: z.number() }), handler: async ({ n }) => ({ n }) });

const GROUP = 'read-test';

/** A result larger than the script puts in its JSON text. */
const big = defineTask({ name: 'read.big', input: z.object({ size: z.number() }), handler: async ({ size }) => ({ text: 'x'.repeat(size) }) });

async function streamOf(redis: Redis): Promise<{ key: string; jobKeyPrefix: string }> {
  const prefix = `rt-${randomToken()}`;
  onCleanup(() => deleteRedisKeys(prefix).then(() => {}));
  const stream = { key: `${prefix}:q:events`, jobKeyPrefix: `${prefix}:q:` };
  await redis.xgroup('CREATE', stream.key, GROUP, '0', 'MKSTREAM');
  return stream;
}

/** `redis`, but each entry read apart (`XRANGE`) is trimmed just before: as if the stream's length cap took it after its delivery. */
function trimmingBeforeReadApart<R extends Redis | RedisClient>(redis: R): R {
  return new Proxy(redis, {
    get(target, prop, receiver) {
      if (prop !== 'xrange') return Reflect.get(target, prop, receiver);
      return async (key: string, start: string, end: string) => {
        await target.xdel(key, start);
        return target.xrange(key, start, end);
      };
    },
  });
}

function asBatch(read: Batch | Idle | null): Batch {
  if (read === null || 'idle' in read) throw new Error(`expected a batch, got ${JSON.stringify(read)}`);
  return read;
}

describe('the recorder read script', () => {
  it('delivers BullMQ entries with the happy path fields of each job that started or ended, as the hash holds them', async () => {
    const app = await openTestApp('sqlite', [echo]);
    const redis = testRedis();
    const queue = app.broker.queue(echo.queue);
    await redis.xgroup('CREATE', queue.keys.events!, GROUP, '0', 'MKSTREAM');
    const handle = await app.enqueue(echo, { n: 1 });
    await startWorker(app);
    await handle.wait({ timeoutMs: 15_000 });
    const stream = { key: queue.keys.events!, jobKeyPrefix: queue.toKey('') };
    const batch = asBatch(await readBatch(redis, [stream], GROUP, 'c1', 100, '>'));
    const raw = (await redis.xrange(stream.key, '-', '+')) as [string, string[]][];
    expect(batch.streams).toEqual([[stream.key, raw]]);
    const [ats, processedOn, finishedOn] = await redis.hmget(queue.toKey(handle.id), 'ats', 'processedOn', 'finishedOn');
    expect(batch.facts.get(stream.key)).toEqual(new Map([[handle.id, { started: Number(ats), processedOn: Number(processedOn), finishedOn: Number(finishedOn), logged: false }]]));
    // Delivered: pending for this consumer, not again for new reads.
    expect(((await redis.xpending(stream.key, GROUP)) as [number])[0]).toBe(raw.length);
    expect(await readBatch(redis, [stream], GROUP, 'c1', 100, '>')).toEqual({ idle: [raw.at(-1)![0]] });
  });

  it('reads pending entries again from 0, a deleted one with a null body, and a hash that is gone as null facts', async () => {
    const redis = testRedis();
    const stream = await streamOf(redis);
    await redis.hset(`${stream.jobKeyPrefix}1`, 'ats', '1', 'processedOn', '10', jobLogMarker.field, '1');
    const a = (await redis.xadd(stream.key, '*', 'event', 'active', 'jobId', '1', 'prev', 'waiting'))!;
    const b = (await redis.xadd(stream.key, '*', 'event', 'completed', 'jobId', '2', 'returnvalue', '{"é":"\\u0000"}', 'prev', 'active'))!;
    const c = (await redis.xadd(stream.key, '*', 'event', 'drained', 'id', '0'))!;
    const first = asBatch(await readBatch(redis, [stream], GROUP, 'c1', 100, '>'));
    expect(first.streams[0]![1].map(([id]) => id)).toEqual([a, b, c]);
    expect(first.streams[0]![1][1]![1]).toEqual(['event', 'completed', 'jobId', '2', 'returnvalue', '{"é":"\\u0000"}', 'prev', 'active']);
    expect(first.facts.get(stream.key)).toEqual(
      new Map([
        ['1', { started: 1, processedOn: 10, finishedOn: undefined, logged: true }],
        ['2', null],
      ]),
    );
    await redis.xdel(stream.key, b);
    const again = asBatch(await readBatch(redis, [stream], GROUP, 'c1', 100, '0'));
    expect(again.streams[0]![1]).toEqual([
      [a, ['event', 'active', 'jobId', '1', 'prev', 'waiting']],
      [b, null],
      [c, ['event', 'drained', 'id', '0']],
    ]);
    // Another consumer's pending entries are not this one's.
    expect(await readBatch(redis, [stream], GROUP, 'c2', 100, '0')).toBeNull();
    await redis.xack(stream.key, GROUP, a, b, c);
    expect(await readBatch(redis, [stream], GROUP, 'c1', 100, '0')).toBeNull();
  });

  it('reads several streams up to COUNT each; idle, gives each last id, and the wait wakes on the next entry only', async () => {
    const redis = testRedis();
    const one = await streamOf(redis);
    const two = await streamOf(redis);
    for (let i = 0; i < 5; i++) await redis.xadd(one.key, '*', 'event', 'added', 'jobId', `a${i}`);
    const onlyTwo = await redis.xadd(two.key, '*', 'event', 'added', 'jobId', 'b0');
    const batch = asBatch(await readBatch(redis, [one, two], GROUP, 'c1', 3, '>'));
    expect(batch.streams.map(([key, entries]) => [key, entries.length])).toEqual([
      [one.key, 3],
      [two.key, 1],
    ]);
    // No job started or ended: no facts (cjson writes the empty list as an object).
    expect(batch.facts.get(one.key)).toEqual(new Map());
    asBatch(await readBatch(redis, [one, two], GROUP, 'c1', 3, '>'));
    const idle = (await readBatch(redis, [one, two], GROUP, 'c1', 3, '>')) as Idle;
    const lastOfOne = ((await redis.xrevrange(one.key, '+', '-', 'COUNT', 1)) as [string, string[]][])[0]![0];
    expect(idle).toEqual({ idle: [lastOfOne, onlyTwo] });

    // The wait returns at its timeout when nothing comes...
    let t = Date.now();
    await waitForEntries(redis, [one.key, two.key], idle.idle, 200);
    expect(Date.now() - t).toBeGreaterThanOrEqual(150);
    // ...and at once for an entry past the ids, which the next read delivers.
    const waiting = waitForEntries(testRedis(), [one.key, two.key], idle.idle, 5_000);
    t = Date.now();
    const next = await redis.xadd(two.key, '*', 'event', 'added', 'jobId', 'b1');
    await waiting;
    expect(Date.now() - t).toBeLessThan(2_000);
    const after = asBatch(await readBatch(redis, [one, two], GROUP, 'c1', 3, '>'));
    expect(after.streams).toEqual([[two.key, [[next, ['event', 'added', 'jobId', 'b1']]]]]);
  });

  it('reads an entry too large for the JSON text on its own, with its facts, and a large one deleted meanwhile as deleted', async () => {
    const redis = testRedis();
    const stream = await streamOf(redis);
    await redis.hset(`${stream.jobKeyPrefix}7`, 'ats', '1', 'processedOn', '5', 'finishedOn', '6');
    const value = JSON.stringify({ text: 'é'.repeat(LARGE_ENTRY_BYTES) });
    const small = (await redis.xadd(stream.key, '*', 'event', 'active', 'jobId', '7', 'prev', 'waiting'))!;
    const large = (await redis.xadd(stream.key, '*', 'event', 'completed', 'jobId', '7', 'returnvalue', value, 'prev', 'active'))!;
    // The large entry is left out of the script's JSON text and read apart.
    const readApart: string[] = [];
    const counting = new Proxy(redis, {
      get(target, prop, receiver) {
        if (prop !== 'xrange') return Reflect.get(target, prop, receiver);
        return (key: string, start: string, end: string) => {
          readApart.push(start);
          return target.xrange(key, start, end);
        };
      },
    });
    const batch = asBatch(await readBatch(counting, [stream], GROUP, 'c1', 100, '>'));
    expect(readApart).toEqual([large]);
    expect(batch.streams).toEqual([
      [
        stream.key,
        [
          [small, ['event', 'active', 'jobId', '7', 'prev', 'waiting']],
          [large, ['event', 'completed', 'jobId', '7', 'returnvalue', value, 'prev', 'active']],
        ],
      ],
    ]);
    expect(batch.facts.get(stream.key)?.get('7')).toEqual({ started: 1, processedOn: 5, finishedOn: 6, logged: false });
    // Delivered, then trimmed before its read apart: it reads as an entry deleted after delivery.
    const gone = (await redis.xadd(stream.key, '*', 'event', 'completed', 'jobId', '8', 'returnvalue', value))!;
    const trimming = trimmingBeforeReadApart(redis);
    const after = asBatch(await readBatch(trimming, [stream], GROUP, 'c1', 100, '>'));
    expect(after.streams[0]![1]).toEqual([[gone, null]]);
  });

  it('an empty stream that never had entries is idle at 0-0', async () => {
    const redis = testRedis();
    const stream = await streamOf(redis);
    expect(await readBatch(redis, [stream], GROUP, 'c1', 10, '>')).toEqual({ idle: ['0-0'] });
    expect(await readBatch(redis, [stream], GROUP, 'c1', 10, '0')).toBeNull();
  });
});

describe.each(stores)('a large result through the recorder (%s store)', (kind) => {
  it('records a result far larger than the JSON text takes, equal to the live record', async () => {
    const app = await openTestApp(kind, [big], { recorderYield: 0 });
    await startRecorder(app);
    await startWorker(app);
    const handles = await Promise.all([1, 2, 3].map((n) => app.enqueue(big, { size: LARGE_ENTRY_BYTES * 4 + n })));
    for (const h of handles) {
      const row = await waitFor(async () => {
        const r = await app.store.get(h.id);
        return r?.status === 'completed' ? r : null;
      });
      expect((row.result as { text: string }).text).toHaveLength(((await app.getJob(h.id))!.input as { size: number }).size);
      expect(row.result).toEqual((await app.getJob(h.id))!.result);
    }
  });

  it('rewrites the queue from Redis when an entry was trimmed after its delivery: the job still ends recorded', async () => {
    const app = await openTestApp(kind, [big], { recorderYield: 0 });
    const store = await app.openStore();
    const connection = createRedis(app.config, 'worker');
    onCleanup(() => connection.disconnect());
    // Each large entry is trimmed between the batch's read and its read apart: its body comes back nil.
    const trimming = trimmingBeforeReadApart(connection);
    const recorder = new Recorder({ redis: trimming, store, queues: [app.broker.queue(big.queue)], logger: app.logger, batchSize: 100, prefix: app.config.prefix });
    onCleanup(() => recorder.stop());
    await recorder.start();
    await startWorker(app);
    const handle = await app.enqueue(big, { size: LARGE_ENTRY_BYTES * 2 });
    await handle.wait({ timeoutMs: 15_000 });
    // Without the rewrite the row would stay started: its `completed` entry is gone.
    const row = await waitFor(async () => {
      const r = await app.store.get(handle.id);
      return r?.status === 'completed' ? r : null;
    });
    expect(row.result).toEqual((await app.getJob(handle.id))!.result);
  });
});
