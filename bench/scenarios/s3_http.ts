/**
 * s3_http: the HTTP API under load. `celerity serve` (with its recorder) and
 * one `celerity worker` (concurrency 50, so posted jobs drain) run as child
 * processes on a PostgreSQL history; autocannon, as a third process, drives
 *   POST /v1/jobs            {"task":"bench.noop","input":{}}
 *   GET  /v1/jobs/:id        of a completed job (served from Redis)
 * with 50 connections, each for D seconds after a warm-up run that is not
 * counted. The worker drains the POST backlog before the GET run starts.
 * There is no raw BullMQ counterpart: Celerity's API is the thing measured.
 *
 * Three API processes serve the same queues and history: the default one
 * (API keys, a tenant key of jobs:submit and jobs:read, the per-key rate
 * limits on with budgets high enough not to bite), one with keys but no rate
 * limits, and one open (CELERITY_AUTH=off, no rate limits). The three runs of
 * each route give what authentication costs, and what the rate limits add,
 * measured in the same run.
 */
import { createRequire } from 'node:module';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { BENCH_QUEUE } from '../apps/tasks.ts';
import { storeEnv } from '../lib/env.ts';
import { pollUntil, round } from '../lib/measure.ts';
import { celerity, freePort, Proc } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';

const CONNECTIONS = 50;
const AUTOCANNON = createRequire(import.meta.url).resolve('autocannon/autocannon.js');

/** The part of autocannon's --json output used here. */
interface CannonResult {
  duration: number;
  requests: { total: number; average: number };
  latency: { p50: number; p99: number; max: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
}

interface HttpRun {
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  status_codes: Record<string, number>;
}

async function cannon(scope: Scope, name: string, url: string, seconds: number, post?: string, key?: string): Promise<HttpRun> {
  const args = [AUTOCANNON, '--json', '--no-progress', '-c', String(CONNECTIONS), '-d', String(seconds)];
  if (key !== undefined) args.push('-H', `authorization=Bearer ${key}`);
  if (post !== undefined) args.push('-m', 'POST', '-H', 'content-type=application/json', '-b', post);
  args.push(url);
  const proc = new Proc(scope, name, process.execPath, args, { env: process.env });
  const stdout = await proc.result(seconds * 1000 + 60_000);
  const line = stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`${name}: no JSON from autocannon; output:\n${proc.output.slice(-2000)}`);
  const r = JSON.parse(line) as CannonResult;
  const statusCodes = Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([code, s]) => [code, s.count]));
  return {
    req_per_s: r.requests.total / r.duration,
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    requests: r.requests.total,
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    status_codes: statusCodes,
  };
}

async function waitHttp(url: string, procs: Proc[]): Promise<void> {
  await pollUntil(
    async () => {
      for (const p of procs) p.assertRunning();
      try {
        return (await fetch(url)).ok;
      } catch {
        return false;
      }
    },
    { intervalMs: 100, timeoutMs: 60_000, what: `${url} to answer` },
  );
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
    const seconds = ctx.quick ? 2 : 10;
    const warmupSeconds = ctx.quick ? 1 : 3;
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
    const server = celerity(ctx, scope, 'celerity-serve', 'serve', env.childEnv({ PORT: String(closedPort), HOST: '127.0.0.1', ...limits }));
    const openServer = celerity(
      ctx,
      scope,
      'celerity-serve-open',
      'serve',
      env.childEnv({ PORT: String(openPort), HOST: '127.0.0.1', CELERITY_AUTH: 'off', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    );
    const keysOnlyServer = celerity(
      ctx,
      scope,
      'celerity-serve-keys-only',
      'serve',
      env.childEnv({ PORT: String(keysOnlyPort), HOST: '127.0.0.1', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    );
    await waitHttp(`${closed}/healthz`, [server]);
    await waitHttp(`${open}/healthz`, [openServer]);
    await waitHttp(`${keysOnly}/healthz`, [keysOnlyServer]);
    const worker = celerity(ctx, scope, 'celerity-worker', 'worker', env.childEnv({ CELERITY_CONCURRENCY: '50' }));

    // A queue handle on the same prefix, to see the worker arrive and the backlog drain.
    const redis = new Redis(ctx.redisUrl, { maxRetriesPerRequest: 1 });
    redis.on('error', () => {});
    scope.defer('disconnect', () => redis.disconnect());
    const queue = new Queue(BENCH_QUEUE, { connection: redis, prefix: env.prefix });
    queue.on('error', () => {});
    scope.defer('close queue', () => queue.close());
    await pollUntil(
      async () => {
        worker.assertRunning();
        return (await queue.getWorkersCount()) >= 1;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the worker to connect' },
    );
    const drained = () =>
      pollUntil(
        async () => {
          const c = await queue.getJobCounts('waiting', 'active');
          return c.waiting! + c.active! === 0;
        },
        { intervalMs: 50, timeoutMs: 300_000, what: 'the POST backlog to drain' },
      );

    const body = JSON.stringify({ task: 'bench.noop', input: {} });
    const notes: string[] = [];
    const auth = { authorization: `Bearer ${key}` };
    const postRun = async (base: string, label: string, withKey?: string) => {
      ctx.log(`POST ${label}: warm-up ${warmupSeconds} s, then ${seconds} s`);
      await cannon(scope, `autocannon-post-warmup-${label}`, `${base}/v1/jobs`, warmupSeconds, body, withKey);
      await drained();
      const run = await cannon(scope, `autocannon-post-${label}`, `${base}/v1/jobs`, seconds, body, withKey);
      check(run, `POST /v1/jobs (${label})`, notes);
      await drained();
      return run;
    };
    const post = await postRun(closed, 'keys', key);
    const postKeysOnly = await postRun(keysOnly, 'keys-only', key);
    const postOpen = await postRun(open, 'open');

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
    const getRun = async (base: string, label: string, withKey?: string) => {
      ctx.log(`GET ${label}: warm-up ${warmupSeconds} s, then ${seconds} s`);
      await cannon(scope, `autocannon-get-warmup-${label}`, `${base}/v1/jobs/${jobId}`, warmupSeconds, undefined, withKey);
      const run = await cannon(scope, `autocannon-get-${label}`, `${base}/v1/jobs/${jobId}`, seconds, undefined, withKey);
      check(run, `GET /v1/jobs/:id (${label})`, notes);
      return run;
    };
    const get = await getRun(closed, 'keys', key);
    const getKeysOnly = await getRun(keysOnly, 'keys-only', key);
    const getOpen = await getRun(open, 'open');
    for (const p of [server, openServer, keysOnlyServer, worker]) p.assertRunning();

    const view = (r: HttpRun) => ({
      req_per_s: round(r.req_per_s),
      p50_ms: r.p50_ms,
      p99_ms: r.p99_ms,
      requests: r.requests,
      non_2xx: r.non_2xx,
      errors: r.errors,
      timeouts: r.timeouts,
      status_codes: r.status_codes,
    });
    const rows: Row[] = [
      { metric: 'POST /v1/jobs', unit: 'req/s', celerity: post.req_per_s },
      { metric: 'POST /v1/jobs p99', unit: 'ms', celerity: post.p99_ms },
      { metric: 'GET /v1/jobs/:id', unit: 'req/s', celerity: get.req_per_s },
      { metric: 'GET /v1/jobs/:id p99', unit: 'ms', celerity: get.p99_ms },
      { metric: 'POST /v1/jobs, no auth', unit: 'req/s', celerity: postOpen.req_per_s },
      { metric: 'GET /v1/jobs/:id, no auth', unit: 'req/s', celerity: getOpen.req_per_s },
      { metric: 'POST /v1/jobs, keys, no rate limits', unit: 'req/s', celerity: postKeysOnly.req_per_s },
      { metric: 'GET /v1/jobs/:id, keys, no rate limits', unit: 'req/s', celerity: getKeysOnly.req_per_s },
      { metric: 'POST keys (no limits) / open', unit: 'ratio', celerity: round(postKeysOnly.req_per_s / postOpen.req_per_s) },
      { metric: 'GET keys (no limits) / open', unit: 'ratio', celerity: round(getKeysOnly.req_per_s / getOpen.req_per_s) },
      { metric: 'POST keys + limits / open', unit: 'ratio', celerity: round(post.req_per_s / postOpen.req_per_s) },
      { metric: 'GET keys + limits / open', unit: 'ratio', celerity: round(get.req_per_s / getOpen.req_per_s) },
    ];
    return {
      fields: {
        post: view(post),
        get: view(get),
        post_keys_no_limits: view(postKeysOnly),
        get_keys_no_limits: view(getKeysOnly),
        post_no_auth: view(postOpen),
        get_no_auth: view(getOpen),
      },
      params: { connections: CONNECTIONS, duration_s: seconds, warmup_s: warmupSeconds, store: 'postgres', worker_concurrency: 50, log_level: 'warn' },
      rows,
      notes,
    };
  },
};
