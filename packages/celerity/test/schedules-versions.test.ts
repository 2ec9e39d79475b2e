import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createApp, type App, type AppOptions } from '../src/app.ts';
import { schedule } from '../src/schedules/schedule.ts';
import { syncSchedules } from '../src/schedules/sync.ts';
import { defineTask } from '../src/task.ts';
import { onCleanup, sleep, testEnv, useCleanup, type TestEnv } from './helpers.ts';

/**
 * docs/semantics.md, Periodic tasks: during a rolling deploy two versions of
 * an app, each declaring its own schedules, run on one prefix and queue. A
 * sync removes only the schedulers that no version declared within the
 * grace period, so neither version deletes the other's; one that no running
 * version declares goes once the grace has passed.
 */
useCleanup();

function appOn(env: TestEnv, opts: Omit<AppOptions, 'config'>): App {
  const app = createApp({ ...opts, config: env.config, ...(env.schema ? { dbSchema: env.schema } : {}) });
  onCleanup(() => app.close());
  return app;
}

const noop = defineTask({ name: 'noop', input: z.object({}), handler: async () => null });
const report = defineTask({ name: 'report', input: z.object({ team: z.string() }), handler: async ({ team }) => team });

function versions(env: TestEnv): { v1: App; v2: App } {
  // Shared: noop every hour. v1 also has the "old" report; v2 drops it and adds "new".
  const shared = schedule(noop, { every: 3_600_000 });
  const v1 = appOn(env, { tasks: [noop, report], maintenance: false, schedules: [shared, schedule(report, { cron: '0 3 * * *' }, { team: 'a' }, { id: 'old' })] });
  const v2 = appOn(env, { tasks: [noop, report], maintenance: false, schedules: [shared, schedule(report, { cron: '0 4 * * *' }, { team: 'b' }, { id: 'new' })] });
  return { v1, v2 };
}

const keysOf = async (app: App) => (await app.broker.queue('default').getJobSchedulers()).map((s) => s.key).sort();

describe('schedules of two app versions on one queue', () => {
  it('two versions syncing in turn keep each other’s schedules', async () => {
    const env = testEnv('sqlite');
    const { v1, v2 } = versions(env);
    for (let round = 0; round < 3; round++) {
      const a = await v1.startSchedules();
      expect(a.removed).toEqual([]);
      if (round > 0) expect(a.kept).toEqual(['celerity:new']);
      const b = await v2.startSchedules();
      expect(b.removed).toEqual([]);
      expect(b.kept).toEqual(['celerity:old']);
      expect(await keysOf(v1)).toEqual(['celerity:new', 'celerity:noop', 'celerity:old']);
    }
    // Each version's own schedule still has its pending tick.
    const queue = v1.broker.queue('default');
    for (const id of ['celerity:old', 'celerity:new']) {
      const sch = (await queue.getJobScheduler(id))!;
      expect(await queue.getJob(`repeat:${id}:${sch.next}`)).toBeTruthy();
    }
  });

  it('removes a schedule once no version has declared it within the grace, and not before', async () => {
    const env = testEnv('sqlite');
    const { v1, v2 } = versions(env);
    const GRACE = 600;
    const sync = (app: App, upsert = true) => syncSchedules(app.broker, app.schedules, app.queueNames(), undefined, { graceMs: GRACE, upsert });
    await sync(v1);
    await sync(v2);
    // v1 still runs: its refreshes keep "old" alive past the first grace.
    await sleep(GRACE / 2);
    await sync(v1, false);
    await sleep(GRACE / 2 + 100);
    expect((await sync(v2, false)).kept).toEqual(['celerity:old']);
    expect(await keysOf(v1)).toEqual(['celerity:new', 'celerity:noop', 'celerity:old']);
    // v1's last worker stopped: no refresh any more. Past the grace, v2's refresh removes "old".
    await sleep(GRACE + 100);
    const after = await sync(v2, false);
    expect(after).toMatchObject({ upserted: [], removed: ['celerity:old'], kept: [] });
    expect(await keysOf(v1)).toEqual(['celerity:new', 'celerity:noop']);
  });
});
