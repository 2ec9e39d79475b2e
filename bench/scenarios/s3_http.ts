/**
 * s3_http: the HTTP API under load. `celerity serve` (with its recorder) and
 * one `celerity worker` (concurrency 50, so posted jobs drain) run as child
 * processes on a PostgreSQL history; autocannon, as a third process, drives
 *   POST /v1/jobs            {"task":"bench.noop","input":{}}
 *   GET  /v1/jobs/:id        of a completed job (served from Redis)
 * with 50 connections, each for D seconds after a warm-up run that is not
 * counted. The worker drains the POST backlog before the GET run starts.
 * There is no raw BullMQ counterpart: Celerity's API is the thing measured.
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

async function cannon(scope: Scope, name: string, url: string, seconds: number, post?: string): Promise<HttpRun> {
  const args = [AUTOCANNON, '--json', '--no-progress', '-c', String(CONNECTIONS), '-d', String(seconds)];
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
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const server = celerity(ctx, scope, 'celerity-serve', 'serve', env.childEnv({ PORT: String(port), HOST: '127.0.0.1' }));
    await waitHttp(`${base}/healthz`, [server]);
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
    ctx.log(`POST warm-up ${warmupSeconds} s, then ${seconds} s`);
    await cannon(scope, 'autocannon-post-warmup', `${base}/v1/jobs`, warmupSeconds, body);
    await drained();
    const post = await cannon(scope, 'autocannon-post', `${base}/v1/jobs`, seconds, body);
    check(post, 'POST /v1/jobs', notes);
    await drained();

    // One completed job to read.
    const submitted = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const { job_id: jobId } = (await submitted.json()) as { job_id: string };
    await pollUntil(
      async () => {
        const res = await fetch(`${base}/v1/jobs/${jobId}`);
        return res.ok && ((await res.json()) as { status: string }).status === 'completed';
      },
      { intervalMs: 20, timeoutMs: 30_000, what: `job ${jobId} to complete` },
    );
    ctx.log(`GET warm-up ${warmupSeconds} s, then ${seconds} s`);
    await cannon(scope, 'autocannon-get-warmup', `${base}/v1/jobs/${jobId}`, warmupSeconds);
    const get = await cannon(scope, 'autocannon-get', `${base}/v1/jobs/${jobId}`, seconds);
    check(get, 'GET /v1/jobs/:id', notes);
    for (const p of [server, worker]) p.assertRunning();

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
    ];
    return {
      fields: { post: view(post), get: view(get) },
      params: { connections: CONNECTIONS, duration_s: seconds, warmup_s: warmupSeconds, store: 'postgres', worker_concurrency: 50, log_level: 'warn' },
      rows,
      notes,
    };
  },
};
