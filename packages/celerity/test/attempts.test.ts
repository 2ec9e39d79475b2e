import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildServer } from '../src/api/server.ts';
import { attemptHistory, type JobRecord } from '../src/job-record.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

class Flaky extends Error {
  override name = 'Flaky';
}

const flaky = defineTask({
  name: 'att.flaky',
  input: z.object({ fail_times: z.number() }),
  retries: 4,
  backoff: { base: 20, max: 20, jitter: 'none' },
  handler: async ({ fail_times }, ctx) => {
    if (ctx.attempt <= fail_times) throw new Flaky(`failure ${ctx.attempt}`);
    return { attempt: ctx.attempt };
  },
});

describe.each(stores)('attempt history (%s store)', (kind) => {
  it('keeps every attempt with its error and times, live from Redis and in SQL', async () => {
    const app = await openTestApp(kind, [flaky]);
    await startWorker(app);
    await startRecorder(app);
    const api = await buildServer(app, { logger: false });
    onCleanup(() => api.close());
    const { job_id } = (await api.inject({ method: 'POST', url: '/v1/jobs', payload: { task: 'att.flaky', input: { fail_times: 2 } } })).json();
    const live = await waitFor(async () => {
      const r = (await api.inject({ method: 'GET', url: `/v1/jobs/${job_id}` })).json();
      return r.status === 'completed' ? r : undefined;
    });
    expect(live.attempts).toBe(3);
    expect(live.attempt_history.map((a: { status: string }) => a.status)).toEqual(['failed', 'failed', 'completed']);
    expect(live.attempt_history[0].error).toEqual({ type: 'Flaky', message: 'failure 1' });
    expect(live.attempt_history[1].error).toEqual({ type: 'Flaky', message: 'failure 2' });
    expect(live.attempt_history[2].error).toBeNull();
    for (const a of live.attempt_history) expect(Date.parse(a.finished_at)).toBeGreaterThanOrEqual(Date.parse(a.started_at));
    expect(Date.parse(live.attempt_history[1].started_at)).toBeGreaterThanOrEqual(Date.parse(live.attempt_history[0].finished_at));

    const stored = await waitFor(async () => {
      const r = await app.store.get(job_id);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(stored.attemptHistory?.map((a) => [a.attempt, a.status, a.error?.message ?? null])).toEqual([
      [1, 'failed', 'failure 1'],
      [2, 'failed', 'failure 2'],
      [3, 'completed', null],
    ]);
  });
});

describe('attemptHistory', () => {
  const record = (over: Partial<JobRecord>): JobRecord => ({
    id: 'j',
    task: 't',
    queue: 'q',
    tenant: null,
    keyId: null,
    status: 'started',
    attempts: 1,
    maxAttempts: 3,
    input: null,
    result: null,
    error: null,
    progress: null,
    createdAt: 1,
    startedAt: 10,
    finishedAt: null,
    ...over,
  });
  const row = (n: number) => JSON.stringify({ celerity_attempt: n, started_at: n * 100, finished_at: n * 100 + 5, error: { type: 'E', message: `m${n}` } });

  it('marks attempts that left no row, before the last, as interrupted (their worker died)', () => {
    expect(attemptHistory(record({ status: 'started', attempts: 3, startedAt: 300 }), [row(1), 'a log line of someone else']).map((a) => a.status)).toEqual(['failed', 'interrupted', 'running']);
  });

  it('a queued job whose last attempt left no row was handed back', () => {
    expect(attemptHistory(record({ status: 'queued', attempts: 1 }), [])).toEqual([{ attempt: 1, status: 'interrupted', startedAt: 10, finishedAt: null, error: null }]);
  });

  it('a job never started has no attempts', () => {
    expect(attemptHistory(record({ status: 'queued', attempts: 0 }), [])).toEqual([]);
  });
});
