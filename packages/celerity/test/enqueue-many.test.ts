import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidInputError, InvalidOptionsError, UnknownTaskError, type EnqueueManyItem } from '../src/index.ts';
import { defineTask } from '../src/task.ts';
import type { App } from '../src/app.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const add = defineTask({
  name: 'bulk.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

const shout = defineTask({
  name: 'bulk.shout',
  queue: 'loud',
  input: z.object({ text: z.string() }),
  handler: async ({ text }, ctx) => ({ text: text.toUpperCase(), queue: ctx.queue }),
});

/** Jobs of every state in the app's queues: zero means nothing was written. */
async function jobsInRedis(app: App): Promise<number> {
  let total = 0;
  for (const q of app.queueNames()) {
    const counts = await app.broker.queue(q).getJobCounts();
    total += Object.values(counts).reduce((s, n) => s + n, 0);
  }
  return total;
}

describe.each(stores)('enqueueMany (%s store)', (kind) => {
  it('enqueues 100 jobs in one call; all complete and are recorded', async () => {
    const app = await openTestApp(kind, [add, shout]);
    await startWorker(app, { concurrency: 10 });
    await startRecorder(app);
    const items = Array.from({ length: 100 }, (_, i) => ({ task: add, input: { a: i, b: 1 } }));
    const handles = await app.enqueueMany(items);
    expect(handles).toHaveLength(100);
    expect(new Set(handles.map((h) => h.id)).size).toBe(100);
    expect(handles.every((h) => h.task === 'bulk.add' && h.queue === 'default' && h.created)).toBe(true);
    const done = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 20_000 })));
    expect(done.map((d) => d.result)).toEqual(items.map(({ input }) => ({ sum: input.a + 1 })));
    // The same jobs as enqueue makes: the task's attempts and input as given.
    expect(done[0]).toMatchObject({ status: 'completed', maxAttempts: 4, input: { a: 0, b: 1 } });
    await waitFor(async () => {
      const rows = await Promise.all(handles.map((h) => app.store.get(h.id)));
      return rows.every((r) => r?.status === 'completed');
    }, 15_000);
  });
});

describe('enqueueMany', () => {
  it('one bad input among 100 enqueues nothing, and the error names its index', async () => {
    const app = await openTestApp('sqlite', [add, shout]);
    const items: EnqueueManyItem[] = Array.from({ length: 100 }, (_, i) => ({ task: add, input: { a: i, b: 1 } }));
    items[37] = { task: 'bulk.add', input: { a: 'x', b: 1 } };
    const err = await app.enqueueMany(items).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).details.issues).toEqual([expect.objectContaining({ path: 'items.37.input.a' })]);
    expect((err as Error).message).toContain('items.37.input.a');
    expect(await jobsInRedis(app)).toBe(0);

    // Bad options, likewise.
    items[37] = { task: add, input: { a: 1, b: 1 }, options: { priority: 0 } };
    await expect(app.enqueueMany(items)).rejects.toMatchObject({ code: 'invalid_options', details: { issues: [expect.objectContaining({ path: 'items.37.options.priority' })] } });
    expect(await jobsInRedis(app)).toBe(0);
  });

  it('mixes task objects and names, across two queues, in one call', async () => {
    const app = await openTestApp('sqlite', [add, shout]);
    await startWorker(app);
    const handles = await app.enqueueMany([
      { task: add, input: { a: 1, b: 2 } },
      { task: 'bulk.shout', input: { text: 'hi' }, options: { tenant: 'acme' } },
      { task: 'bulk.add', input: { a: 3, b: 4 }, options: { delay: 50, priority: 3 } },
      { task: shout, input: { text: 'yo' } },
    ]);
    expect(handles.map((h) => [h.task, h.queue])).toEqual([
      ['bulk.add', 'default'],
      ['bulk.shout', 'loud'],
      ['bulk.add', 'default'],
      ['bulk.shout', 'loud'],
    ]);
    const done = await Promise.all(handles.map((h) => h.wait({ timeoutMs: 10_000 })));
    expect(done.map((d) => d.result)).toEqual([{ sum: 3 }, { text: 'HI', queue: 'loud' }, { sum: 7 }, { text: 'YO', queue: 'loud' }]);
    expect(done[1]!.tenant).toBe('acme');
    expect(await app.enqueueMany([])).toEqual([]);
  });

  it('refuses idempotency keys, a repeated job id, unknown tasks and workflows, before writing anything', async () => {
    const app = await openTestApp('sqlite', [add, shout]);
    const ok = { task: add, input: { a: 1, b: 1 } };
    await expect(app.enqueueMany([ok, { ...ok, options: { idempotencyKey: 'k' } }])).rejects.toMatchObject({
      code: 'invalid_options',
      details: { issues: [expect.objectContaining({ path: 'items.1.options.idempotencyKey' })] },
    });
    await expect(app.enqueueMany([{ ...ok, options: { jobId: 'same' } }, ok, { ...ok, options: { jobId: 'same' } }])).rejects.toMatchObject({
      code: 'invalid_options',
      details: { issues: [expect.objectContaining({ path: 'items.2.options.jobId', message: expect.stringContaining('items.0') })] },
    });
    const unknown = await app.enqueueMany([ok, { task: 'nope', input: {} }]).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(UnknownTaskError);
    expect((unknown as UnknownTaskError).message).toContain('items.1.task');
    await expect(app.enqueueMany([ok, { task: 42 as unknown as string, input: {} }])).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(app.enqueueMany(Array.from({ length: 1_001 }, () => ok))).rejects.toMatchObject({ code: 'invalid_options' });
    expect(await jobsInRedis(app)).toBe(0);
  });
});
