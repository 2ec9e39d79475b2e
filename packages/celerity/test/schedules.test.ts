import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createApp, type App, type AppOptions } from '../src/app.ts';
import { TaskDefinitionError } from '../src/errors.ts';
import { cleanRedisResults, findStuckJobs, MAINTENANCE_QUEUE, purgeHistory } from '../src/schedules/maintenance.ts';
import { schedule } from '../src/schedules/schedule.ts';
import { syncSchedules } from '../src/schedules/sync.ts';
import { defineTask } from '../src/task.ts';
import { deferred, onCleanup, sleep, startWorker, stores, testEnv, testRedis, useCleanup, waitFor, type TestEnv } from './helpers.ts';

useCleanup();

/** An app on an existing environment, so that several apps (processes) share one Redis prefix and store. */
function appOn(env: TestEnv, opts: Omit<AppOptions, 'config'>): App {
  const app = createApp({ ...opts, config: env.config, ...(env.schema ? { dbSchema: env.schema } : {}) });
  onCleanup(() => app.close());
  return app;
}

/** The tick (ms) of a scheduled job, from its id `repeat:<scheduler>:<tick>`. */
function tickOf(jobId: string): number {
  return Number(jobId.slice(jobId.lastIndexOf(':') + 1));
}

const noop = defineTask({ name: 'noop', input: z.object({}), handler: async () => null });
const withInput = defineTask({ name: 'report', input: z.object({ team: z.string() }), handler: async ({ team }) => team });

describe('schedule() validation', () => {
  const bad: [string, () => unknown, RegExp][] = [
    ['a bad cron expression', () => schedule(noop, { cron: 'every day' }), /Schedule "noop": bad cron expression "every day"/],
    ['a cron field out of range', () => schedule(noop, { cron: '61 * * * *' }), /bad cron expression "61 \* \* \* \*".*0-59/],
    ['an unknown time zone', () => schedule(noop, { cron: '0 3 * * *', tz: 'Mars/Olympus' }), /unknown time zone "Mars\/Olympus"/],
    ['every and cron together', () => schedule(noop, { every: 1000, cron: '* * * * *' } as never), /either \{ every: ms \} or \{ cron/],
    ['neither every nor cron', () => schedule(noop, {} as never), /either \{ every: ms \} or \{ cron/],
    ['every below the minimum', () => schedule(noop, { every: 5 }), /every must be an integer number of ms, at least 100 \(got 5\)/],
    ['every not an integer', () => schedule(noop, { every: 1500.5 }), /every must be an integer/],
    ['a bad id', () => schedule(noop, { every: 1000 }, {}, { id: 'has space' }), /the id must be/],
  ];
  it.each(bad)('refuses %s with a TaskDefinitionError', (_what, fn, message) => {
    expect(fn).toThrow(TaskDefinitionError);
    expect(fn).toThrow(message);
  });

  it('createApp refuses an unknown task, an input that fails the schema and a duplicate id', () => {
    const env = testEnv('sqlite');
    const make = (schedules: AppOptions['schedules']) => () => createApp({ tasks: [noop, withInput], schedules, config: env.config });
    expect(make([schedule('nope', { every: 1000 })])).toThrow(/Schedule "nope": unknown task "nope"/);
    expect(make([schedule(withInput, { every: 1000 }, { team: 7 } as never)])).toThrow(/Schedule "report": Invalid input for task "report": team:/);
    expect(make([schedule(withInput, { every: 1000 })])).toThrow(TaskDefinitionError);
    expect(make([schedule(noop, { every: 1000 }), schedule('noop', { cron: '* * * * *' })])).toThrow(/Schedule "noop" is declared twice/);
    // Fine: the same task twice under its own ids, with valid input.
    const app = make([schedule(withInput, { every: 1000 }, { team: 'a' }, { id: 'report.a' }), schedule('report', { cron: '0 7 * * 1-5', tz: 'Europe/Paris' }, { team: 'b' }, { id: 'report.b' })])();
    expect(app.schedules.map((s) => s.schedulerId)).toEqual(['celerity:report.a', 'celerity:report.b', 'celerity:celerity.purge', 'celerity:celerity.uploads.sweep', 'celerity:celerity.stuck']);
    expect(app.queueNames()).toEqual([MAINTENANCE_QUEUE, 'default']);
    // Maintenance tasks are run by workers but not listed with the app's own tasks.
    expect([...app.tasks.keys()]).toEqual(['noop', 'report']);
    const bare = createApp({ tasks: [noop], maintenance: false, config: env.config });
    expect(bare.schedules).toEqual([]);
    expect(bare.queueNames()).toEqual(['default']);
  });
});

describe('periodic tasks', () => {
  it('a task every 2 s (cron and every) runs once per tick with three workers running', async () => {
    const env = testEnv('sqlite');
    const runs: { scheduler: string; tick: number; jobId: string }[] = [];
    const tick = defineTask({
      name: 'tick',
      input: z.object({ label: z.string() }),
      handler: async ({ label }, ctx) => {
        runs.push({ scheduler: label, tick: tickOf(ctx.jobId), jobId: ctx.jobId });
        return label;
      },
    });
    const schedules = [schedule(tick, { cron: '*/2 * * * * *' }, { label: 'cron' }, { id: 'tick.cron' }), schedule(tick, { every: 2000 }, { label: 'every' }, { id: 'tick.every' })];
    // Three processes' worth: three apps, each with its own connections and worker, all declaring the schedules at once.
    const apps = [0, 1, 2].map(() => appOn(env, { tasks: [tick], schedules, maintenance: false }));
    await Promise.all(apps.map((app) => startWorker(app)));
    const syncs = await Promise.all(apps.map((app) => app.startSchedules()));
    for (const sync of syncs) expect(sync.removed).toEqual([]);
    const started = Date.now();
    await sleep(7_000);

    const byScheduler = (label: string) => runs.filter((r) => r.scheduler === label);
    for (const label of ['cron', 'every']) {
      const ticks = byScheduler(label).map((r) => r.tick);
      // Exactly one run per tick, at least three ticks, two seconds apart.
      expect(new Set(ticks).size, `${label}: ${JSON.stringify(ticks)}`).toBe(ticks.length);
      expect(ticks.length, label).toBeGreaterThanOrEqual(3);
      expect(ticks.length, label).toBeLessThanOrEqual(5);
      const sorted = [...ticks].sort((a, b) => a - b);
      for (let i = 1; i < sorted.length; i++) expect(sorted[i]! - sorted[i - 1]!, label).toBe(2000);
    }
    expect(byScheduler('cron').every((r) => r.tick % 2000 === 0)).toBe(true);
    expect(byScheduler('cron').every((r) => r.tick >= started - 2000)).toBe(true);

    // A tick is an ordinary Celerity job: readable by id, with its input and result.
    const one = byScheduler('every')[0]!;
    const record = await waitFor(async () => {
      const r = await apps[0]!.getJob(one.jobId);
      return r?.status === 'completed' ? r : undefined;
    });
    expect(record).toMatchObject({ task: 'tick', queue: 'default', input: { label: 'every' }, result: 'every', maxAttempts: 4 });

    // Declaring again changes nothing in Redis (the pending tick stays).
    const again = await apps[1]!.startSchedules();
    expect(again.upserted).toEqual([]);
    expect(again.unchanged.sort()).toEqual(['celerity:tick.cron', 'celerity:tick.every']);
  }, 30_000);

  it('removing a schedule from the app removes its scheduler and pending tick, and leaves foreign schedulers alone', async () => {
    const env = testEnv('sqlite');
    const v1 = appOn(env, {
      tasks: [noop, withInput],
      maintenance: false,
      schedules: [schedule(noop, { cron: '0 3 * * *' }), schedule(withInput, { every: 3_600_000 }, { team: 'x' }, { id: 'hourly' })],
    });
    expect((await v1.startSchedules()).upserted.sort()).toEqual(['celerity:hourly', 'celerity:noop']);
    const queue = v1.broker.queue('default');
    // Made with BullMQ directly: not Celerity's to remove.
    await queue.upsertJobScheduler('foreign', { every: 3_600_000 }, { name: 'noop', data: { input: {} } });
    const hourly = await queue.getJobScheduler('celerity:hourly');
    const pendingId = `repeat:celerity:hourly:${hourly!.next}`;
    expect(await queue.getJob(pendingId)).toBeTruthy();

    // The next release drops the hourly schedule and changes the cron one.
    const v2 = appOn(env, { tasks: [noop, withInput], maintenance: false, schedules: [schedule(noop, { cron: '0 4 * * *' })] });
    // While v1's declaration is fresh (a rolling deploy), its schedule stays (schedules-versions.test.ts) ...
    expect(await v2.startSchedules()).toEqual({ upserted: ['celerity:noop'], unchanged: [], removed: [], kept: ['celerity:hourly'] });
    // ... and once it is older than the grace (here none), the next sync removes it.
    await sleep(5);
    const sync = await syncSchedules(v2.broker, v2.schedules, v2.queueNames(), undefined, { graceMs: 0 });
    expect(sync).toEqual({ upserted: [], unchanged: ['celerity:noop'], removed: ['celerity:hourly'], kept: [] });
    const left = await queue.getJobSchedulers();
    expect(left.map((s) => s.key).sort()).toEqual(['celerity:noop', 'foreign']);
    expect(left.find((s) => s.key === 'celerity:noop')!.pattern).toBe('0 4 * * *');
    expect(await queue.getJob(pendingId)).toBeUndefined();

    // An app with no schedules at all removes Celerity's, maintenance included when turned off.
    const v3 = appOn(env, { tasks: [noop], maintenance: false });
    await sleep(5);
    expect((await syncSchedules(v3.broker, v3.schedules, v3.queueNames(), undefined, { graceMs: 0 })).removed).toEqual(['celerity:noop']);
    expect((await queue.getJobSchedulers()).map((s) => s.key)).toEqual(['foreign']);
  });

  it('maintenance schedules are declared on the celerity queue by default', async () => {
    const env = testEnv('sqlite');
    const app = appOn(env, { tasks: [noop] });
    const sync = await app.startSchedules();
    expect(sync.upserted.sort()).toEqual(['celerity:celerity.purge', 'celerity:celerity.stuck', 'celerity:celerity.uploads.sweep']);
    const schedulers = await app.broker.queue(MAINTENANCE_QUEUE).getJobSchedulers();
    expect(Object.fromEntries(schedulers.map((s) => [s.key, s.every]))).toEqual({
      'celerity:celerity.purge': 3_600_000,
      'celerity:celerity.uploads.sweep': 3_600_000,
      'celerity:celerity.stuck': 300_000,
    });
  });
});

describe.each(stores)('maintenance tasks (%s)', (kind) => {
  it('purge deletes the history of jobs finished past the retention, in batches, and nothing else', async () => {
    const env = testEnv(kind);
    const app = appOn(env, { tasks: [noop] });
    const store = await app.openStore();
    const now = Date.now();
    const day = 86_400_000;
    const row = (id: string, status: string, finishedDaysAgo: number | null, createdAt = now - 40 * day) => ({
      id,
      task: 'noop',
      queue: 'default',
      status,
      attempts: 1,
      max_attempts: 1,
      created_at: createdAt,
      updated_at: now,
      event_seq: '0',
      finished_at: finishedDaysAgo === null ? null : now - finishedDaysAgo * day,
    });
    const cutoff = now - 30 * day;
    await store.db
      .insertInto('jobs')
      .values([
        row('old-completed', 'completed', 40),
        row('old-failed', 'failed', 31),
        row('old-cancelled', 'cancelled', 35),
        row('recent-completed', 'completed', 29),
        row('old-but-running', 'started', null),
        row('old-queued', 'queued', null),
        // Finished before the cutoff by a worker's clock behind the producer's, created after it: kept until a
        // later purge, never purged early (the purge bounds both times, migration 0014).
        row('skewed', 'completed', 30 + 500 / day, cutoff + 500),
      ])
      .execute();
    expect(await purgeHistory(store, 0, now)).toEqual({ deleted: 0, cutoff: null });
    // A batch of 2 needs two rounds for three rows.
    expect(await purgeHistory(store, 30, now, 2)).toEqual({ deleted: 3, cutoff });
    const left = await store.db.selectFrom('jobs').select('id').orderBy('id').execute();
    expect(left.map((r) => r.id)).toEqual(['old-but-running', 'old-queued', 'recent-completed', 'skewed']);
    expect(await purgeHistory(store, 30, now + 1000)).toEqual({ deleted: 1, cutoff: cutoff + 1000 });
  });

  it('celerity.purge also removes Redis results past the result TTL; celerity.stuck reports an active job whose lock is gone', async () => {
    const env = testEnv(kind, { resultTtl: 1, historyRetention: 30 });
    const gate = deferred();
    const hold = defineTask({ name: 'hold', input: z.object({}), handler: async () => gate.promise });
    const app = appOn(env, { tasks: [noop, hold] });
    await app.openStore();
    await startWorker(app);
    const done = await app.enqueue(noop, {});
    await done.wait();
    await sleep(1_100);

    const purge = await (await app.enqueueByName('celerity.purge', {})).wait();
    expect(purge).toMatchObject({ status: 'completed', queue: MAINTENANCE_QUEUE, result: { jobs_deleted: 0, redis_completed_removed: 1, redis_failed_removed: 0 } });
    expect(await app.broker.queue('default').getJob(done.id)).toBeUndefined();

    const held = await app.enqueue(hold, {});
    await waitFor(async () => (await app.getJob(held.id))?.status === 'started');
    expect(await findStuckJobs(app.broker, app.queueNames())).toEqual([]);
    // The worker froze (no more lock renewals) and its lock expired.
    await testRedis(env.config.brokerUrl).del(`${env.prefix}:default:${held.id}:lock`);
    const report = await (await app.enqueueByName('celerity.stuck', {})).wait();
    expect(report.status).toBe('completed');
    expect((report.result as { stuck: unknown[] }).stuck).toEqual([{ job_id: held.id, task: 'hold', queue: 'default', started_at: expect.any(Number), attempts: 1 }]);
    gate.resolve();
  }, 20_000);
});

describe('cleanRedisResults', () => {
  it('leaves results younger than the TTL', async () => {
    const env = testEnv('sqlite');
    const app = appOn(env, { tasks: [noop], maintenance: false });
    await startWorker(app);
    await (await app.enqueue(noop, {})).wait();
    expect(await cleanRedisResults(app.broker, app.queueNames(), 3600)).toEqual({ completed: 0, failed: 0 });
  });
});
