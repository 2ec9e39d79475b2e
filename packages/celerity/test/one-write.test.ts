/**
 * The commands a producer issues together (in one turn of the event loop and
 * its promise continuations) leave in one socket write
 * (src/broker/connection.ts, `writeTogether`), a burst of enqueues included.
 * Counted at the socket: each `_write` or `_writev` call is one system call,
 * each chunk one command.
 */
import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRedis, inOneWrite, waitReady } from '../src/broker/connection.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, randomToken, TEST_REDIS_URL, useCleanup } from './helpers.ts';

useCleanup();

/** Counts what goes through a socket's write calls from now on. */
function watchWrites(socket: Socket): { calls: number; chunks: number; stop(): void } {
  const counts = { calls: 0, chunks: 0, stop: () => {} };
  const raw = socket as unknown as { _write: (...a: unknown[]) => unknown; _writev: (chunks: unknown[], cb: unknown) => unknown };
  const write = raw._write;
  const writev = raw._writev;
  raw._write = function (this: unknown, ...args: unknown[]) {
    counts.calls += 1;
    counts.chunks += 1;
    return write.apply(this, args);
  };
  raw._writev = function (this: unknown, chunks: unknown[], cb: unknown) {
    counts.calls += 1;
    counts.chunks += chunks.length;
    return writev.call(this, chunks, cb);
  };
  counts.stop = () => {
    raw._write = write;
    raw._writev = writev;
  };
  return counts;
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
