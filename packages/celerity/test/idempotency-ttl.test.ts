import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { IdempotencyConflictError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, sleep, startRecorder, startWorker, useCleanup, waitFor } from './helpers.ts';

/**
 * docs/semantics.md, Idempotency: the key holds for CELERITY_IDEMPOTENCY_TTL
 * (24 h), not only while the first job is still in Redis (CELERITY_RESULT_TTL,
 * here 1 s). What the conflict check needs is kept with the key itself.
 */
useCleanup();

const charge = defineTask({
  name: 'pay.charge',
  input: z.object({ order: z.string(), cents: z.number().int() }),
  handler: async ({ order, cents }) => ({ order, cents }),
});

describe('idempotency after the first job left Redis', () => {
  it('refuses the key with other input and returns the first job for the same input, once retention removed the job', async () => {
    const app = await openTestApp('sqlite', [charge], { resultTtl: 1 });
    await startWorker(app);
    await startRecorder(app);
    const queue = app.broker.queue('default');
    const first = await app.enqueue(charge, { order: 'T1', cents: 100 }, { idempotencyKey: 'order-T1' });
    await first.wait();
    // BullMQ removes finished jobs older than the result TTL when a later job finishes.
    await sleep(1_100);
    await (await app.enqueue(charge, { order: 'other', cents: 0 })).wait();
    await waitFor(async () => ((await queue.getJob(first.id)) ? undefined : true), 10_000);

    await expect(app.enqueue(charge, { order: 'T1', cents: 999 }, { idempotencyKey: 'order-T1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    await expect(app.enqueue(charge, { order: 'T2', cents: 100 }, { idempotencyKey: 'order-T1' })).rejects.toMatchObject({ code: 'idempotency_conflict', details: { job_id: first.id } });
    const again = await app.enqueue(charge, { cents: 100, order: 'T1' }, { idempotencyKey: 'order-T1' });
    expect(again).toMatchObject({ id: first.id, created: false });
    // Its record now comes from the SQL history.
    expect(await app.getJob(first.id)).toMatchObject({ id: first.id, status: 'completed', result: { order: 'T1', cents: 100 } });
    // Nothing new was enqueued by the refused or repeated calls.
    expect(await queue.getJobCounts('waiting', 'active', 'delayed')).toEqual({ waiting: 0, active: 0, delayed: 0 });
  }, 30_000);

  it('holds even when the first job was removed from Redis by hand (which drops BullMQ’s own deduplication key)', async () => {
    const app = await openTestApp('sqlite', [charge]);
    const queue = app.broker.queue('default');
    const first = await app.enqueue(charge, { order: 'R1', cents: 5 }, { idempotencyKey: 'order-R1' });
    await (await queue.getJob(first.id))!.remove();
    expect(await queue.getJob(first.id)).toBeFalsy();

    await expect(app.enqueue(charge, { order: 'R1', cents: 6 }, { idempotencyKey: 'order-R1' })).rejects.toBeInstanceOf(IdempotencyConflictError);
    expect(await app.enqueue(charge, { order: 'R1', cents: 5 }, { idempotencyKey: 'order-R1' })).toMatchObject({ id: first.id, created: false });
    expect(await queue.getJobCounts('waiting')).toEqual({ waiting: 0 });
  });

  it('concurrent calls with one key make one job; the ones with other input are refused', async () => {
    const app = await openTestApp('sqlite', [charge]);
    const calls = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => app.enqueue(charge, { order: 'C1', cents: i % 2 === 0 ? 1 : 2 }, { idempotencyKey: 'order-C1' })));
    const ok = calls.filter((c) => c.status === 'fulfilled').map((c) => c.value);
    const refused = calls.filter((c) => c.status === 'rejected').map((c) => c.reason as Error);
    expect(new Set(ok.map((h) => h.id)).size).toBe(1);
    expect(ok.filter((h) => h.created)).toHaveLength(1);
    // Exactly the calls whose input differs from the winner's are refused.
    expect(ok.length).toBe(10);
    expect(refused).toHaveLength(10);
    for (const err of refused) expect(err).toBeInstanceOf(IdempotencyConflictError);
    expect(await app.broker.queue('default').getJobCounts('waiting')).toEqual({ waiting: 1 });
  });

  it('the key expires with CELERITY_IDEMPOTENCY_TTL, its record too', async () => {
    const app = await openTestApp('sqlite', [charge], { idempotencyTtl: 1 });
    const first = await app.enqueue(charge, { order: 'E1', cents: 1 }, { idempotencyKey: 'order-E1' });
    await sleep(1_200);
    const next = await app.enqueue(charge, { order: 'E1', cents: 2 }, { idempotencyKey: 'order-E1' });
    expect(next.created).toBe(true);
    expect(next.id).not.toBe(first.id);
  });
});
