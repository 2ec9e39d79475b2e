/**
 * s6_fairness: fair scheduling between tenants in one queue (issue 14).
 *
 * Part 1, the flood: tenant A enqueues 20,000 jobs of 10 ms; one second
 * later tenants B to K each submit one job per second for 30 s (each at its
 * own offset within the second). Two `celerity worker` processes at
 * concurrency 10 consume the queues. Run on the queue `fair`
 * (CELERITY_FAIR_QUEUES=fair), then on `fifo` (BullMQ's arrival order), then
 * (full runs) `fifo` and `fair` again, on the same workers. Reported, the
 * worst of a side's runs for waits and Jain's index, their mean for
 * throughput:
 * - the wait (submit → start) of B–K's jobs, p50/p99/max;
 * - Jain's index per 5 s window (0.5 s in --quick) over the tenants with runnable work, on each
 *   tenant's starts divided by its max-min fair share of the window's starts
 *   (a tenant that asks for less than an equal share is owed only what it
 *   asks for, so the index is 1 when the scheduler is max-min fair);
 * - throughput: jobs started per second from the first start until A's last
 *   start (while the queue was backlogged), against the run without fairness.
 * Part 2, weights: X and Y (weights 2 and 1, from CELERITY_FAIR_WEIGHTS)
 * both enqueue a flood of 5,000 jobs of 10 ms; the split of starts while
 * both are backlogged.
 * Part 3, the cost of a dequeue: the dispatch script alone (no workers),
 * taking jobs from 10 active tenants and from 1,000, 100 per call, the calls
 * alternating between the two: the median call's time per job taken.
 *
 * Times: submit is the job's `timestamp`, start its `processedOn`, both
 * written by processes on this machine (Date.now()).
 */
import { fairTask, fifoTask } from '../apps/fair-app.ts';
import { fairKeys } from '../../packages/celerity/src/broker/fair-keys.ts';
import { fairCommands } from '../../packages/celerity/src/fairness/dispatcher.ts';
import type { App } from '../../packages/celerity/src/app.ts';
import { openApp, storeEnv, type StoreEnv } from '../lib/env.ts';
import { now, percentile, pollUntil, ratio, round, sleep } from '../lib/measure.ts';
import { celerity } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';

const SMALL = ['B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K'];
/** Part 2's tenants and their weights (CELERITY_FAIR_WEIGHTS of the workers). */
const HEAVY = { X: 2, Y: 1 };

interface Started {
  tenant: string;
  submit: number;
  start: number;
}

/**
 * The two worker processes (concurrency 10) and the bench process's app as
 * the producer, on one prefix: the queue `fair` goes through the fair stage,
 * `fifo` does not. The runs take turns, so each has the workers to itself.
 */
async function setUp(ctx: ScenarioContext, scope: Scope): Promise<{ app: App; env: StoreEnv }> {
  const env = storeEnv(ctx, scope, 'postgres');
  Object.assign(env.flags, {
    fairQueues: fairTask.queue,
    fairWeights: Object.entries(HEAVY)
      .map(([t, w]) => `${fairTask.queue}:${t}=${w}`)
      .join(','),
  });
  const workers = [0, 1].map((i) => celerity(ctx, scope, `worker-${i}`, 'worker', env.childEnv({ CELERITY_CONCURRENCY: '10' }), 'bench/apps/fair-app.ts'));
  const app = await openApp(ctx, scope, env, [fairTask, fifoTask]);
  for (const q of [fairTask.queue, fifoTask.queue]) {
    const queue = app.broker.queue(q);
    await pollUntil(
      async () => {
        for (const w of workers) w.assertRunning();
        return (await queue.getWorkersCount()) >= 2;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the workers to connect' },
    );
  }
  // The workers write the configured weights as they start.
  await pollUntil(async () => (await app.broker.redis.hget(`${fairKeys.base(env.prefix, fairTask.queue)}w:cfg`, 'X')) === '2', {
    intervalMs: 50,
    timeoutMs: 30_000,
    what: 'the configured weights',
  });
  return { app, env };
}

/** Enqueues `n` jobs of `tenant` in batches of 1,000; returns their ids. */
async function floodOf(app: App, task: typeof fairTask, tenant: string, n: number, ms: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 1_000) {
    const count = Math.min(1_000, n - i);
    const handles = await app.enqueueMany(Array.from({ length: count }, () => ({ task, input: { ms }, options: { tenant } })));
    for (const h of handles) ids.push(h.id);
  }
  return ids;
}

/** Waits until the queue has completed `completed` jobs in all, then reads each job's submit and start times. */
async function collect(app: App, task: typeof fairTask, prefix: string, jobs: Map<string, string>, completed: number, timeoutMs: number): Promise<Started[]> {
  const queue = app.broker.queue(task.queue);
  await pollUntil(async () => (await queue.getJobCountByTypes('completed')) >= completed, {
    intervalMs: 200,
    timeoutMs,
    what: `${completed} jobs to complete`,
    describe: async () => JSON.stringify(await queue.getJobCounts()),
  });
  const out: Started[] = [];
  const entries = [...jobs.entries()];
  for (let i = 0; i < entries.length; i += 2_000) {
    const chunk = entries.slice(i, i + 2_000);
    const pipeline = app.broker.redis.pipeline();
    for (const [id] of chunk) pipeline.hmget(`${fairKeys.bullJobPrefix(prefix, task.queue)}${id}`, 'timestamp', 'processedOn');
    const replies = (await pipeline.exec()) ?? [];
    chunk.forEach(([, tenant], k) => {
      const [ts, processed] = (replies[k]?.[1] ?? []) as (string | null)[];
      if (ts && processed) out.push({ tenant, submit: Number(ts), start: Number(processed) });
    });
  }
  return out;
}

/**
 * Jain's index per window over the tenants with runnable work, on starts
 * divided by max-min fair shares (weighted). Returns one index per window.
 */
export function jainPerWindow(jobs: Started[], from: number, to: number, windowMs: number, weights: Record<string, number> = {}): number[] {
  const out: number[] = [];
  // A run shorter than one window (--quick on a fast machine) is one window.
  const size = to - from < windowMs ? Math.max(1, to - from) : windowMs;
  for (let w0 = from; w0 + size <= to; w0 += size) {
    const w1 = w0 + size;
    const demand = new Map<string, number>();
    const served = new Map<string, number>();
    for (const j of jobs) {
      // Runnable during the window: submitted before its end, not started before its start.
      if (j.submit < w1 && j.start >= w0) demand.set(j.tenant, (demand.get(j.tenant) ?? 0) + 1);
      if (j.start >= w0 && j.start < w1) served.set(j.tenant, (served.get(j.tenant) ?? 0) + 1);
    }
    const capacity = [...served.values()].reduce((a, b) => a + b, 0);
    const share = maxMinShares(demand, capacity, weights);
    const xs = [...demand.keys()].map((t) => (share.get(t)! > 0 ? (served.get(t) ?? 0) / share.get(t)! : 1));
    if (xs.length === 0) continue;
    const sum = xs.reduce((a, b) => a + b, 0);
    const sq = xs.reduce((a, b) => a + b * b, 0);
    out.push(sq > 0 ? (sum * sum) / (xs.length * sq) : 1);
  }
  return out;
}

/** Weighted max-min fair division of `capacity` among demands (water-filling). */
function maxMinShares(demand: Map<string, number>, capacity: number, weights: Record<string, number>): Map<string, number> {
  const share = new Map<string, number>();
  let left = capacity;
  let open = [...demand.keys()];
  while (open.length > 0 && left > 1e-9) {
    const totalW = open.reduce((a, t) => a + (weights[t] ?? 1), 0);
    const unit = left / totalW;
    const satisfied = open.filter((t) => demand.get(t)! - (share.get(t) ?? 0) <= unit * (weights[t] ?? 1));
    if (satisfied.length === 0) {
      for (const t of open) share.set(t, (share.get(t) ?? 0) + unit * (weights[t] ?? 1));
      break;
    }
    for (const t of satisfied) {
      left -= demand.get(t)! - (share.get(t) ?? 0);
      share.set(t, demand.get(t)!);
    }
    open = open.filter((t) => !satisfied.includes(t));
  }
  for (const t of demand.keys()) if (!share.has(t)) share.set(t, 0);
  return share;
}

interface FloodResult {
  wait: { p50: number; p99: number; max: number; samples: number };
  jain: { min: number; mean: number; samples: number };
  throughput_per_s: number;
  a_jobs: number;
}

/** Part 1, one run: A's flood and B–K's trickle, on the fair queue or the fifo one. */
async function floodRun(app: App, env: StoreEnv, task: typeof fairTask, p: { aJobs: number; trickleS: number; jobMs: number; windowMs: number }): Promise<FloodResult> {
  const jobs = new Map<string, string>();
  const before = await app.broker.queue(task.queue).getJobCountByTypes('completed');
  const t0 = now();
  const flood = floodOf(app, task, 'A', p.aJobs, p.jobMs).then((ids) => {
    for (const id of ids) jobs.set(id, 'A');
  });
  const errors: unknown[] = [];
  const trickle = SMALL.map(async (tenant, i) => {
    for (let s = 0; s < p.trickleS; s++) {
      const due = t0 + 1_000 + (i * 1_000) / SMALL.length + s * 1_000;
      await sleep(Math.max(0, due - now()));
      await app.enqueue(task, { ms: p.jobMs }, { tenant }).then(
        (h) => jobs.set(h.id, tenant),
        (err: unknown) => errors.push(err),
      );
    }
  });
  await Promise.all([flood, ...trickle]);
  if (errors.length > 0) throw errors[0];
  const started = await collect(app, task, env.prefix, jobs, before + jobs.size, 300_000);
  // Times are whole ms: a wait under 1 ms reads 1 (its upper bound), not 0.
  const small = started
    .filter((j) => j.tenant !== 'A')
    .map((j) => Math.max(1, j.start - j.submit))
    .sort((a, b) => a - b);
  const first = Math.min(...started.map((j) => j.start));
  const lastA = Math.max(...started.filter((j) => j.tenant === 'A').map((j) => j.start));
  const inFlood = started.filter((j) => j.start <= lastA).length;
  const jain = jainPerWindow(started, first, lastA, p.windowMs);
  return {
    wait: { p50: percentile(small, 50), p99: percentile(small, 99), max: small.at(-1) ?? NaN, samples: small.length },
    jain: { min: jain.length ? Math.min(...jain) : NaN, mean: jain.length ? jain.reduce((a, b) => a + b, 0) / jain.length : NaN, samples: jain.length },
    throughput_per_s: (inFlood * 1000) / Math.max(1, lastA - first),
    a_jobs: p.aJobs,
  };
}

/** Part 2: X (weight 2) and Y (weight 1) both flood; the split while both are backlogged. */
async function weightsRun(app: App, env: StoreEnv, p: { jobs: number; jobMs: number; windowMs: number }) {
  const jobs = new Map<string, string>();
  const before = await app.broker.queue(fairTask.queue).getJobCountByTypes('completed');
  const [x, y] = await Promise.all([floodOf(app, fairTask, 'X', p.jobs, p.jobMs), floodOf(app, fairTask, 'Y', p.jobs, p.jobMs)]);
  for (const id of x) jobs.set(id, 'X');
  for (const id of y) jobs.set(id, 'Y');
  const started = await collect(app, fairTask, env.prefix, jobs, before + jobs.size, 300_000);
  // Both are backlogged until the first of them has had its last job started.
  const lastOf = (t: string) => Math.max(...started.filter((j) => j.tenant === t).map((j) => j.start));
  const bothUntil = Math.min(lastOf('X'), lastOf('Y'));
  // From when both floods are in (their enqueues take a moment).
  const from = Math.max(...started.map((j) => j.submit));
  const inBoth = started.filter((j) => j.start >= from && j.start < bothUntil);
  const xCount = inBoth.filter((j) => j.tenant === 'X').length;
  const yCount = inBoth.length - xCount;
  const jain = jainPerWindow(started, from, bothUntil, p.windowMs, HEAVY);
  return { x: xCount, y: yCount, x_share: xCount / Math.max(1, inBoth.length), ratio: yCount > 0 ? xCount / yCount : NaN, jain_min: jain.length ? Math.min(...jain) : NaN, samples: jain.length };
}

/** Part 3: a queue whose backlogs hold `total` jobs spread over `tenants` tenants, and no worker. */
async function backlogs(ctx: ScenarioContext, scope: Scope, tenants: number, total: number) {
  const env = storeEnv(ctx, scope, 'postgres');
  // A window of 1 for the producer's own dispatches: the jobs stay in their backlogs.
  Object.assign(env.flags, { fairQueues: fairTask.queue, fairWindow: '1' });
  const app = await openApp(ctx, scope, env, [fairTask]);
  const perTenant = Math.ceil(total / tenants);
  const items = Array.from({ length: tenants }, (_, i) => `t${i}`).flatMap((tenant) => Array.from({ length: perTenant }, () => ({ task: fairTask, input: { ms: 0 }, options: { tenant } })));
  for (let k = 0; k < items.length; k += 1_000) await app.enqueueMany(items.slice(k, k + 1_000));
  const redis = fairCommands(app.broker.redis);
  const base = fairKeys.base(env.prefix, fairTask.queue);
  const wait = fairKeys.bullWait(env.prefix, fairTask.queue);
  const delayed = fairKeys.bullDelayed(env.prefix, fairTask.queue);
  const perCall: number[] = [];
  return {
    perCall,
    active: () => redis.zcard(`${base}active`),
    /** One dispatch call taking 100 jobs; its time per job (µs) goes to `perCall`. */
    async take(): Promise<void> {
      const t = now();
      const [ids] = await redis.celerityFairDispatch(wait, delayed, base, 1e9, 1e9, 100);
      const us = ((now() - t) * 1000) / Math.max(1, ids.length);
      if (ids.length === 0) throw new Error('the backlogs ran dry');
      perCall.push(us);
      // Keeps `inflight` small, as promotes would (not timed).
      await redis.celerityFairDone(base, ...ids);
    },
  };
}

/**
 * Part 3: the time per job of dispatch calls (100 jobs each, so that the
 * script's work, not the round trip, dominates) with 10 and with 1,000
 * active tenants. Both queues are filled first; then the calls alternate
 * between them in rounds, so that both meet the same load on the machine.
 * Half the jobs are taken, so every tenant stays active throughout.
 */
async function dequeueCost(ctx: ScenarioContext, total: number, take: number) {
  const scope = ctx.scope.child();
  try {
    const few = await backlogs(ctx, scope, 10, total);
    const many = await backlogs(ctx, scope, 1_000, total);
    const tenants = { few: await few.active(), many: await many.active() };
    const calls = Math.floor(take / 100);
    const round = Math.max(1, Math.floor(calls / 10));
    for (let done = 0; done < calls; done += round) {
      const order = (done / round) % 2 === 0 ? [few, many] : [many, few];
      for (const q of order) for (let i = 0; i < round && done + i < calls; i++) await q.take();
    }
    const median = (xs: number[]) =>
      percentile(
        [...xs].sort((a, b) => a - b),
        50,
      );
    return {
      t10: { tenants: tenants.few, calls: few.perCall.length, us_per_job: median(few.perCall) },
      t1000: { tenants: tenants.many, calls: many.perCall.length, us_per_job: median(many.perCall) },
    };
  } finally {
    await scope.close();
  }
}

export const s6Fairness: Scenario = {
  name: 's6_fairness',
  title: "one tenant's flood against ten small tenants, 2 workers at concurrency 10, fair stage on and off; 2:1 weights; dequeue cost",
  async run(ctx) {
    // Quick: 0.5 s windows, so that a short run still has some.
    const windowMs = ctx.quick ? 500 : 5_000;
    const p1 = ctx.quick ? { aJobs: 1_000, trickleS: 2, jobMs: 10, windowMs, warmup: 100 } : { aJobs: 20_000, trickleS: 30, jobMs: 10, windowMs, warmup: 1_000 };
    const p2 = ctx.quick ? { jobs: 300, jobMs: 10, windowMs } : { jobs: 5_000, jobMs: 10, windowMs };
    const p3 = ctx.quick ? { total: 2_000, take: 1_000 } : { total: 20_000, take: 10_000 };
    const scope = ctx.scope.child();
    const fairRuns: FloodResult[] = [];
    const offRuns: FloodResult[] = [];
    let weights: Awaited<ReturnType<typeof weightsRun>>;
    try {
      const { app, env } = await setUp(ctx, scope);
      // Warm-up: both queues once, so that neither run meets cold workers.
      for (const task of [fairTask, fifoTask]) {
        await floodOf(app, task, 'warm', p1.warmup, 0);
        await pollUntil(async () => (await app.broker.queue(task.queue).getJobCountByTypes('completed')) >= p1.warmup, { intervalMs: 100, timeoutMs: 60_000, what: 'the warm-up' });
      }
      // Fair, off, then (full runs) off, fair again: the machine's drift
      // during the runs weighs on both sides alike.
      const order = ctx.quick ? [true, false] : [true, false, false, true];
      for (const [i, isFair] of order.entries()) {
        ctx.log(`part 1 (${i + 1}/${order.length}), ${isFair ? 'fair' : 'fairness off'}: A ${p1.aJobs} jobs, B–K 1/s for ${p1.trickleS} s`);
        (isFair ? fairRuns : offRuns).push(await floodRun(app, env, isFair ? fairTask : fifoTask, p1));
      }
      ctx.log(`part 2: X and Y ${p2.jobs} jobs each, weights 2:1`);
      weights = await weightsRun(app, env, p2);
    } finally {
      await scope.close();
    }
    ctx.log('part 3: dequeue cost, 10 and 1,000 active tenants');
    const { t10: cost10, t1000: cost1000 } = await dequeueCost(ctx, p3.total, p3.take);
    const fair = combine(fairRuns);
    const off = combine(offRuns);
    const fields = {
      flood: {
        fair: { ...fair, wait: roundAll(fair.wait), jain: roundAll(fair.jain), throughput_per_s: round(fair.throughput_per_s) },
        off: { ...off, wait: roundAll(off.wait), jain: roundAll(off.jain), throughput_per_s: round(off.throughput_per_s) },
        throughput_ratio: round(ratio(fair.throughput_per_s, off.throughput_per_s)),
        runs: { fair: fairRuns.map(roundRun), off: offRuns.map(roundRun) },
      },
      weights: roundAll(weights),
      dequeue: { t10: roundAll(cost10), t1000: roundAll(cost1000), ratio: round(ratio(cost1000.us_per_job, cost10.us_per_job)) },
    };
    const rows: Row[] = [
      { metric: 'B–K wait p50 (fair / off)', unit: 'ms', celerity: fair.wait.p50, bullmq: off.wait.p50, ratio: ratio(fair.wait.p50, off.wait.p50) },
      { metric: 'B–K wait p99 (fair / off)', unit: 'ms', celerity: fair.wait.p99, bullmq: off.wait.p99, ratio: ratio(fair.wait.p99, off.wait.p99) },
      { metric: 'B–K wait max (fair / off)', unit: 'ms', celerity: fair.wait.max, bullmq: off.wait.max, ratio: ratio(fair.wait.max, off.wait.max) },
      { metric: `Jain's index, worst ${windowMs / 1000} s window (fair / off)`, unit: 'index', celerity: fair.jain.min, bullmq: off.jain.min, ratio: ratio(fair.jain.min, off.jain.min) },
      { metric: 'throughput while backlogged (fair / off)', unit: 'jobs/s', celerity: fair.throughput_per_s, bullmq: off.throughput_per_s, ratio: ratio(fair.throughput_per_s, off.throughput_per_s) },
      { metric: 'weights 2:1, X:Y starts', unit: 'ratio', celerity: weights.ratio },
      {
        metric: 'dequeue, median time per job in 100-job calls (1,000 / 10 tenants)',
        unit: 'µs',
        celerity: cost1000.us_per_job,
        bullmq: cost10.us_per_job,
        ratio: ratio(cost1000.us_per_job, cost10.us_per_job),
      },
    ];
    return { fields, rows, params: { workers: 2, concurrency: 10, part1: p1, part2: p2, part3: p3, window_ms: windowMs, store: 'postgres' } };
  },
};

/**
 * Several runs of one side as one: the worst wait percentiles and Jain's
 * index, the mean throughput.
 */
function combine(runs: FloodResult[]): FloodResult {
  const worst = (f: (r: FloodResult) => number) => Math.max(...runs.map(f));
  return {
    wait: { p50: worst((r) => r.wait.p50), p99: worst((r) => r.wait.p99), max: worst((r) => r.wait.max), samples: runs.reduce((a, r) => a + r.wait.samples, 0) },
    jain: {
      min: Math.min(...runs.map((r) => r.jain.min)),
      mean: runs.reduce((a, r) => a + r.jain.mean, 0) / runs.length,
      samples: runs.reduce((a, r) => a + r.jain.samples, 0),
    },
    throughput_per_s: runs.reduce((a, r) => a + r.throughput_per_s, 0) / runs.length,
    a_jobs: runs[0]!.a_jobs,
  };
}

function roundRun(r: FloodResult) {
  return { wait: roundAll(r.wait), jain: roundAll(r.jain), throughput_per_s: round(r.throughput_per_s) };
}

function roundAll<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? round(v) : v])) as T;
}
