import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { createApp } from '../src/app.ts';
import { NonRetryableError } from '../src/errors.ts';
import { defineTask } from '../src/task.ts';
import type { JobEventInfo, LifecycleEvent } from '../src/worker/lifecycle.ts';
import { onCleanup, startWorker, testEnv, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const ok = defineTask({
  name: 'life.ok',
  input: z.object({ n: z.number() }),
  handler: ({ n }, ctx) => {
    ctx.log.info({ n }, 'doing the work');
    return n * 2;
  },
});
const flaky = defineTask({
  name: 'life.flaky',
  input: z.object({}),
  retries: 1,
  backoff: { base: 10, max: 10, jitter: 'none' },
  handler: (_input, ctx) => {
    if (ctx.attempt === 1) throw new Error('first attempt fails');
    return 'ok';
  },
});
const fatal = defineTask({
  name: 'life.fatal',
  input: z.object({}),
  retries: 3,
  handler: () => {
    throw new NonRetryableError('no point retrying');
  },
});
const slow = defineTask({ name: 'life.slow', input: z.object({}), handler: (_i, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))) });

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

describe('job hooks and trace ids', () => {
  it('hooks see each attempt start and end; a throwing hook is logged and the job is not affected', async () => {
    const env = testEnv('sqlite');
    const { lines, logger } = capture();
    const app = createApp({ tasks: [ok, flaky, fatal, slow], config: env.config, logger });
    onCleanup(() => app.close());
    const seen: [LifecycleEvent, JobEventInfo][] = [];
    for (const e of ['job:started', 'job:completed', 'job:failed', 'job:retrying', 'job:cancelled'] as const) app.on(e, (info) => void seen.push([e, info]));
    app.on('job:completed', () => {
      throw new Error('sync hook bug');
    });
    app.on('job:started', async () => {
      throw new Error('async hook bug');
    });
    await startWorker(app);
    const a = await app.enqueue(ok, { n: 21 });
    expect((await a.wait()).result).toBe(42);
    const b = await app.enqueue(flaky, {});
    expect((await b.wait()).status).toBe('completed');
    const c = await app.enqueue(fatal, {});
    expect((await c.wait()).status).toBe('failed');
    const d = await app.enqueue(slow, {});
    await waitFor(() => seen.some(([e, i]) => e === 'job:started' && i.jobId === d.id));
    await app.cancel(d.id);
    expect((await d.wait()).status).toBe('cancelled');

    const of = (id: string) => seen.filter(([, i]) => i.jobId === id).map(([e, i]) => `${e}#${i.attempt}`);
    expect(of(a.id)).toEqual(['job:started#1', 'job:completed#1']);
    expect(of(b.id)).toEqual(['job:started#1', 'job:retrying#1', 'job:started#2', 'job:completed#2']);
    expect(of(c.id)).toEqual(['job:started#1', 'job:failed#1']);
    expect(of(d.id)).toEqual(['job:started#1', 'job:cancelled#1']);
    const completed = seen.find(([e, i]) => e === 'job:completed' && i.jobId === a.id)![1];
    expect(completed).toMatchObject({ task: 'life.ok', queue: 'default', result: 42, maxAttempts: 4 });
    expect(completed.finishedAt!).toBeGreaterThanOrEqual(completed.startedAt);
    expect(seen.find(([e, i]) => e === 'job:failed' && i.jobId === c.id)![1].error).toEqual({ type: 'NonRetryableError', message: 'no point retrying' });
    await waitFor(() => lines.filter((l) => l.msg === 'job hook threw; the job is not affected').length >= 2);
    expect(() => app.on('job:exploded' as LifecycleEvent, vi.fn())).toThrow(/Unknown job event/);
  });

  it("a job's log lines, from the HTTP request to the worker's completion, share one trace_id", async () => {
    const env = testEnv('sqlite', { logLevel: 'info' });
    const { lines, logger } = capture();
    const app = createApp({ tasks: [ok], config: env.config, logger });
    onCleanup(() => app.close());
    await startWorker(app);
    const server = await buildServer(app);
    onCleanup(() => server.close());
    const res = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'life.ok', input: { n: 1 } }, headers: { 'x-request-id': 'req-abc-123' } });
    expect(res.statusCode).toBe(202);
    expect(res.headers['x-request-id']).toBe('req-abc-123');
    const id = res.json().job_id as string;
    await waitFor(() => lines.some((l) => l.job_id === id && l.msg === 'job completed'));
    const traced = lines.filter((l) => l.trace_id === 'req-abc-123').map((l) => l.msg);
    expect(traced).toEqual(expect.arrayContaining(['incoming request', 'job submitted', 'request completed', 'job started', 'doing the work', 'job completed']));
    for (const l of lines.filter((l) => l.job_id === id)) expect(l.trace_id).toBe('req-abc-123');
    // No request id, or a bad one: a fresh trace id, echoed back.
    const fresh = await server.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'life.ok', input: { n: 2 } }, headers: { 'x-request-id': 'bad id with spaces' } });
    expect(fresh.headers['x-request-id']).toMatch(/^[0-9a-f]{32}$/);
    // The input is not logged at info.
    expect(JSON.stringify(lines)).not.toContain('"input"');
  });
});
