/**
 * history_cost: what the SQL history costs a job, measured apart from
 * everything else. One `celerity recorder` process is started and awaited
 * (its start-up is in no phase); then:
 *
 * 1. **add**: the bench process, which runs no recorder, enqueues N no-op
 *    jobs (20,000; 2,000 with --quick) on a paused queue, and the recorder
 *    process records their `added` and `waiting` events until the history
 *    holds N queued rows. No producer handed it a row, so it reads every
 *    job's hash: the dearer way a job's add is recorded.
 * 2. **drain**: one `celerity worker` (concurrency 50, its recorder off)
 *    runs the jobs while the same recorder process records them, until the
 *    history holds N completed rows: a job's start and end, on the happy
 *    path.
 *
 * Each phase reports CPU µs a job of the recorder process, of PostgreSQL
 * (every `postgres` process) and of Redis serving the recorder's own
 * commands (`INFO commandstats`: `XREADGROUP`, `XACK`, `EVAL`, by Redis's
 * clock), and the drain the worker's. Their sum is the history's cost a
 * job, with nothing of s1's around it (the producer's and the worker's own
 * recorders, the enqueue's leftovers), and it moves less from run to run
 * than a ratio of rates (docs/benchmarks.md, run 28).
 */
import { BENCH_QUEUE, noop } from '../apps/tasks.ts';
import { cpuSnapshot, cpuUse, type CpuSnapshot } from '../lib/cpu.ts';
import { countRows } from '../lib/drains.ts';
import { openApp, storeEnv } from '../lib/env.ts';
import { pollUntil, round, runPool } from '../lib/measure.ts';
import { celerity } from '../lib/procs.ts';
import type { Scenario } from '../lib/types.ts';
import type { RedisClient } from '../../packages/celerity/src/broker/connection.ts';
import { RECORDER_GROUP } from '../../packages/celerity/src/store/recorder.ts';
import { historyLagMs } from '../../packages/celerity/src/store/history-lag.ts';

/** The recorder's commands, whose time Redis counts in `INFO commandstats`. */
const RECORDER_COMMANDS = ['xreadgroup', 'xack', 'eval'] as const;

/** Microseconds Redis spent in each of {@link RECORDER_COMMANDS} so far. */
async function recorderCommandUsec(redis: RedisClient): Promise<number> {
  const info = await redis.info('commandstats');
  let usec = 0;
  for (const command of RECORDER_COMMANDS) usec += Number(new RegExp(`^cmdstat_${command}:calls=\\d+,usec=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  return usec;
}

interface Reading {
  cpu: CpuSnapshot;
  redisUsec: number;
}

export const historyCost: Scenario = {
  name: 'history_cost',
  title: "what the SQL history costs a job, recorded by a recorder process alone: CPU of the recorder, PostgreSQL and Redis's recorder commands",
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
    const read = async (pids: number[]): Promise<Reading> => ({ cpu: await cpuSnapshot(redis, pids), redisUsec: await recorderCommandUsec(redis) });
    /** CPU µs a job of a child process between two readings. */
    const childUs = (a: Reading, b: Reading, pid: number) => round(((b.cpu.children.get(pid) ?? NaN) - (a.cpu.children.get(pid) ?? NaN)) * (1_000 / jobs));
    const perJob = (a: Reading, b: Reading) => ({
      recorder_us: childUs(a, b, recorder.pid),
      postgres_us: round((cpuUse(a.cpu, b.cpu).postgres_ms ?? NaN) * (1_000 / jobs)),
      redis_recorder_us: round((b.redisUsec - a.redisUsec) / jobs),
    });
    const timeoutMs = Math.max(60_000, jobs * 10);
    // Redis is asked until the group has read and acknowledged everything,
    // then SQL: a count every few ms from the start would be PostgreSQL CPU
    // in the very phase it measures.
    const recorded = async (status: string, ready: () => Promise<boolean>) => {
      await pollUntil(
        async () => {
          recorder.assertRunning();
          // Nothing undelivered, nothing unacknowledged.
          return (await ready()) && (await historyLagMs(redis, events)) === 0;
        },
        { intervalMs: 20, timeoutMs, what: `the recorder through the ${status} events` },
      );
      await pollUntil(async () => (await countRows(app, status)) >= jobs, {
        intervalMs: 20,
        timeoutMs,
        what: `${jobs} ${status} rows in the history`,
        describe: async () => `${await countRows(app, status)} ${status}`,
      });
    };

    ctx.log(`add: ${jobs} jobs enqueued on a paused queue (no recorder in the bench process), recorded by the recorder process`);
    const add0 = await read([recorder.pid]);
    await runPool(jobs, 256, () => app.enqueue(noop, {}));
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
    const drain0 = await read([recorder.pid, worker.pid]);
    await queue.resume();
    await recorded('completed', async () => (await queue.getJobCounts('completed')).completed! >= jobs);
    const drain1 = await read([recorder.pid, worker.pid]);

    const add = perJob(add0, add1);
    const drain = { ...perJob(drain0, drain1), worker_us: childUs(drain0, drain1, worker.pid) };
    const history = (p: ReturnType<typeof perJob>) => round(p.recorder_us + p.postgres_us + p.redis_recorder_us);
    const rows = [
      { metric: 'add, recorded from the hash: recorder process CPU a job', unit: 'µs', celerity: add.recorder_us },
      { metric: 'add: PostgreSQL CPU a job', unit: 'µs', celerity: add.postgres_us },
      { metric: "add: Redis's time in the recorder's commands a job", unit: 'µs', celerity: add.redis_recorder_us },
      { metric: 'add: the history a job (the three)', unit: 'µs', celerity: history(add) },
      { metric: 'drain, start and end on the happy path: recorder process CPU a job', unit: 'µs', celerity: drain.recorder_us },
      { metric: 'drain: PostgreSQL CPU a job', unit: 'µs', celerity: drain.postgres_us },
      { metric: "drain: Redis's time in the recorder's commands a job", unit: 'µs', celerity: drain.redis_recorder_us },
      { metric: 'drain: the history a job (the three)', unit: 'µs', celerity: history(drain) },
      { metric: 'drain: worker process CPU a job (its recorder off)', unit: 'µs', celerity: drain.worker_us },
    ];
    return {
      params: { jobs, concurrency, store: 'postgres', recorder: 'one celerity recorder process; the bench process runs none, the worker has CELERITY_RECORDER=off' },
      fields: { add: { ...add, history_us: history(add) }, drain: { ...drain, history_us: history(drain) } },
      rows,
    };
  },
};
