/**
 * instructions: what a request and a job cost in machine instructions,
 * counted by valgrind's callgrind, Celerity beside its raw counterparts.
 * Opt-in (`npm run bench -- --scenario instructions`): each process runs
 * under valgrind, 20-100× slower, and the scenario takes minutes.
 *
 * Times and CPU readings on this machine move by tens of percent from one
 * run to the next with the machine itself (docs/benchmarks.md, run 21); the
 * count of instructions a process runs for the same work does not. So a
 * change that saves 5% of a POST's or a job's work shows here at once,
 * where s3 and s7 would need many alternated runs to tell it apart.
 *
 * - **POST /v1/jobs**: `bench/workers/raw-api.ts` (Fastify and one BullMQ
 *   `Queue.add`), `celerity serve` open (`CELERITY_AUTH=off`, the key's
 *   tenant in the body, as in s3) and `celerity serve` with API keys and
 *   rate limits (s3's default server), each under callgrind with no
 *   recorder. Each is sent a warm-up load by autocannon, then its counts
 *   are zeroed and a measured load is sent: instructions per request.
 * - **A job in a worker**: a raw BullMQ worker (`bench/workers/raw-worker.ts`),
 *   `celerity worker` with `CELERITY_RECORDER=off`, and `celerity worker`
 *   with its recorder writing a PostgreSQL history (alone: the bench process
 *   runs none, so every row is this recorder's), each at concurrency 50. A
 *   warm-up drain; then two counted phases: N jobs enqueued on the paused
 *   queue by the bench process, until the recorder has written them as
 *   queued (the add: only a recorder works then); and the queue resumed,
 *   until every job is completed (and recorded): instructions per job in
 *   each, the recorder's work for the job's events included.
 *
 * `main` is the process's main thread, where JavaScript runs, and is what
 * the ratios compare; `all` adds V8's compiler and collector threads and
 * libuv's pool, which go on compiling longer under valgrind than they
 * would at full speed. Skipped, with a note, when valgrind is missing.
 */
import { Queue } from 'bullmq';
import { createRedis } from '../../packages/celerity/src/broker/connection.ts';
import { BENCH_QUEUE, noop } from '../apps/tasks.ts';
import { callgrindMissing, Counted, type Counts } from '../lib/callgrind.ts';
import { countRows } from '../lib/drains.ts';
import { cleanEnv, openApp, redisPrefix, redisTarget, storeEnv, type StoreEnv } from '../lib/env.ts';
import { cannon, waitHttp } from '../lib/http.ts';
import { pollUntil, round, runPool } from '../lib/measure.ts';
import { freePort, Proc } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';

/** Connections of the POST loads: enough to keep a server under valgrind busy. */
const CONNECTIONS = 10;
const WORKER_CONCURRENCY = 50;
/** How long a process under valgrind may take to start (node's own start takes ~10 s there). */
const START_MS = 300_000;

interface Sizes {
  postWarmup: number;
  posts: number;
  jobWarmup: number;
  jobs: number;
}

/** Per request or per job. */
interface PerUnit {
  main: number;
  all: number;
}

function per(counts: Counts, n: number): PerUnit {
  return { main: Math.round(counts.main / n), all: Math.round(counts.all / n) };
}

const CELERITY_BIN = 'packages/celerity/bin/celerity.js';
const NOOP_APP = 'bench/apps/noop-app.ts';
const TSX = ['--conditions=celerity-source', '--import', 'tsx'];

async function posts(ctx: ScenarioContext, sizes: Sizes): Promise<Record<'raw' | 'open' | 'keys', PerUnit>> {
  const { scope } = ctx;
  const env = storeEnv(ctx, scope, 'postgres');
  const created = new Proc(scope, 'keys-create', process.execPath, [CELERITY_BIN, 'keys', 'create', '--name', 'bench', '--tenant', 'bench', '--scopes', 'jobs:submit,jobs:read'], {
    env: env.childEnv(),
  });
  const key = (await created.result(60_000)).trim();
  const ports = { raw: await freePort(), open: await freePort(), keys: await freePort() };
  const serve = (name: string, port: number, extra: Record<string, string>) =>
    new Counted(scope, name, [CELERITY_BIN, 'serve', '--app', NOOP_APP], env.childEnv({ PORT: String(port), HOST: '127.0.0.1', CELERITY_RECORDER: 'off', ...extra }));
  const servers = {
    raw: new Counted(scope, 'raw-api', [...TSX, 'bench/workers/raw-api.ts'], {
      ...cleanEnv(),
      BENCH_REDIS_URL: ctx.redisUrl,
      BENCH_PREFIX: redisPrefix(scope, ctx.redisUrl),
      BENCH_QUEUE,
      PORT: String(ports.raw),
    }),
    open: serve('celerity-serve-open', ports.open, { CELERITY_AUTH: 'off', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    keys: serve('celerity-serve', ports.keys, { CELERITY_RATE_LIMIT_SUBMIT: '100000000', CELERITY_RATE_LIMIT_READ: '100000000' }),
  };
  const url = (label: keyof typeof servers) => `http://127.0.0.1:${ports[label]}`;
  ctx.log('POST: starting three servers under valgrind');
  for (const label of ['raw', 'open', 'keys'] as const) await waitHttp(`${url(label)}/healthz`, [servers[label].proc], START_MS);

  const bodies = {
    raw: JSON.stringify({ task: 'bench.noop', input: {} }),
    // Every server makes the same job, a tenant's (as in s3).
    open: JSON.stringify({ task: 'bench.noop', input: {}, options: { tenant: 'bench' } }),
    keys: JSON.stringify({ task: 'bench.noop', input: {} }),
  };
  const out = {} as Record<'raw' | 'open' | 'keys', PerUnit>;
  for (const label of ['raw', 'open', 'keys'] as const) {
    const load = { connections: CONNECTIONS, post: bodies[label], key: label === 'keys' ? key : undefined, timeoutMs: START_MS };
    ctx.log(`POST ${label}: warm-up of ${sizes.postWarmup} requests`);
    expectAll(await cannon(scope, `autocannon-warmup-${label}`, `${url(label)}/v1/jobs`, { ...load, amount: sizes.postWarmup }), sizes.postWarmup, `POST ${label} warm-up`);
    await servers[label].zero();
    ctx.log(`POST ${label}: ${sizes.posts} requests counted`);
    expectAll(await cannon(scope, `autocannon-${label}`, `${url(label)}/v1/jobs`, { ...load, amount: sizes.posts }), sizes.posts, `POST ${label}`);
    out[label] = per(await servers[label].read(), sizes.posts);
    await servers[label].proc.stop();
  }
  return out;
}

/** A count is only of the work measured if every request was answered 2xx. */
function expectAll(run: { requests: number; non_2xx: number; errors: number; timeouts: number }, n: number, what: string): void {
  const ok = run.requests - run.non_2xx;
  if (ok !== n || run.errors > 0 || run.timeouts > 0) throw new Error(`${what}: ${ok} of ${n} requests answered 2xx (${run.non_2xx} non-2xx, ${run.errors} errors, ${run.timeouts} timeouts)`);
}

interface Side {
  label: 'raw' | 'celerity' | 'recorded';
  proc: Counted;
  queue: Queue;
  add: () => Promise<unknown>;
  /** Whether the `n` jobs added so far are recorded as added (true at once where there is no history). */
  added: (n: number) => Promise<boolean>;
  /** Whether the `n` jobs added so far are done (completed, and recorded where there is a history). */
  done: (n: number) => Promise<boolean>;
}

/** A job's instructions in each phase: its add (the queue paused), its run, and both. */
interface JobCounts {
  adds: PerUnit;
  run: PerUnit;
  total: PerUnit;
}

async function jobs(ctx: ScenarioContext, sizes: Sizes): Promise<Record<Side['label'], JobCounts>> {
  const { scope } = ctx;
  const sides: Side[] = [];

  // Raw BullMQ: Celerity's producer connection, BullMQ's defaults.
  const prefix = redisPrefix(scope, ctx.redisUrl);
  const connection = createRedis(redisTarget(ctx), 'producer');
  scope.defer('disconnect', () => connection.disconnect());
  const rawQueue = track(scope, new Queue(BENCH_QUEUE, { connection, prefix }));
  sides.push({
    label: 'raw',
    proc: new Counted(scope, 'raw-worker', [...TSX, 'bench/workers/raw-worker.ts'], {
      ...cleanEnv(),
      BENCH_REDIS_URL: ctx.redisUrl,
      BENCH_PREFIX: prefix,
      BENCH_QUEUE,
      BENCH_CONCURRENCY: String(WORKER_CONCURRENCY),
    }),
    queue: rawQueue,
    add: () => rawQueue.add(noop.name, {}, { removeOnComplete: true }),
    added: async () => true,
    done: async () => {
      const c = await rawQueue.getJobCounts('waiting', 'active', 'prioritized', 'delayed');
      return c.waiting! + c.active! + c.prioritized! + c.delayed! === 0;
    },
  });

  const celeritySide = async (label: 'celerity' | 'recorded'): Promise<Side> => {
    const env: StoreEnv = storeEnv(ctx, scope, 'postgres');
    const app = await openApp(ctx, scope, env);
    const queue = app.broker.queue(BENCH_QUEUE);
    const recorded = label === 'recorded';
    return {
      label,
      proc: new Counted(
        scope,
        `celerity-worker-${label}`,
        [CELERITY_BIN, 'worker', '--app', NOOP_APP],
        env.childEnv({ CELERITY_CONCURRENCY: String(WORKER_CONCURRENCY), ...(recorded ? {} : { CELERITY_RECORDER: 'off' }) }),
      ),
      queue,
      add: () => app.enqueue(noop, {}),
      added: async (n) => !recorded || (await countRows(app)) >= n,
      done: async (n) => (await queue.getJobCounts('completed')).completed! >= n && (!recorded || (await countRows(app, 'completed')) >= n),
    };
  };
  sides.push(await celeritySide('celerity'), await celeritySide('recorded'));

  ctx.log('jobs: starting three workers under valgrind');
  for (const side of sides) {
    await pollUntil(
      async () => {
        side.proc.proc.assertRunning();
        return (await side.queue.getWorkersCount()) >= 1;
      },
      { intervalMs: 200, timeoutMs: START_MS, what: `${side.proc.proc.name} to connect` },
    );
  }

  const out = {} as Record<Side['label'], JobCounts>;
  for (const side of sides) {
    const name = side.proc.proc.name;
    const until = (probe: () => Promise<boolean>, what: string, n: number) => pollUntil(probe, { intervalMs: 100, timeoutMs: START_MS + n * 100, what: `${name} ${what}` });
    ctx.log(`jobs ${side.label}: warm-up drain of ${sizes.jobWarmup}`);
    await runPool(sizes.jobWarmup, 100, side.add);
    await until(() => side.done(sizes.jobWarmup), `to run ${sizes.jobWarmup} jobs`, sizes.jobWarmup);
    const total = sizes.jobWarmup + sizes.jobs;
    // Counted in two phases: the adds, on the paused queue (only a recorder
    // works then, writing the queued rows), and the run.
    await side.queue.pause();
    await side.proc.zero();
    ctx.log(`jobs ${side.label}: ${sizes.jobs} jobs counted`);
    await runPool(sizes.jobs, 100, side.add);
    await until(() => side.added(total), `to record ${total} jobs as added`, sizes.jobs);
    const adds = await side.proc.read();
    await side.proc.zero();
    await side.queue.resume();
    await until(() => side.done(total), `to run ${total} jobs`, sizes.jobs);
    const run = await side.proc.read();
    out[side.label] = { adds: per(adds, sizes.jobs), run: per(run, sizes.jobs), total: per({ main: adds.main + run.main, all: adds.all + run.all }, sizes.jobs) };
    await side.proc.proc.stop();
  }
  return out;
}

function track(scope: Scope, queue: Queue): Queue {
  queue.on('error', () => {});
  scope.defer('close queue', () => queue.close());
  return queue;
}

export const instructions: Scenario = {
  name: 'instructions',
  title: 'Instructions per POST and per job (valgrind callgrind), Celerity against raw Fastify + BullMQ and raw BullMQ; opt-in',
  optIn: true,
  async run(ctx: ScenarioContext) {
    const missing = await callgrindMissing();
    if (missing) return { fields: { skipped: missing }, params: {}, rows: [], notes: [`skipped: ${missing}`] };
    const sizes: Sizes = ctx.quick ? { postWarmup: 100, posts: 100, jobWarmup: 100, jobs: 100 } : { postWarmup: 3_000, posts: 1_500, jobWarmup: 3_000, jobs: 2_000 };
    const post = await posts(ctx, sizes);
    const job = await jobs(ctx, sizes);
    const ratio = (a: number, b: number) => round(a / b);
    const k = (n: number) => round(n / 1000);
    const rows: Row[] = [
      { metric: 'instructions per POST, keys + limits (main thread)', unit: 'k', celerity: k(post.keys.main), bullmq: k(post.raw.main), ratio: ratio(post.keys.main, post.raw.main) },
      { metric: 'instructions per POST, no auth (main thread)', unit: 'k', celerity: k(post.open.main), bullmq: k(post.raw.main), ratio: ratio(post.open.main, post.raw.main) },
      { metric: 'instructions per POST, keys + limits (all threads)', unit: 'k', celerity: k(post.keys.all), bullmq: k(post.raw.all), ratio: ratio(post.keys.all, post.raw.all) },
      {
        metric: 'instructions per job, worker (main thread)',
        unit: 'k',
        celerity: k(job.celerity.total.main),
        bullmq: k(job.raw.total.main),
        ratio: ratio(job.celerity.total.main, job.raw.total.main),
      },
      {
        metric: 'instructions per job, worker + its recorder (main thread)',
        unit: 'k',
        celerity: k(job.recorded.total.main),
        bullmq: k(job.raw.total.main),
        ratio: ratio(job.recorded.total.main, job.raw.total.main),
      },
      { metric: '  of which the recorder, at the add (main thread)', unit: 'k', celerity: k(job.recorded.adds.main - job.celerity.adds.main) },
      { metric: '  of which the recorder, at the run (main thread)', unit: 'k', celerity: k(job.recorded.run.main - job.celerity.run.main) },
      {
        metric: 'instructions per job, worker + its recorder (all threads)',
        unit: 'k',
        celerity: k(job.recorded.total.all),
        bullmq: k(job.raw.total.all),
        ratio: ratio(job.recorded.total.all, job.raw.total.all),
      },
    ];
    return {
      fields: { post, job },
      params: { ...sizes, post_connections: CONNECTIONS, worker_concurrency: WORKER_CONCURRENCY, store: 'postgres', counter: 'valgrind --tool=callgrind --separate-threads=yes' },
      rows,
    };
  },
};
