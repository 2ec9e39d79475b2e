/**
 * CELERITY_RECORDER=off: a process that runs jobs (or serves the API)
 * without writing the history. Its jobs still run; the history is written
 * by whichever process records, even later, from the event streams.
 */
import { describe, expect, it } from 'vitest';
import { RECORDER_GROUP } from '../src/store/recorder.ts';
import { openTestApp, startRecorder, testRedis, useCleanup, waitFor } from './helpers.ts';
import { relSleep } from './fixtures/reliability-app.ts';
import { spawnWorker, waitForWorkers } from './process-helpers.ts';

useCleanup();

describe('CELERITY_RECORDER=off', () => {
  it('runs jobs without recording them; a recorder started later writes their history', async () => {
    const app = await openTestApp('sqlite', [relSleep]);
    const worker = spawnWorker(app.env, { env: { CELERITY_RECORDER: 'off' } });
    const queue = app.broker.queue(relSleep.queue);
    await waitForWorkers(queue, 1, 20_000, [worker]);

    const handle = await app.enqueue(relSleep, { ms: 1 });
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('completed');

    // No recorder ever read the stream: its consumer group was never made.
    const redis = testRedis();
    try {
      const groups = (await redis.xinfo('GROUPS', `${app.env.prefix}:${relSleep.queue}:events`)) as unknown[][];
      expect(groups.map((g) => g[1])).not.toContain(RECORDER_GROUP);
    } finally {
      redis.disconnect();
    }
    expect((await app.listJobs({ limit: 10 })).jobs).toEqual([]);

    // The events wait in the stream for a recorder.
    await startRecorder(app);
    const row = await waitFor(async () => (await app.listJobs({ limit: 10 })).jobs.find((j) => j.id === handle.id && j.status === 'completed'), 15_000);
    expect(row.result).toMatchObject({ attempt: 1 });
  }, 40_000);
});
