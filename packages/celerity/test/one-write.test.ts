/**
 * The commands a producer issues together (in one turn of the event loop and
 * its promise continuations) leave in one socket write
 * (src/broker/connection.ts, `writeTogether`), a burst of enqueues included;
 * a worker's moves of jobs that end together leave a few to a write.
 * Counted at the socket: each `_write` or `_writev` call is one system call,
 * each chunk one command.
 */
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRedis, inOneWrite, waitReady, writeTogether } from '../src/broker/connection.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, randomToken, TEST_REDIS_URL, useCleanup, waitFor } from './helpers.ts';

useCleanup();

/**
 * Records what goes through a socket's write calls from now on: the
 * commands (chunks) of each write, in order; `calls` and `chunks` are their
 * count and sum.
 */
function watchWrites(socket: Socket): { readonly calls: number; readonly chunks: number; sizes: number[]; stop(): void } {
  const sizes: number[] = [];
  const raw = socket as unknown as { _write: (...a: unknown[]) => unknown; _writev: (chunks: unknown[], cb: unknown) => unknown };
  const write = raw._write;
  const writev = raw._writev;
  raw._write = function (this: unknown, ...args: unknown[]) {
    sizes.push(1);
    return write.apply(this, args);
  };
  raw._writev = function (this: unknown, chunks: unknown[], cb: unknown) {
    sizes.push(chunks.length);
    return writev.call(this, chunks, cb);
  };
  return {
    sizes,
    get calls() {
      return sizes.length;
    },
    get chunks() {
      return sizes.reduce((a, n) => a + n, 0);
    },
    stop() {
      raw._write = write;
      raw._writev = writev;
    },
  };
}

const noted = defineTask({
  name: 'one-write.noted',
  input: z.object({ n: z.number() }),
  handler: async ({ n }) => n,
});

describe('the commands issued together leave in one socket write', () => {
  it('sends the commands issued together in one write, and each gets its own reply or error', async () => {
    const redis = createRedis({ brokerUrl: TEST_REDIS_URL, redisCluster: 'off' }, 'producer') as Redis;
    const key = `one-write:${randomToken()}`;
    try {
      await waitReady(redis, 5_000);
      await redis.set(key, 'not a number');
      const corked = watchWrites(redis.stream as Socket);
      const replies = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => inOneWrite(redis, () => (i === 25 ? redis.incr(key).then(String) : redis.echo(`e${i}`)))));
      corked.stop();
      expect({ calls: corked.calls, chunks: corked.chunks }).toEqual({ calls: 1, chunks: 50 });
      // One command refused in the middle fails alone.
      expect(replies[25]).toMatchObject({ status: 'rejected', reason: { message: expect.stringMatching(/not an integer/) } });
      const others = replies.filter((_, i) => i !== 25);
      expect(others).toEqual(
        Array.from({ length: 50 }, (_, i) => i)
          .filter((i) => i !== 25)
          .map((i) => ({ status: 'fulfilled', value: `e${i}` })),
      );
      // The same commands sent as they come: a write each (what the cork saves).
      const loose = watchWrites(redis.stream as Socket);
      await Promise.all(Array.from({ length: 50 }, (_, i) => redis.echo(`e${i}`)));
      loose.stop();
      expect(loose.calls).toBeGreaterThan(10);
    } finally {
      await redis.del(key);
      redis.disconnect();
    }
  });

  it("joins the commands of a turn's callbacks in one write (an API's requests), where a worker's cork sends each callback's apart", async () => {
    const redis = createRedis({ brokerUrl: TEST_REDIS_URL, redisCluster: 'off' }, 'producer') as Redis;
    try {
      await waitReady(redis, 5_000);
      // Timers of one delay set together run in one timers phase, each its
      // own callback with its continuations after it, as the requests an
      // API reads in one turn do.
      const inCallbacks = (issue: (i: number) => Promise<string>) =>
        Promise.all(Array.from({ length: 5 }, (_, i) => new Promise<string>((resolve, reject) => setTimeout(() => issue(i).then(resolve, reject), 1))));
      const turn = watchWrites(redis.stream as Socket);
      const replies = await inCallbacks((i) => inOneWrite(redis, () => redis.echo(`t${i}`)));
      turn.stop();
      expect(turn.sizes).toEqual([5]);
      expect(replies).toEqual(['t0', 't1', 't2', 't3', 't4']);
      const continuations = watchWrites(redis.stream as Socket);
      await inCallbacks((i) => {
        writeTogether(redis);
        return redis.echo(`c${i}`);
      });
      continuations.stop();
      expect(continuations.sizes).toEqual([1, 1, 1, 1, 1]);
    } finally {
      redis.disconnect();
    }
  });

  it('with a bound, sends the commands issued together that many to a write, in order', async () => {
    const redis = createRedis({ brokerUrl: TEST_REDIS_URL, redisCluster: 'off' }, 'producer') as Redis;
    try {
      await waitReady(redis, 5_000);
      const writes = watchWrites(redis.stream as Socket);
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) => {
          writeTogether(redis, 8);
          return redis.echo(`e${i}`);
        }),
      );
      writes.stop();
      expect(writes.sizes).toEqual([8, 8, 4]);
      expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => `e${i}`));
    } finally {
      redis.disconnect();
    }
  });

  it("sends a worker's moves of jobs that end together a few to a write, every job completed", async () => {
    const app = await openTestApp('sqlite', [noted], { recorder: 'off' });
    const queue = app.broker.queue(noted.queue);
    await queue.pause();
    const jobs = 300;
    await Promise.all(Array.from({ length: jobs }, (_, n) => app.enqueue(noted, { n })));
    const worker = app.createWorker({ concurrency: 50 });
    worker.start();
    onCleanup(() => worker.close(0));
    await worker.ready();
    // The connection on which BullMQ sends the worker's moves (private: what is counted here is its socket).
    const connection = (worker as unknown as { connection: Redis }).connection;
    const writes = watchWrites(connection.stream as Socket);
    await queue.resume();
    await waitFor(async () => (await queue.getJobCounts('completed')).completed === jobs, 20_000, 20);
    writes.stop();
    // One move per job, and the worker's other commands meanwhile (its first
    // fetches, one per free slot, and the like): a write per move would be
    // `jobs` writes at least (351 for 351 commands, measured; 95 with the bound).
    expect(writes.chunks).toBeGreaterThanOrEqual(jobs);
    expect(writes.calls).toBeLessThan(jobs / 2);
    // A few to a write, not all those of a turn: 8 moves (MOVES_PER_WRITE)
    // and what other commands joined them (8 to 13 measured), where all of
    // a turn's made writes of 50.
    expect(Math.max(...writes.sizes)).toBeLessThanOrEqual(20);
  });

  it('sends a burst of enqueues in one write, every job added', async () => {
    const app = await openTestApp('sqlite', [noted]);
    // The first add loads BullMQ's scripts; the burst is measured after it.
    await app.enqueue(noted, { n: -1 });
    const writes = watchWrites((app.broker.redis as Redis).stream as Socket);
    const handles = await Promise.all(Array.from({ length: 100 }, (_, n) => app.enqueue(noted, { n })));
    writes.stop();
    expect({ calls: writes.calls, chunks: writes.chunks }).toEqual({ calls: 1, chunks: 100 });
    const counts = await app.broker.queue(noted.queue).getJobCounts('waiting');
    expect(counts.waiting).toBe(101);
    expect(new Set(handles.map((h) => h.id)).size).toBe(100);
  });
});
