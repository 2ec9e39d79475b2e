/**
 * A job id the caller chose (`jobId`, the API's `options.job_id`): submitting
 * it again returns that job and says it did not create one, on every path
 * (a plain queue, a fair queue, enqueueMany, the API), whatever became of
 * the first job.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startWorker, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({ name: 'ids.add', input: z.object({ a: z.number(), b: z.number() }), handler: async ({ a, b }) => ({ sum: a + b }) });
const fairAdd = defineTask({ name: 'ids.fair', queue: 'fair', input: z.object({ a: z.number() }), handler: async ({ a }) => a });

describe('a caller-chosen job id', () => {
  it('enqueue: the second call returns the first job and says it created nothing', async () => {
    const app = await openTestApp('sqlite', [add]);
    const first = await app.enqueue(add, { a: 1, b: 2 }, { jobId: 'order-1' });
    const again = await app.enqueue(add, { a: 5, b: 5 }, { jobId: 'order-1' });
    expect([first.id, first.created]).toEqual(['order-1', true]);
    expect([again.id, again.created]).toEqual(['order-1', false]);
    // Nothing was written by the second call: the job keeps the first input.
    expect((await app.broker.queue(add.queue).getJob('order-1'))?.data.input).toEqual({ a: 1, b: 2 });
    // An id of our own making is new every time.
    expect((await app.enqueue(add, { a: 1, b: 1 })).created).toBe(true);
  });

  it('on a fair queue too, and in enqueueMany beside new ids', async () => {
    const app = await openTestApp('sqlite', [add, fairAdd], { fairQueues: 'fair' });
    expect((await app.enqueue(fairAdd, { a: 1 }, { jobId: 'fair-1', tenant: 'acme' })).created).toBe(true);
    expect((await app.enqueue(fairAdd, { a: 2 }, { jobId: 'fair-1', tenant: 'acme' })).created).toBe(false);
    await app.enqueue(add, { a: 1, b: 1 }, { jobId: 'plain-1' });
    const handles = await app.enqueueMany([
      { task: add, input: { a: 1, b: 1 }, options: { jobId: 'plain-1' } },
      { task: add, input: { a: 2, b: 2 }, options: { jobId: 'plain-2' } },
      { task: add, input: { a: 3, b: 3 } },
      { task: fairAdd, input: { a: 3 }, options: { jobId: 'fair-1' } },
    ]);
    expect(handles.map((h) => [h.id === 'plain-1' || h.id === 'plain-2' || h.id === 'fair-1' ? h.id : 'new', h.created])).toEqual([
      ['plain-1', false],
      ['plain-2', true],
      ['new', true],
      ['fair-1', false],
    ]);
  });

  it("the API answers a resubmitted job_id as a replay, with the first job's status", async () => {
    const app = await openTestApp('sqlite', [add], { auth: 'off' });
    await startWorker(app);
    const api = await buildServer(app, { logger: false });
    const submit = () => api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'ids.add', input: { a: 2, b: 3 }, options: { job_id: 'invoice-7' } } });
    const first = await submit();
    expect(first.statusCode).toBe(202);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    await waitFor(async () => (await app.getJob('invoice-7'))?.status === 'completed', 10_000);
    const again = await submit();
    expect(again.statusCode).toBe(202);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json()).toMatchObject({ job_id: 'invoice-7', status: 'completed' });
    await api.close();
  });
});
