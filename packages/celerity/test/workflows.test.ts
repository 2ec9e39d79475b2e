import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { InvalidInputError, UnknownTaskError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import { chain, chord, defineWorkflow, group, step } from '../src/workflows/workflow.ts';
import { withSteps } from '../src/workflows/steps.ts';
import type { JobRecord } from '../src/job-record.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

function definitions() {
  const add = defineTask({
    name: 'wf.add',
    input: z.object({ a: z.number(), b: z.number() }),
    handler: ({ a, b }) => a + b,
  });
  const double = defineTask({
    name: 'wf.double',
    input: z.number(),
    handler: (n) => n * 2,
  });
  const sum = defineTask({
    name: 'wf.sum',
    input: z.object({ values: z.array(z.number()), label: z.string() }),
    handler: async ({ values, label }, ctx) => {
      await ctx.progress({ stage: 'summing', done: values.length });
      return { label, total: values.reduce((x, y) => x + y, 0) };
    },
  });
  const boom = defineTask({
    name: 'wf.boom',
    input: z.unknown(),
    retries: 0,
    handler: (): never => {
      throw new RangeError('the second step broke');
    },
  });
  const report = defineWorkflow({
    name: 'wf.report',
    input: z.object({ numbers: z.array(z.number()).min(1) }),
    build: ({ numbers }) =>
      chord(
        numbers.map((n) => step(double, n, { stage: 'doubling' })),
        step(sum, { label: 'doubled' }, { resultAs: 'values', stage: 'summing' }),
      ),
  });
  return { tasks: [add, double, sum, boom], workflows: [report], add, double, sum, boom };
}

describe.each(stores)('workflows (%s)', (kind) => {
  it('chain: each result is the next input; steps are visible in order', async () => {
    const d = definitions();
    const app = await openTestApp(kind, d);
    await startWorker(app);
    const handle = await app.workflow(chain(step(d.add, { a: 2, b: 3 }), step(d.double), step(d.double)));
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('completed');
    expect(done.result).toBe(20);
    const record = (await app.getJob(handle.id))!;
    expect(record.task).toBe('workflow.chain');
    expect(record.steps!.map((s) => [s.task, s.status])).toEqual([
      ['wf.add', 'completed'],
      ['wf.double', 'completed'],
      ['wf.double', 'completed'],
    ]);
    expect(record.steps!.map((s) => s.id)).toEqual([`${handle.id}.1`, `${handle.id}.2`, `${handle.id}.3`]);
  });

  it('group gathers results in order; chord passes them to its callback', async () => {
    const d = definitions();
    const app = await openTestApp(kind, d);
    await startWorker(app, { concurrency: 4 });
    const g = await app.workflow(group(step(d.add, { a: 1, b: 1 }), step(d.add, { a: 2, b: 2 }), step(d.add, { a: 3, b: 3 })));
    expect((await g.wait({ timeoutMs: 15_000 })).result).toEqual([2, 4, 6]);

    const c = await app.workflow(chord([step(d.add, { a: 1, b: 2 }), step(d.add, { a: 10, b: 20 })], step(d.sum, { label: 'x' }, { resultAs: 'values' })));
    const done = await c.wait({ timeoutMs: 15_000 });
    expect(done.result).toEqual({ label: 'x', total: 33 });
    const record = (await app.getJob(c.id))!;
    expect(record.steps!.map((s) => s.task)).toEqual(['wf.add', 'wf.add', 'wf.sum']);
  });

  it('a failed step fails the workflow, naming the step', async () => {
    const d = definitions();
    const app = await openTestApp(kind, d);
    await startWorker(app);
    const handle = await app.workflow(chain(step(d.add, { a: 1, b: 1 }), step(d.boom), step(d.double)));
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('failed');
    expect(done.error!.message).toBe('step 2 (wf.boom) failed: the second step broke');
    expect(done.error!.type).toBe('RangeError');
    const record = (await app.getJob(handle.id))!;
    expect(record.steps!.map((s) => s.status)).toEqual(['completed', 'failed', 'failed']);
  });

  it("runs in an app whose tasks are all on another queue than 'default'", async () => {
    const inc = defineTask({ name: 'wf.inc', queue: 'media', input: z.number(), handler: (n) => n + 1 });
    const app = await openTestApp(kind, [inc]);
    await startWorker(app);
    const handle = await app.workflow(chain(step(inc, 1), step(inc), step(inc)));
    expect(handle.queue).toBe('media');
    expect((await handle.wait({ timeoutMs: 15_000 })).result).toBe(4);
  });

  it('cancelling the root cancels the running and the waiting steps', async () => {
    const d = definitions();
    const slow = defineTask({ name: 'wf.slow', input: z.object({}), handler: (_i, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))) });
    const app = await openTestApp(kind, { tasks: [...d.tasks, slow] });
    await startWorker(app, { concurrency: 2 });
    const handle = await app.workflow(chord([step(slow, {}), step(d.add, { a: 1, b: 1 }), step(slow, {})], step(d.sum, { label: 'never' }, { resultAs: 'values' })));
    await waitFor(async () => ((await app.getJob(handle.id))!.steps!.filter((s) => s.status === 'started').length === 2 ? true : null));
    expect(await app.cancel(handle.id)).toBe('cancelling');
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('cancelled');
    const record = (await app.getJob(handle.id))!;
    expect(record.steps!.map((s) => s.status)).toEqual(['cancelled', 'completed', 'cancelled', expect.stringMatching(/^(cancelled|failed)$/)]);
  });

  it('refuses a workflow with a bad step input or an unknown task, writing nothing', async () => {
    const d = definitions();
    const app = await openTestApp(kind, d);
    await expect(app.workflow(chain(step(d.add, { a: 1 }), step(d.double)))).rejects.toThrow(InvalidInputError);
    await expect(app.workflow(chain(step(d.add, { a: 1 }), step(d.double)))).rejects.toThrow(/step 1 \(wf.add\)/);
    await expect(app.workflow(chain(step('no.such', {}), step(d.double)))).rejects.toThrow(UnknownTaskError);
    expect(() => chain(step(d.add, { a: 1, b: 1 }), group(step(d.double, 1)))).toThrow(/only the first node/);
    const counts = await app.broker.queue('default').getJobCounts();
    expect(Object.values(counts).reduce((x, y) => x + y, 0)).toBe(0);
  });

  it('a defined workflow is submitted by name over HTTP and its steps survive in SQL', async () => {
    const d = definitions();
    const app = await openTestApp(kind, d);
    await startRecorder(app);
    const server = await buildServer(app, { logger: false });
    const bad = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'wf.report', input: { numbers: [] } } });
    expect(bad.statusCode).toBe(422);
    const res = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'wf.report', input: { numbers: [1, 2, 3] } } });
    expect(res.statusCode).toBe(202);
    const id = res.json().job_id as string;
    // Nothing runs yet: the workflow is queued.
    expect((await server.inject({ url: `/v1/jobs/${id}` })).json().status).toBe('queued');
    await startWorker(app, { concurrency: 1 });
    const view = await waitFor(async () => {
      const v = (await server.inject({ url: `/v1/jobs/${id}` })).json();
      return v.status === 'completed' ? v : null;
    }, 15_000);
    expect(view.task).toBe('wf.report');
    expect(view.result).toEqual({ label: 'doubled', total: 12 });
    expect(view.steps.map((s: { stage: string }) => s.stage)).toEqual(['doubling', 'doubling', 'doubling', 'summing']);
    // Once the recorder has them, the steps are found in SQL by id.
    const steps = await waitFor(async () => {
      const rows = await app.store.workflowSteps(id);
      return rows.length === 4 && rows.every((r) => r.status === 'completed') ? rows : null;
    }, 15_000);
    expect(steps.map((s) => s.task)).toEqual(['wf.double', 'wf.double', 'wf.double', 'wf.sum']);
    await server.close();
  });
});

describe('workflow view', () => {
  const root: JobRecord = {
    id: 'r',
    task: 'wf.report',
    queue: 'default',
    tenant: null,
    keyId: null,
    status: 'queued',
    attempts: 0,
    maxAttempts: 3,
    input: null,
    result: null,
    error: null,
    progress: null,
    createdAt: 1,
    startedAt: null,
    finishedAt: null,
  };
  const rec = (id: string, status: JobRecord['status'], extra: Partial<JobRecord> = {}): JobRecord => ({ ...root, id, task: 'wf.double', status, ...extra });
  const infos = [
    { id: 'r.1', task: 'wf.double', queue: 'default', stage: 'parsing', unit: 'documents' },
    { id: 'r.2', task: 'wf.double', queue: 'default', stage: 'parsing', unit: 'documents' },
    { id: 'r.3', task: 'wf.double', queue: 'default', stage: 'parsing', unit: 'documents' },
    { id: 'r.4', task: 'wf.sum', queue: 'default', stage: 'validating' },
  ];

  it('counts the current stage while no step reports its own progress', () => {
    const view = withSteps(root, infos, [rec('r.1', 'completed'), rec('r.2', 'completed'), rec('r.3', 'started'), rec('r.4', 'queued')]);
    expect(view.status).toBe('started');
    expect(view.progress).toMatchObject({ stage: 'parsing', completed: 2, total: 3, message: 'parsing 2/3 documents' });
  });

  it("shows a running step's own stage progress", () => {
    const running = rec('r.4', 'started', { progress: { stage: 'validating', completed: 3, total: 12 } });
    const view = withSteps(root, infos, [rec('r.1', 'completed'), rec('r.2', 'completed'), rec('r.3', 'completed'), running]);
    expect(view.progress).toMatchObject({ stage: 'validating', completed: 3, total: 12 });
  });

  it('a cancelled step makes the workflow cancelled', () => {
    const failedRoot = { ...root, status: 'failed' as const, error: { type: 'UnrecoverableError', message: 'child celerity:default:r.4 failed', stack: null } };
    const view = withSteps(failedRoot, infos, [
      rec('r.1', 'completed'),
      rec('r.2', 'completed'),
      rec('r.3', 'completed'),
      rec('r.4', 'cancelled', { error: { type: 'JobCancelled', message: 'job cancelled', stack: null } }),
    ]);
    expect(view.status).toBe('cancelled');
    expect(view.error!.message).toBe('step 4 (wf.sum) was cancelled: job cancelled');
  });
});
