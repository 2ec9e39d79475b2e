import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/task.ts';
import { openTestApp, sleep, startRecorder, startWorker, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const echo = defineTask({ name: 'echo', input: z.object({ n: z.number() }), handler: async ({ n }) => ({ n }) });

describe('result retention in Redis', () => {
  it('drops a finished job from Redis after CELERITY_RESULT_TTL, and its record is then read from SQL', async () => {
    const app = await openTestApp('sqlite', [echo], { resultTtl: 1 });
    await startWorker(app);
    await startRecorder(app);
    const first = await app.enqueue(echo, { n: 1 });
    expect((await first.wait()).result).toEqual({ n: 1 });
    const queue = app.broker.queue('default');
    expect(await queue.getJob(first.id)).toBeTruthy();
    await waitFor(async () => ((await app.store.get(first.id))?.status === 'completed' ? true : undefined));

    await sleep(1_100);
    // BullMQ removes expired finished jobs as later jobs finish.
    await (await app.enqueue(echo, { n: 2 })).wait();
    await waitFor(async () => ((await queue.getJob(first.id)) ? undefined : true), 5_000);

    const record = await app.getJob(first.id);
    expect(record).toMatchObject({ id: first.id, status: 'completed', result: { n: 1 }, attempts: 1 });
  });
});
