/**
 * GET /v1/schedules: the schedules the cluster runs, with their next tick
 * and their last run, for the dashboard's overview and for operators.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { ScheduleView } from '../src/api/routes/ops.ts';
import { buildServer } from '../src/api/server.ts';
import { schedule } from '../src/schedules/schedule.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const tick = defineTask({ name: 'sv.tick', input: z.object({}), handler: async () => ({ ticked: true }) });
const nightly = defineTask({ name: 'sv.nightly', input: z.object({}), handler: async () => null });

type View = ScheduleView;

describe.each(stores)('GET /v1/schedules (%s)', (kind) => {
  it('lists each schedule with its timing, next tick and last run', async () => {
    const app = await openTestApp(kind, {
      tasks: [tick, nightly],
      schedules: [schedule(tick, { every: 300 }, {}, { id: 'sv-every' }), schedule(nightly, { cron: '0 3 * * *', tz: 'Europe/Paris' }, {}, { id: 'sv-nightly' })],
    });
    await startRecorder(app);
    await startWorker(app);
    await app.startSchedules();
    const api = await buildServer(app, { logger: false });

    const read = async () => {
      const res = await api.inject({ method: 'GET', url: '/v1/schedules' });
      expect(res.statusCode).toBe(200);
      return (res.json() as { schedules: View[] }).schedules.filter((s) => s.id.startsWith('sv-'));
    };
    const before = Date.now();
    // The every-300-ms tick has run and been recorded.
    const schedules = await waitFor(async () => {
      const all = await read();
      return all.find((s) => s.id === 'sv-every')?.last_run?.status === 'completed' ? all : undefined;
    }, 15_000);

    expect(schedules.map((s) => s.id)).toEqual(['sv-every', 'sv-nightly']);
    const [every, cron] = schedules as [View, View];
    expect(every).toMatchObject({ task: 'sv.tick', queue: tick.queue, every_ms: 300, cron: null });
    expect(every.last_run?.job_id).toMatch(/^repeat:celerity:sv-every:\d+$/);
    expect(Date.parse(every.last_run?.finished_at ?? '')).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(every.next_run_at ?? '')).toBeGreaterThan(Date.parse(every.last_run?.started_at ?? ''));

    expect(cron).toMatchObject({ task: 'sv.nightly', every_ms: null, cron: '0 3 * * *', tz: 'Europe/Paris', last_run: null });
    // 03:00 in Paris is 01:00 or 02:00 UTC.
    const next = new Date(cron.next_run_at ?? '');
    expect(next.getTime()).toBeGreaterThan(Date.now());
    expect([1, 2]).toContain(next.getUTCHours());
    expect(next.getUTCMinutes()).toBe(0);
    await api.close();
  }, 30_000);
});
