/**
 * s3_http: the HTTP API under load. `celerity serve` (with its recorder) and
 * one `celerity worker` (concurrency 50, so posted jobs drain) run as child
 * processes on a PostgreSQL history; autocannon, as a third process, drives
 *   POST /v1/jobs            {"task":"bench.noop","input":{}}
 *   GET  /v1/jobs/:id        of a completed job (served from Redis)
 * with 50 connections, each for D seconds after a warm-up run that is not
 * counted. After each POST run, the next waits until the worker has run
 * the backlog and the history has recorded it, so that no run shares the
 * machine with the last one's jobs.
 *
 * Three API processes serve the same queues and history: the default one
 * (API keys, a tenant key of jobs:submit and jobs:read, the per-key rate
 * limits on with budgets high enough not to bite), one with keys but no rate
 * limits, and one open (CELERITY_AUTH=off, no rate limits) whose POSTs name
 * the key's tenant in `options.tenant`, so that all three make the same job
 * and only authentication differs. Each route is
 * driven against them in rounds of rotated order, and each one's CPU per
 * request is read from /proc: what authentication costs, and what the rate
 * limits add, measured in the same run. The API processes run no recorder
 * (CELERITY_RECORDER=off; the worker's records), so their CPU is the
 * requests'.
 *
 * The raw counterpart (POST only): bench/workers/raw-api.ts, Fastify and one
 * BullMQ `Queue.add` per request with nothing of Celerity's, on a prefix of
 * its own drained by a raw BullMQ worker (bench/workers/raw-worker.ts,
 * concurrency 50), driven in the same rounds as the three servers: the
 * floor that Fastify and BullMQ put under any job API on this machine, with
 * its jobs draining beside it as Celerity's do (without a history).
 *
 * POST runs twice: first with the API processes alone on the machine (no
 * worker has started yet, and no process records: the API's own work, as
 * s1's enqueue phase measures the producer's, and as a deployment with its
 * workers on other machines serves), then with the workers draining beside
 * them. The first phase's jobs are run and recorded before the second starts.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { historyLagMs } from '../../packages/celerity/src/store/history-lag.ts';
import { BENCH_QUEUE } from '../apps/tasks.ts';
import { procCpuMs } from '../lib/cpu.ts';
import { cleanEnv, redisPrefix, storeEnv } from '../lib/env.ts';
import { pollUntil, round } from '../lib/measure.ts';
import { cannon as runCannon, type HttpRun, waitHttp } from '../lib/http.ts';
import { celerity, freePort, Proc, rawApi, rawWorker } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';

const CONNECTIONS = 50;
/** Runs of each route against each server, in rotated order. */
const ROUNDS = 3;
function cannon(scope: Scope, name: string, url: string, seconds: number, post?: string, key?: string): Promise<HttpRun> {
  return runCannon(scope, name, url, { connections: CONNECTIONS, seconds, post, key });
}

interface Target {
  label: 'keys' | 'keys-only' | 'open' | 'raw';
  base: string;
  proc: Proc;
  key: string | undefined;
}

interface Totals {
  requests: number;
  duration: number;
  cpuMs: number;
  p50: number[];
  p99: number[];
  runs: HttpRun[];
}

interface RouteSummary {
  req_per_s: number;
  /** CPU of the API process per request, over the measured runs: what the route costs, whatever else shares the machine. */
  cpu_us_per_req: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
}

function middle(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

function summary(t: Totals): RouteSummary {
  const sum = (f: (r: HttpRun) => number) => t.runs.reduce((n, r) => n + f(r), 0);
  return {
    req_per_s: round(t.requests / t.duration),
    cpu_us_per_req: round((t.cpuMs * 1000) / t.requests),
    p50_ms: middle(t.p50),
    p99_ms: middle(t.p99),
    requests: t.requests,
    non_2xx: sum((r) => r.non_2xx),
    errors: sum((r) => r.errors),
    timeouts: sum((r) => r.timeouts),
  };
}

function check(run: HttpRun, what: string, notes: string[]): void {
  if (run.non_2xx > 0 || run.errors > 0 || run.timeouts > 0) {
    notes.push(`${what}: ${run.non_2xx} non-2xx answers, ${run.errors} errors, ${run.timeouts} timeouts (status codes ${JSON.stringify(run.status_codes)})`);
  }
}

export const s3Http: Scenario = {
  name: 's3_http',
  title: `HTTP API under autocannon (${CONNECTIONS} connections): POST /v1/jobs, GET /v1/jobs/:id`,
  async run(ctx: ScenarioContext) {
    const { scope } = ctx;
    // Quick mode checks the instrument, not the numbers: one short round, no warm-up.
    const seconds = ctx.quick ? 1 : 10;
    const warmupSeconds = ctx.quick ? 0 : 3;
    // Shorter: every job they post waits for the workers, which start after them, to run and record it.
    const aloneSeconds = ctx.quick ? 1 : 5;
    const aloneWarmupSeconds = ctx.quick ? 0 : 1;
    const rounds = ctx.quick ? 1 : ROUNDS;
    const env = storeEnv(ctx, scope, 'postgres');
    // The key first: `celerity serve` refuses to start with keys on and none made.
    const created = new Proc(
      scope,
      'keys-create',
      process.execPath,
      ['packages/celerity/bin/celerity.js', 'keys', 'create', '--name', 'bench', '--tenant', 'bench', '--scopes', 'jobs:submit,jobs:read'],
      {
        env: env.childEnv(),
      },
    );
    const key = (await created.result(60_000)).trim();
    const closedPort = await freePort();
    const openPort = await freePort();
    const keysOnlyPort = await freePort();
    const closed = `http://127.0.0.1:${closedPort}`;
    const keysOnly = `http://127.0.0.1:${keysOnlyPort}`;
    const open = `http://127.0.0.1:${openPort}`;
    const limits = { CELERITY_RATE_LIMIT_SUBMIT: '100000000', CELERITY_RATE_LIMIT_READ: '100000000' };
    const server = celerity(ctx, scope, 'celerity-serve', 'serve', env.childEnv({ PORT: String(closedPort), HOST: '127.0.0.1', CELERITY_RECORDER: 'off', ...limits }));
    const openServer = celerity(
      ctx,
      scope,
      'celerity-serve-open',
      'serve',
      env.childEnv({ PORT: String(openPort), HOST: '127.0.0.1', CELERITY_RECORDER: 'off', CELERITY_AUTH: 'off', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    );
    const keysOnlyServer = celerity(
      ctx,
      scope,
      'celerity-serve-keys-only',
      'serve',
      env.childEnv({ PORT: String(keysOnlyPort), HOST: '127.0.0.1', CELERITY_RECORDER: 'off', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    );
    await waitHttp(`${closed}/healthz`, [server]);
    await waitHttp(`${open}/healthz`, [openServer]);
    await waitHttp(`${keysOnly}/healthz`, [keysOnlyServer]);
    const rawPort = await freePort();
    const raw = `http://127.0.0.1:${rawPort}`;
    const rawEnv = { ...cleanEnv(), BENCH_REDIS_URL: ctx.redisUrl, BENCH_PREFIX: redisPrefix(scope, ctx.redisUrl), BENCH_QUEUE, BENCH_CONCURRENCY: '50' };
    const rawServer = rawApi(ctx, scope, 'raw-api', { ...rawEnv, PORT: String(rawPort) });
    await rawServer.message((m: { type?: string }) => m.type === 'ready', 60_000);

    // A queue handle on the same prefix, to see the worker arrive and the backlog drain.
    const redis = new Redis(ctx.redisUrl, { maxRetriesPerRequest: 1 });
    redis.on('error', () => {});
    scope.defer('disconnect', () => redis.disconnect());
    const queue = new Queue(BENCH_QUEUE, { connection: redis, prefix: env.prefix });
    queue.on('error', () => {});
    scope.defer('close queue', () => queue.close());
    const rawQueue = new Queue(BENCH_QUEUE, { connection: redis, prefix: rawEnv.BENCH_PREFIX });
    rawQueue.on('error', () => {});
    scope.defer('close raw queue', () => rawQueue.close());
    // Between POST runs: every posted job run, and recorded. The history
    // trails the drain, and a run that started while the recorder was still
    // writing the last run's jobs shared the machine with that work (the
    // raw API, following a Celerity run, measured 4,100 req/s so, 6,700-7,000
    // alone).
    const drained = () =>
      pollUntil(
        async () => {
          for (const q of [queue, rawQueue]) {
            const c = await q.getJobCounts('waiting', 'active');
            if (c.waiting! + c.active! > 0) return false;
          }
          return ((await historyLagMs(redis, queue.keys.events!)) ?? 0) === 0;
        },
        { intervalMs: 50, timeoutMs: 300_000, what: 'the POST backlog to drain and be recorded' },
      );

    const body = JSON.stringify({ task: 'bench.noop', input: {} });
    const notes: string[] = [];
    const auth = { authorization: `Bearer ${key}` };
    const targets: Target[] = [
      { label: 'keys', base: closed, proc: server, key },
      { label: 'keys-only', base: keysOnly, proc: keysOnlyServer, key },
      { label: 'open', base: open, proc: openServer, key: undefined },
    ];
    const rawTarget: Target = { label: 'raw', base: raw, proc: rawServer, key: undefined };
    /**
     * Each route is driven against the servers in turn, ROUNDS times,
     * the order rotated each round: the servers share the machine, Redis and
     * the history, so what drifts during a run (the history's size, the
     * worker's backlog, other load) falls on each of them alike.
     */
    const interleaved = async (
      route: string,
      targets: Target[],
      url: (t: Target) => string,
      post: ((t: Target) => string) | undefined,
      between: () => Promise<unknown>,
      times = { run: seconds, warmup: warmupSeconds },
    ) => {
      const totals = new Map<string, Totals>(targets.map((t) => [t.label, { requests: 0, duration: 0, cpuMs: 0, p50: [], p99: [], runs: [] }]));
      for (const t of times.warmup > 0 ? targets : []) {
        ctx.log(`${route} ${t.label}: warm-up ${times.warmup} s`);
        await cannon(scope, `autocannon-${route}-warmup-${t.label}`, url(t), times.warmup, post?.(t), t.key);
        await between();
      }
      for (let round = 0; round < rounds; round++) {
        for (let i = 0; i < targets.length; i++) {
          const t = targets[(i + round) % targets.length] as Target;
          ctx.log(`${route} ${t.label}: round ${round + 1} of ${rounds}, ${times.run} s`);
          const cpuBefore = procCpuMs(t.proc.pid);
          const run = await cannon(scope, `autocannon-${route}-${t.label}-${round}`, url(t), times.run, post?.(t), t.key);
          const cpuAfter = procCpuMs(t.proc.pid);
          check(run, `${route} (${t.label}, round ${round + 1})`, notes);
          const total = totals.get(t.label) as Totals;
          total.requests += run.requests;
          total.duration += run.requests / run.req_per_s;
          total.cpuMs += cpuBefore !== null && cpuAfter !== null ? cpuAfter - cpuBefore : Number.NaN;
          total.p50.push(run.p50_ms);
          total.p99.push(run.p99_ms);
          total.runs.push(run);
          await between();
        }
      }
      return Object.fromEntries([...totals].map(([label, t]) => [label, summary(t)])) as Record<Target['label'], RouteSummary>;
    };

    // The open server is sent the key's tenant in the body: every server then
    // makes the same job (a tenant's), so what differs is authentication
    // alone, not the cost of running and recording a tenant's job.
    const openBody = JSON.stringify({ task: 'bench.noop', input: {}, options: { tenant: 'bench' } });
    const postBody = (t: Target) => (t.label === 'open' ? openBody : body);
    const postUrl = (t: Target) => `${t.base}/v1/jobs`;
    // The API processes alone: no worker yet, and no recorder anywhere. Their jobs wait in Redis.
    const alonePosts = await interleaved('POST alone', [...targets, rawTarget], postUrl, postBody, async () => {}, { run: aloneSeconds, warmup: aloneWarmupSeconds });

    const worker = celerity(ctx, scope, 'celerity-worker', 'worker', env.childEnv({ CELERITY_CONCURRENCY: '50' }));
    const rawDrainer = rawWorker(ctx, scope, 'raw-worker', rawEnv);
    await rawDrainer.message((m: { type?: string }) => m.type === 'ready', 60_000);
    await pollUntil(
      async () => {
        worker.assertRunning();
        return (await queue.getWorkersCount()) >= 1;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the worker to connect' },
    );
    ctx.log('POST alone: the workers run and record its jobs');
    await drained();
    const posts = await interleaved('POST', [...targets, rawTarget], postUrl, postBody, drained);

    // One completed job to read.
    const submitted = await fetch(`${closed}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body });
    const { job_id: jobId } = (await submitted.json()) as { job_id: string };
    await pollUntil(
      async () => {
        const res = await fetch(`${closed}/v1/jobs/${jobId}`, { headers: auth });
        return res.ok && ((await res.json()) as { status: string }).status === 'completed';
      },
      { intervalMs: 20, timeoutMs: 30_000, what: `job ${jobId} to complete` },
    );
    const gets = await interleaved(
      'GET',
      targets,
      (t) => `${t.base}/v1/jobs/${jobId}`,
      undefined,
      async () => {},
    );
    for (const p of [server, openServer, keysOnlyServer, worker, rawServer, rawDrainer]) p.assertRunning();

    const post = posts.keys;
    const get = gets.keys;
    const rawPost = posts.raw;
    const alone = alonePosts.keys;
    const rawAlone = alonePosts.raw;
    const rows: Row[] = [
      { metric: 'POST /v1/jobs, API alone', unit: 'req/s', celerity: alone.req_per_s, bullmq: rawAlone.req_per_s, ratio: round(alone.req_per_s / rawAlone.req_per_s) },
      {
        metric: 'POST /v1/jobs p99, API alone',
        unit: 'ms',
        celerity: alone.p99_ms,
        ...(rawAlone.p99_ms > 0 && alone.p99_ms > 0 ? { bullmq: rawAlone.p99_ms, ratio: round(alone.p99_ms / rawAlone.p99_ms) } : {}),
      },
      { metric: 'API CPU per POST, API alone', unit: 'µs', celerity: alone.cpu_us_per_req, bullmq: rawAlone.cpu_us_per_req, ratio: round(alone.cpu_us_per_req / rawAlone.cpu_us_per_req) },
      { metric: 'POST /v1/jobs, API alone, keys, no rate limits', unit: 'req/s', celerity: alonePosts['keys-only'].req_per_s },
      { metric: 'POST /v1/jobs, API alone, no auth', unit: 'req/s', celerity: alonePosts.open.req_per_s, bullmq: rawAlone.req_per_s, ratio: round(alonePosts.open.req_per_s / rawAlone.req_per_s) },
      { metric: 'POST /v1/jobs', unit: 'req/s', celerity: post.req_per_s, bullmq: rawPost.req_per_s, ratio: round(post.req_per_s / rawPost.req_per_s) },
      // autocannon's latencies are whole milliseconds: a p99 of 0 (a quick run's) has no ratio.
      { metric: 'POST /v1/jobs p99', unit: 'ms', celerity: post.p99_ms, ...(rawPost.p99_ms > 0 && post.p99_ms > 0 ? { bullmq: rawPost.p99_ms, ratio: round(post.p99_ms / rawPost.p99_ms) } : {}) },
      { metric: 'GET /v1/jobs/:id', unit: 'req/s', celerity: get.req_per_s },
      { metric: 'GET /v1/jobs/:id p99', unit: 'ms', celerity: get.p99_ms },
      { metric: 'POST /v1/jobs, no auth', unit: 'req/s', celerity: posts.open.req_per_s, bullmq: rawPost.req_per_s, ratio: round(posts.open.req_per_s / rawPost.req_per_s) },
      { metric: 'GET /v1/jobs/:id, no auth', unit: 'req/s', celerity: gets.open.req_per_s },
      { metric: 'POST /v1/jobs, keys, no rate limits', unit: 'req/s', celerity: posts['keys-only'].req_per_s },
      { metric: 'GET /v1/jobs/:id, keys, no rate limits', unit: 'req/s', celerity: gets['keys-only'].req_per_s },
      ...(['keys', 'keys-only', 'open'] as const).flatMap((label) => [
        {
          metric: `API CPU per POST (${label})`,
          unit: 'µs',
          celerity: posts[label].cpu_us_per_req,
          bullmq: rawPost.cpu_us_per_req,
          ratio: round(posts[label].cpu_us_per_req / rawPost.cpu_us_per_req),
        },
        { metric: `API CPU per GET (${label})`, unit: 'µs', celerity: gets[label].cpu_us_per_req },
      ]),
      { metric: 'POST keys (no limits) / open', unit: 'ratio', celerity: round(posts['keys-only'].req_per_s / posts.open.req_per_s) },
      { metric: 'GET keys (no limits) / open', unit: 'ratio', celerity: round(gets['keys-only'].req_per_s / gets.open.req_per_s) },
      { metric: 'POST keys + limits / open', unit: 'ratio', celerity: round(post.req_per_s / posts.open.req_per_s) },
      { metric: 'GET keys + limits / open', unit: 'ratio', celerity: round(get.req_per_s / gets.open.req_per_s) },
      { metric: 'POST keys (no limits) / open, by API CPU per request', unit: 'ratio', celerity: round(posts.open.cpu_us_per_req / posts['keys-only'].cpu_us_per_req) },
      { metric: 'GET keys (no limits) / open, by API CPU per request', unit: 'ratio', celerity: round(gets.open.cpu_us_per_req / gets['keys-only'].cpu_us_per_req) },
      { metric: 'POST keys + limits / open, by API CPU per request', unit: 'ratio', celerity: round(posts.open.cpu_us_per_req / post.cpu_us_per_req) },
      { metric: 'GET keys + limits / open, by API CPU per request', unit: 'ratio', celerity: round(gets.open.cpu_us_per_req / get.cpu_us_per_req) },
    ];
    return {
      fields: {
        post,
        get,
        post_keys_no_limits: posts['keys-only'],
        get_keys_no_limits: gets['keys-only'],
        post_no_auth: posts.open,
        post_raw: rawPost,
        get_no_auth: gets.open,
        post_alone: alone,
        post_alone_keys_no_limits: alonePosts['keys-only'],
        post_alone_no_auth: alonePosts.open,
        post_alone_raw: rawAlone,
      },
      params: {
        connections: CONNECTIONS,
        duration_s: seconds,
        rounds,
        warmup_s: warmupSeconds,
        alone_duration_s: aloneSeconds,
        alone_warmup_s: aloneWarmupSeconds,
        api_recorder: 'off',
        store: 'postgres',
        worker_concurrency: 50,
        log_level: 'warn',
      },
      rows,
      notes,
    };
  },
};
