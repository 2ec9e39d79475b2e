/**
 * history_cost: what the SQL history costs a job, measured apart from
 * everything else. One `celerity recorder` process is started and awaited
 * (its start-up is in no phase); then, for each of two phases, the work is
 * done while the recorder process is stopped (`SIGSTOP`), and measured is
 * only its catch-up once it is continued (`SIGCONT`), alone on the machine:
 *
 * 1. **add**: the bench process, which runs no recorder, enqueues N no-op
 *    jobs (20,000; 2,000 with --quick) on a paused queue; the recorder
 *    process then records their `added` and `waiting` events until the
 *    history holds N queued rows. No producer handed it a row, so it reads
 *    every job's hash: the dearer way a job's add is recorded.
 * 2. **drain**: one `celerity worker` (concurrency 50, its recorder off)
 *    runs the jobs; the same recorder process then records them, until the
 *    history holds N completed rows: a job's start and end, on the happy
 *    path, in one update.
 *
 * 3. **catch-up**: N more jobs, enqueued on the paused queue and then run
 *    by the worker, all while the recorder process is stopped; it then
 *    records them, as after a restart or an outage of the only recorder:
 *    each job's add is read after the job has ended, its start and end in
 *    later batches.
 *
 * Each phase reports CPU µs a job of the recorder process, of PostgreSQL
 * (every `postgres` process) and of Redis (its process: nothing else uses
 * it meanwhile but the bench's checks whether the recorder is through, a
 * few commands every 20 ms), and the drain the worker's while it ran the
 * jobs. Their sum is the history's cost a job, with nothing of s1's around
 * it (the producer's and the worker's own recorders, the enqueue's
 * leftovers), and it moves less from run to run than a ratio of rates
 * (docs/benchmarks.md, runs 28 and 29).
 */
import { BENCH_QUEUE, noop } from '../apps/tasks.ts';
import { cpuSnapshot, cpuUse, type CpuSnapshot } from '../lib/cpu.ts';
import { countRows } from '../lib/drains.ts';
import { openApp, storeEnv } from '../lib/env.ts';
import { pollUntil, round, runPool } from '../lib/measure.ts';
import { celerity } from '../lib/procs.ts';
import type { Scenario } from '../lib/types.ts';
import { RECORDER_GROUP } from '../../packages/celerity/src/store/recorder.ts';
import { historyLagMs } from '../../packages/celerity/src/store/history-lag.ts';

export const historyCost: Scenario = {
  name: 'history_cost',
  title: 'what the SQL history costs a job, recorded by a recorder process catching up alone: CPU of the recorder, PostgreSQL and Redis',
  async run(ctx) {
    const jobs = ctx.quick ? 2_000 : 20_000;
    const concurrency = 50;
    const env = storeEnv(ctx, ctx.scope, 'postgres');
    const app = await openApp(ctx, ctx.scope, env);
    const redis = app.broker.redis;
    const queue = app.broker.queue(BENCH_QUEUE);
    await queue.pause();
    const events = queue.keys.events!;

    // Started first and awaited, so that its start-up is in no phase.
    const recorder = celerity(ctx, ctx.scope, 'celerity-recorder', 'recorder', env.childEnv());
    await pollUntil(
      async () => {
        recorder.assertRunning();
        const consumers = (await redis.xinfo('CONSUMERS', events, RECORDER_GROUP).catch(() => [])) as unknown[];
        return consumers.length > 0;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the recorder process reading' },
    );
    const read = (pids: number[]): Promise<CpuSnapshot> => cpuSnapshot(redis, pids);
    /** CPU µs a job of a child process between two readings. */
    const childUs = (a: CpuSnapshot, b: CpuSnapshot, pid: number) => round(((b.children.get(pid) ?? NaN) - (a.children.get(pid) ?? NaN)) * (1_000 / jobs));
    const perJob = (a: CpuSnapshot, b: CpuSnapshot) => {
      const use = cpuUse(a, b);
      return {
        recorder_us: childUs(a, b, recorder.pid),
        postgres_us: round((use.postgres_ms ?? NaN) * (1_000 / jobs)),
        redis_us: round((use.redis_ms ?? NaN) * (1_000 / jobs)),
      };
    };
    // The work of a phase is done while the recorder process is stopped, so
    // that what is measured after is its catch-up alone: Redis's and
    // PostgreSQL's CPU then is the history's.
    const pause = () => process.kill(recorder.pid, 'SIGSTOP');
    const resume = () => process.kill(recorder.pid, 'SIGCONT');
    ctx.scope.defer('continue the recorder', () => {
      try {
        resume();
      } catch {}
    });
    const timeoutMs = Math.max(60_000, jobs * 10);
    // Redis is asked until the group has read and acknowledged everything,
    // then SQL: a count every few ms from the start would be PostgreSQL CPU
    // in the very phase it measures.
    const recorded = async (status: string, ready: () => Promise<boolean>, rows = jobs) => {
      await pollUntil(
        async () => {
          recorder.assertRunning();
          // Nothing undelivered, nothing unacknowledged.
          return (await ready()) && (await historyLagMs(redis, events)) === 0;
        },
        { intervalMs: 20, timeoutMs, what: `the recorder through the ${status} events` },
      );
      await pollUntil(async () => (await countRows(app, status)) >= rows, {
        intervalMs: 20,
        timeoutMs,
        what: `${rows} ${status} rows in the history`,
        describe: async () => `${await countRows(app, status)} ${status}`,
      });
    };

    ctx.log(`add: ${jobs} jobs enqueued on a paused queue (no recorder in the bench process), recorded by the recorder process`);
    pause();
    await runPool(jobs, 256, () => app.enqueue(noop, {}));
    const add0 = await read([recorder.pid]);
    resume();
    await recorded('queued', async () => true);
    const add1 = await read([recorder.pid]);

    ctx.log('drain: a worker with its recorder off runs the jobs; the recorder process records them');
    const worker = celerity(ctx, ctx.scope, 'celerity-worker', 'worker', env.childEnv({ CELERITY_CONCURRENCY: String(concurrency), CELERITY_RECORDER: 'off' }));
    await pollUntil(
      async () => {
        worker.assertRunning();
        return (await queue.getWorkersCount()) >= 1;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the worker on the queue' },
    );
    pause();
    const run0 = await read([worker.pid]);
    await queue.resume();
    await pollUntil(async () => (await queue.getJobCounts('completed')).completed! >= jobs, { intervalMs: 20, timeoutMs, what: `${jobs} jobs completed in Redis` });
    const drain0 = await read([recorder.pid, worker.pid]);
    resume();
    await recorded('completed', async () => true);
    const drain1 = await read([recorder.pid, worker.pid]);

    ctx.log('catch-up: as many jobs again enqueued and run while the recorder process is stopped; then it records them');
    pause();
    await queue.pause();
    await runPool(jobs, 256, () => app.enqueue(noop, {}));
    await queue.resume();
    await pollUntil(async () => (await queue.getJobCounts('completed')).completed! >= 2 * jobs, { intervalMs: 20, timeoutMs, what: `${2 * jobs} jobs completed in Redis` });
    const catch0 = await read([recorder.pid]);
    resume();
    await recorded('completed', async () => true, 2 * jobs);
    const catch1 = await read([recorder.pid]);

    const add = perJob(add0, add1);
    const catchUp = perJob(catch0, catch1);
    const drain = { ...perJob(drain0, drain1), worker_us: childUs(run0, drain0, worker.pid) };
    const history = (p: ReturnType<typeof perJob>) => round(p.recorder_us + p.postgres_us + p.redis_us);
    const rows = [
      { metric: 'add, recorded from the hash: recorder process CPU a job', unit: 'µs', celerity: add.recorder_us },
      { metric: 'add: PostgreSQL CPU a job', unit: 'µs', celerity: add.postgres_us },
      { metric: 'add: Redis CPU a job', unit: 'µs', celerity: add.redis_us },
      { metric: 'add: the history a job (the three)', unit: 'µs', celerity: history(add) },
      { metric: 'drain, start and end on the happy path: recorder process CPU a job', unit: 'µs', celerity: drain.recorder_us },
      { metric: 'drain: PostgreSQL CPU a job', unit: 'µs', celerity: drain.postgres_us },
      { metric: 'drain: Redis CPU a job', unit: 'µs', celerity: drain.redis_us },
      { metric: 'drain: the history a job (the three)', unit: 'µs', celerity: history(drain) },
      { metric: 'drain: worker process CPU a job while it ran them (its recorder off)', unit: 'µs', celerity: drain.worker_us },
      { metric: 'catch-up, jobs that ended before their adds were read: recorder process CPU a job', unit: 'µs', celerity: catchUp.recorder_us },
      { metric: 'catch-up: PostgreSQL CPU a job', unit: 'µs', celerity: catchUp.postgres_us },
      { metric: 'catch-up: Redis CPU a job', unit: 'µs', celerity: catchUp.redis_us },
      { metric: 'catch-up: the history a job (the three)', unit: 'µs', celerity: history(catchUp) },
    ];
    return {
      params: {
        jobs,
        concurrency,
        store: 'postgres',
        recorder: 'one celerity recorder process, stopped while each phase does its work and measured catching up; the bench process runs none, the worker has CELERITY_RECORDER=off',
      },
      fields: { add: { ...add, history_us: history(add) }, drain: { ...drain, history_us: history(drain) }, catch_up: { ...catchUp, history_us: history(catchUp) } },
      rows,
    };
  },
};
