/**
 * The enqueue-then-drain measurement shared by s1_throughput and s5_scale,
 * done the same way for Celerity and for raw BullMQ:
 *
 * 1. the queue is paused, then the worker process(es) are started and
 *    awaited (they are connected and idle before anything is timed);
 * 2. enqueue: the bench process adds N no-op jobs with `inFlight` adds
 *    pending at once; timed from the first add to the last acknowledgement;
 * 3. drain: the queue is resumed; timed from the resume until the last job
 *    is completed (Celerity: `completed` count in Redis = N, and then the SQL
 *    history holding N `completed` rows, read only from that moment on; raw
 *    BullMQ, whose jobs are removed on completion: waiting + active = 0).
 *
 * The Celerity side runs its recorder in the bench process for the whole
 * run (as the API process does), and each `celerity worker` runs its own.
 */
import { Queue } from 'bullmq';
import { sql } from 'kysely';
import type { App } from '../../packages/celerity/src/app.ts';
import { ALL_TENANTS } from '../../packages/celerity/src/auth/principal.ts';
import { withTenantScope } from '../../packages/celerity/src/store/tenant-scope.ts';
import { BENCH_QUEUE, noop } from '../apps/tasks.ts';
import { cpuSnapshot, cpuUse, type CpuSnapshot, type CpuUse } from './cpu.ts';
import { createRedis } from '../../packages/celerity/src/broker/connection.ts';
import { cleanEnv, openApp, redisPrefix, redisTarget, storeEnv, type StoreKind } from './env.ts';
import { now, perSecond, pollUntil, runPool, sleep } from './measure.ts';
import { celerity, rawWorker, type Proc } from './procs.ts';
import { jobsTableWrites, type TableWrites, writesPerJob } from './pg-writes.ts';
import { withScope } from './scope.ts';
import { GC_TRACE_FLAG, type WorkerGc, workerGc } from './worker-gc.ts';
import type { ScenarioContext } from './types.ts';

export interface DrainOptions {
  jobs: number;
  /** Worker processes. */
  workers: number;
  /** Jobs each worker runs at once. */
  concurrency: number;
  /** Adds pending at once while enqueueing. */
  inFlight: number;
  /**
   * The first worker process traces its collections (`--trace-gc-nvp`);
   * the result's `worker_gc` sums those of the drain's second half
   * (worker_gc scenario).
   */
  traceWorkerGc?: boolean;
  /**
   * Celerity only: where the history is written. `every-process` (the
   * default deployment): a recorder in the bench process, as in an API
   * process, and one in each worker. `own-process`: one `celerity recorder`
   * process, the bench process and the workers with `CELERITY_RECORDER=off`
   * (docs/deploy.md). `off` (only {@link celerityCoreDrain}): no recorder
   * anywhere, no history written.
   */
  recorder?: 'every-process' | 'own-process' | 'off';
  /**
   * Celerity on PostgreSQL, full runs: count the `jobs` table's row writes
   * (`sql_writes_per_job`). Each reading waits 2 s for the statistics, so
   * only the scenario that reports them asks.
   */
  countWrites?: boolean;
}

export interface CelerityDrain {
  cpu: { enqueue: CpuUse; drain: CpuUse };
  enqueue_ms: number;
  enqueue_per_s: number;
  /** Resume → every job `completed` in Redis. */
  drain_ms: number;
  drain_per_s: number;
  /** Resume → every job `completed` in the SQL history. */
  recorded_ms: number;
  recorded_per_s: number;
  /** Rows the history held when the drain started (how far the recorder had got with the enqueue events). */
  rows_at_resume: number;
  /** CPU ms of each child process (by name: `celerity-worker-1`, `celerity-recorder`) in each phase. */
  cpu_by_process: { enqueue: Record<string, number>; drain: Record<string, number> };
  /**
   * PostgreSQL: the `jobs` table's row writes per job over the enqueue and
   * the drain (read before the first add and after the last row, outside
   * the timed spans): inserted 1; updated below 1 when rows were inserted
   * already started or completed, above 1 when jobs' starts and ends were
   * written apart. Null unless `countWrites`, on SQLite, and in a quick
   * run.
   */
  sql_writes_per_job: TableWrites | null;
  /** With `traceWorkerGc`: the first worker's collections in the drain's second half. */
  worker_gc?: WorkerGc;
}

export interface RawDrain {
  cpu: { enqueue: CpuUse; drain: CpuUse };
  enqueue_ms: number;
  enqueue_per_s: number;
  drain_ms: number;
  drain_per_s: number;
  /** With `traceWorkerGc`: the first worker's collections in the drain's second half. */
  worker_gc?: WorkerGc;
}

const POLL_REDIS_MS = 10;
const POLL_SQL_MS = 20;

function drainTimeout(opts: DrainOptions): number {
  // Generous: a stuck run fails with its counts instead of hanging forever.
  return Math.max(60_000, opts.jobs * 10);
}

/** Waits until `count` workers are connected to the queue (BullMQ names its worker connections). */
async function waitWorkers(queue: Queue, count: number, procs: Proc[]): Promise<void> {
  await pollUntil(
    async () => {
      for (const p of procs) p.assertRunning();
      return (await queue.getWorkersCount()) >= count;
    },
    { intervalMs: 50, timeoutMs: 60_000, what: `${count} worker(s) on the queue`, describe: async () => `${await queue.getWorkersCount()} connected` },
  );
}

export async function celerityDrain(ctx: ScenarioContext, kind: StoreKind, opts: DrainOptions): Promise<CelerityDrain> {
  return withScope(ctx.scope, async (scope) => {
    const env = storeEnv(ctx, scope, kind);
    const app = await openApp(ctx, scope, env);
    // A recorder in the bench process and in each worker, or in none of them (own-process, off).
    const everyProcess = (opts.recorder ?? 'every-process') === 'every-process';
    if (everyProcess) {
      const recorder = await app.startRecorder();
      scope.defer('stop recorder', () => recorder.stop());
    }
    const queue = app.broker.queue(BENCH_QUEUE);
    await queue.pause();

    const procs: Proc[] = [];
    for (let w = 0; w < opts.workers; w++) {
      const childEnv = env.childEnv({ CELERITY_CONCURRENCY: String(opts.concurrency), ...(everyProcess ? {} : { CELERITY_RECORDER: 'off' }) });
      procs.push(celerity(ctx, scope, `celerity-worker-${w + 1}`, 'worker', childEnv, undefined, gcArgs(opts, w)));
    }
    if (opts.recorder === 'own-process') procs.push(celerity(ctx, scope, 'celerity-recorder', 'recorder', env.childEnv()));
    await waitWorkers(queue, opts.workers, procs);
    // The recorder process's CPU is counted with the workers' (detail.*.cpu_ms.workers_ms).

    const pids = procs.map((p) => p.pid);
    // Read before the enqueue (not between it and the drain, where the wait
    // would let the recorders catch up outside both timed spans).
    const writes0 = opts.countWrites && !ctx.quick ? await jobsTableWrites(app) : null;
    const cpu0 = await cpuSnapshot(app.broker.redis, pids);
    const enqueueMs = await runPool(opts.jobs, opts.inFlight, () => app.enqueue(noop, {}));
    const cpu1 = await cpuSnapshot(app.broker.redis, pids);
    const rowsAtResume = await countRows(app);

    const cpu2 = await cpuSnapshot(app.broker.redis, pids);
    const resumedAt = now();
    await queue.resume();
    const timeoutMs = drainTimeout(opts);
    const describe = async () => {
      const counts = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
      return `redis ${JSON.stringify(counts)}, sql completed ${await countRows(app, 'completed')}`;
    };
    const redisDoneAt = await pollUntil(async () => (await queue.getJobCounts('completed')).completed! >= opts.jobs, {
      intervalMs: POLL_REDIS_MS,
      timeoutMs,
      what: `${opts.jobs} jobs completed in Redis`,
      describe,
    });
    // SQL only once Redis has every job completed: the history cannot be
    // complete before, and a count every 20 ms from the resume took
    // PostgreSQL CPU from the drain it measured. The peers' observers wait
    // the same way (bench/peers).
    const sqlDoneAt =
      opts.recorder === 'off'
        ? redisDoneAt
        : await pollUntil(async () => (await countRows(app, 'completed')) >= opts.jobs, {
            intervalMs: POLL_SQL_MS,
            timeoutMs,
            what: `${opts.jobs} jobs completed in the SQL history`,
            describe,
          });
    const cpu3 = await cpuSnapshot(app.broker.redis, pids);
    const writes1 = writes0 ? await jobsTableWrites(app) : null;
    const failed = (await queue.getJobCounts('failed')).failed!;
    if (failed > 0) throw new Error(`celerity: ${failed} jobs failed`);
    for (const p of procs) p.assertRunning();

    const drainMs = redisDoneAt - resumedAt;
    const recordedMs = sqlDoneAt - resumedAt;
    return {
      enqueue_ms: enqueueMs,
      enqueue_per_s: perSecond(opts.jobs, enqueueMs),
      drain_ms: drainMs,
      drain_per_s: perSecond(opts.jobs, drainMs),
      recorded_ms: recordedMs,
      recorded_per_s: perSecond(opts.jobs, recordedMs),
      rows_at_resume: rowsAtResume,
      cpu: { enqueue: cpuUse(cpu0, cpu1), drain: cpuUse(cpu2, cpu3) },
      cpu_by_process: { enqueue: byProcess(procs, cpu0, cpu1), drain: byProcess(procs, cpu2, cpu3) },
      sql_writes_per_job: writesPerJob(writes0, writes1, opts.jobs),
      ...gcOf(opts, procs, resumedAt, redisDoneAt),
    };
  });
}

/**
 * Celerity without its history: the same enqueue and drain as
 * {@link celerityDrain}, with no recorder in any process, so nothing reads
 * the event streams or writes SQL (the store is opened, no job is written). What
 * is left is Celerity's own work on the job (its options, a kept result,
 * metrics, validation, the worker's context): the floor under a recorded
 * drain, which says how much of the gap to raw BullMQ is the history's.
 */
export async function celerityCoreDrain(ctx: ScenarioContext, opts: DrainOptions): Promise<RawDrain> {
  const run = await celerityDrain(ctx, 'sqlite', { ...opts, recorder: 'off', countWrites: false });
  return { enqueue_ms: run.enqueue_ms, enqueue_per_s: run.enqueue_per_s, drain_ms: run.drain_ms, drain_per_s: run.drain_per_s, cpu: run.cpu, ...(run.worker_gc ? { worker_gc: run.worker_gc } : {}) };
}

function byProcess(procs: Proc[], a: CpuSnapshot, b: CpuSnapshot): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of procs) {
    const after = b.children.get(p.pid);
    if (after !== undefined) out[p.name] = after - (a.children.get(p.pid) ?? 0);
  }
  return out;
}

/** `select count(*) from jobs [where status = ...]` through the app's Kysely. */
export async function countRows(app: App, status?: string): Promise<number> {
  const row = await withTenantScope(app.store, ALL_TENANTS, (db) => {
    let q = db.selectFrom('jobs').select(sql<string | number>`count(*)`.as('n'));
    if (status) q = q.where('status', '=', status);
    return q.executeTakeFirstOrThrow();
  });
  return Number(row.n);
}

export async function rawDrain(ctx: ScenarioContext, opts: DrainOptions): Promise<RawDrain> {
  return withScope(ctx.scope, async (scope) => {
    const prefix = redisPrefix(scope, ctx.redisUrl, ctx.redisCluster);
    // Celerity's producer connection (fail-fast, no auto-pipelining), the same for both sides.
    const connection = createRedis(redisTarget(ctx), 'producer');
    scope.defer('disconnect', () => connection.disconnect());
    const queue = new Queue(BENCH_QUEUE, { connection, prefix });
    queue.on('error', () => {});
    scope.defer('close queue', () => queue.close());
    await queue.waitUntilReady();
    await queue.pause();

    const procs: Proc[] = [];
    for (let w = 0; w < opts.workers; w++) {
      const env = {
        ...cleanEnv(),
        BENCH_REDIS_URL: ctx.redisUrl,
        ...(ctx.redisCluster ? { BENCH_REDIS_CLUSTER: 'on' } : {}),
        BENCH_PREFIX: prefix,
        BENCH_QUEUE,
        BENCH_CONCURRENCY: String(opts.concurrency),
      };
      procs.push(rawWorker(ctx, scope, `raw-worker-${w + 1}`, env, gcArgs(opts, w)));
    }
    await Promise.all(procs.map((p) => p.message((m: { type?: string }) => m.type === 'ready', 60_000)));
    await waitWorkers(queue, opts.workers, procs);

    const pids = procs.map((p) => p.pid);
    const cpu0 = await cpuSnapshot(connection, pids);
    const enqueueMs = await runPool(opts.jobs, opts.inFlight, () => queue.add(noop.name, {}, { removeOnComplete: true }));
    const cpu1 = await cpuSnapshot(connection, pids);

    const cpu2 = await cpuSnapshot(connection, pids);
    const resumedAt = now();
    await queue.resume();
    const doneAt = await pollUntil(
      async () => {
        const c = await queue.getJobCounts('waiting', 'active', 'prioritized', 'delayed');
        return c.waiting! + c.active! + c.prioritized! + c.delayed! === 0;
      },
      {
        intervalMs: POLL_REDIS_MS,
        timeoutMs: drainTimeout(opts),
        what: `raw BullMQ queue drained`,
        describe: async () => JSON.stringify(await queue.getJobCounts('waiting', 'active', 'failed')),
      },
    );
    const cpu3 = await cpuSnapshot(connection, pids);
    // Every job ran and completed: the workers' own counts must add up. (A
    // worker counts a job once BullMQ's reply reaches it, a moment after
    // Redis shows it done, so ask until the counts are in.)
    const stats = () =>
      Promise.all(
        procs.map((p) => {
          const reply = p.message<{ completed: number; failed: number }>((m: { type?: string }) => m.type === 'stats', 10_000);
          p.send({ type: 'stats' });
          return reply;
        }),
      ).then((all) => ({ completed: all.reduce((s, x) => s + x.completed, 0), failed: all.reduce((s, x) => s + x.failed, 0) }));
    let counts = await stats();
    for (let i = 0; i < 100 && counts.completed + counts.failed < opts.jobs; i++) {
      await sleep(50);
      counts = await stats();
    }
    if (counts.completed !== opts.jobs || counts.failed !== 0) {
      throw new Error(`raw bullmq: ${counts.completed} completed, ${counts.failed} failed of ${opts.jobs}`);
    }

    const drainMs = doneAt - resumedAt;
    return {
      enqueue_ms: enqueueMs,
      enqueue_per_s: perSecond(opts.jobs, enqueueMs),
      drain_ms: drainMs,
      drain_per_s: perSecond(opts.jobs, drainMs),
      cpu: { enqueue: cpuUse(cpu0, cpu1), drain: cpuUse(cpu2, cpu3) },
      ...gcOf(opts, procs, resumedAt, doneAt),
    };
  });
}

/** The node flags of worker `w` (0-based): the GC trace for the first one when asked. */
function gcArgs(opts: DrainOptions, w: number): string[] | undefined {
  return opts.traceWorkerGc && w === 0 ? [GC_TRACE_FLAG] : undefined;
}

/**
 * The first worker's collections in the drain's second half: the first
 * half's promote what the first jobs compile and warm (a few MB, raw
 * BullMQ's as much as Celerity's). Its isolate's clock starts a moment
 * after the spawn, so the window starts that moment later in the drain.
 */
function gcOf(opts: DrainOptions, procs: Proc[], resumedAt: number, doneAt: number): { worker_gc?: WorkerGc } {
  if (!opts.traceWorkerGc || !procs[0]) return {};
  const half = (resumedAt + doneAt) / 2;
  return { worker_gc: workerGc(procs[0].stdout, half - procs[0].spawnedAt, doneAt - procs[0].spawnedAt) };
}

/**
 * Warms the bench process's enqueue paths (JIT, connections) for both sides
 * on throwaway prefixes, so that whichever side runs first is not penalised.
 */
export async function warmUp(ctx: ScenarioContext, jobs = 1_000): Promise<void> {
  await withScope(ctx.scope, async (scope) => {
    const env = storeEnv(ctx, scope, 'sqlite');
    const app = await openApp(ctx, scope, env);
    await runPool(jobs, 200, () => app.enqueue(noop, {}));
    const connection = createRedis(redisTarget(ctx), 'producer');
    scope.defer('disconnect', () => connection.disconnect());
    const raw = new Queue(BENCH_QUEUE, { connection, prefix: redisPrefix(scope, ctx.redisUrl, ctx.redisCluster) });
    raw.on('error', () => {});
    scope.defer('close warm-up queue', () => raw.close());
    await raw.waitUntilReady();
    await runPool(jobs, 200, () => raw.add(noop.name, {}, { removeOnComplete: true }));
  });
}
