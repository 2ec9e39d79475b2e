import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { IdempotencyConflictError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const charge = defineTask({
  name: 'pay.charge',
  input: z.object({ order: z.string(), cents: z.number().int() }),
  handler: async ({ order, cents }) => ({ order, cents }),
});

describe('idempotency', () => {
  it('the same key gives one job; the same key with another input is refused and enqueues nothing', async () => {
    const app = await openTestApp('sqlite', [charge]);
    const first = await app.enqueue(charge, { order: 'A1', cents: 500 }, { idempotencyKey: 'order-A1' });
    // Key order of the input does not matter.
    const again = await app.enqueueByName('pay.charge', { cents: 500, order: 'A1' }, { idempotencyKey: 'order-A1' });
    expect(first.created).toBe(true);
    expect(again.created).toBe(false);
    expect(again.id).toBe(first.id);
    await expect(app.enqueue(charge, { order: 'A1', cents: 999 }, { idempotencyKey: 'order-A1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    const other = await app.enqueue(charge, { order: 'A1', cents: 500 }, { idempotencyKey: 'order-A1-retry' });
    expect(other.id).not.toBe(first.id);
    expect(await app.broker.queue('default').getJobCounts('waiting')).toEqual({ waiting: 2 });
  });

  it('keeps returning the same job after it finished, within the TTL', async () => {
    const app = await openTestApp('sqlite', [charge]);
    await startWorker(app);
    const first = await app.enqueue(charge, { order: 'B2', cents: 1 }, { idempotencyKey: 'k-b2' });
    await first.wait();
    const again = await app.enqueue(charge, { order: 'B2', cents: 1 }, { idempotencyKey: 'k-b2' });
    expect(again.id).toBe(first.id);
    expect(again.created).toBe(false);
  });

  it('POST /v1/jobs with the same Idempotency-Key twice gives one job; another body answers 409', async () => {
    const app = await openTestApp('sqlite', [charge]);
    await startWorker(app);
    await startRecorder(app);
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const post = (payload: object, key: string) => api.inject({ method: 'POST', url: '/v1/jobs', payload, headers: { 'idempotency-key': key } });
    const one = await post({ task: 'pay.charge', input: { order: 'C3', cents: 7 } }, 'c3');
    expect(one.statusCode).toBe(202);
    expect(one.headers['idempotent-replayed']).toBeUndefined();
    await app.enqueueByName('pay.charge', { order: 'C3', cents: 7 }, { idempotencyKey: 'c3' }).then((h) => h.wait());
    const two = await post({ task: 'pay.charge', input: { order: 'C3', cents: 7 } }, 'c3');
    expect(two.statusCode).toBe(202);
    expect(two.headers['idempotent-replayed']).toBe('true');
    expect(two.json()).toEqual({ job_id: one.json().job_id, status: 'completed', status_url: one.json().status_url });
    const conflict = await post({ task: 'pay.charge', input: { order: 'C3', cents: 8 } }, 'c3');
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().error).toMatchObject({ code: 'idempotency_conflict', details: { idempotency_key: 'c3', job_id: one.json().job_id } });
    const list = await waitFor(async () => {
      const page = await app.listJobs({ limit: 10 });
      return page.jobs.length >= 1 && page.jobs.every((j) => j.status === 'completed') ? page : undefined;
    });
    expect(list.jobs).toHaveLength(1);
  });
});
