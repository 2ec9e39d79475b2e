/**
 * s6_events: the live event feed under load. `celerity serve` (with its
 * recorder, CELERITY_AUTH=off) and one `celerity worker` (concurrency 50) run
 * as child processes on a PostgreSQL history, both on
 * bench/apps/events-app.ts. 100 Server-Sent Events streams are open on
 * GET /v1/events, and the bench process submits `bench.progress` jobs at 250 jobs/s;
 * each job makes four messages (queued, started, progress, completed), so
 * the feed carries 1,000 job events per second to each of the 100 streams.
 *
 * The streams are read by a process of their own (bench/workers/sse-clients.ts).
 * The latency of a message is the time from its event's `at` (when Redis
 * appended the entry to the queue's event stream, Redis' clock, in the id
 * of the entry) to the moment that process has read the message off its
 * stream (Date.now()). Redis and the readers run on the same machine, so
 * both read the same clock, at 1 ms resolution. The warm-up's jobs are of
 * another task (`bench.progress-warmup`), and their messages not counted.
 */
import { progressTask, warmupTask } from '../apps/events-app.ts';
import { openApp, storeEnv } from '../lib/env.ts';
import { summariseLogs } from '../lib/logs.ts';
import { now, pollUntil, round, sleep } from '../lib/measure.ts';
import { waitHttp } from '../lib/http.ts';
import { freePort, Proc } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Scenario, ScenarioContext } from '../lib/types.ts';

const STREAMS = 100;
const JOBS_PER_S = 250;
const EVENTS_PER_JOB = 4;

/** `node packages/celerity/bin/celerity.js <command> --app bench/apps/events-app.ts`; its warnings become notes. */
function celerityProc(ctx: ScenarioContext, scope: Scope, name: string, command: 'serve' | 'worker', env: NodeJS.ProcessEnv): Proc {
  let proc: Proc | undefined;
  scope.defer(`collect ${name} warnings`, () => {
    if (proc) for (const note of summariseLogs(name, proc.output)) ctx.note(note);
  });
  proc = new Proc(scope, name, process.execPath, ['packages/celerity/bin/celerity.js', command, '--app', 'bench/apps/events-app.ts'], { env });
  return proc;
}

interface ClientsReport {
  complete: boolean;
  fewest: number;
  count: number;
  messages: number;
  lagged: number;
  latencies: { p50: number; p95: number; p99: number; max: number };
}

export const s6Events: Scenario = {
  name: 's6_events',
  title: `GET /v1/events: ${STREAMS} SSE streams, ${JOBS_PER_S * EVENTS_PER_JOB} job events/s, event → client latency`,
  async run(ctx: ScenarioContext) {
    const { scope } = ctx;
    const warmupMs = ctx.quick ? 500 : 3_000;
    const measureMs = ctx.quick ? 2_000 : 10_000;
    const env = storeEnv(ctx, scope, 'postgres');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const server = celerityProc(
      ctx,
      scope,
      'celerity-serve',
      'serve',
      env.childEnv({ PORT: String(port), HOST: '127.0.0.1', CELERITY_AUTH: 'off', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }),
    );
    await waitHttp(`${base}/healthz`, [server]);
    const worker = celerityProc(ctx, scope, 'celerity-worker', 'worker', env.childEnv({ CELERITY_CONCURRENCY: '50' }));
    // The producer: the bench process's own app on the same prefix and history.
    const app = await openApp(ctx, scope, env, [progressTask, warmupTask]);
    const queue = app.broker.queue(progressTask.queue);
    await pollUntil(
      async () => {
        worker.assertRunning();
        return (await queue.getWorkersCount()) >= 1;
      },
      { intervalMs: 50, timeoutMs: 60_000, what: 'the worker to connect' },
    );

    // The streams' readers run in a process of their own, as browsers would.
    const readers = new Proc(scope, 'sse-clients', process.execPath, ['--conditions=celerity-source', '--import', 'tsx', 'bench/workers/sse-clients.ts'], {
      env: { ...process.env, BENCH_URL: `${base}/v1/events`, BENCH_STREAMS: String(STREAMS), BENCH_TASK: progressTask.name },
      ipc: true,
    });
    await readers.message((m: { type?: string }) => m.type === 'ready', 60_000);

    ctx.log(`${STREAMS} streams open; ${JOBS_PER_S} jobs/s: warm-up ${warmupMs} ms, then ${measureMs} ms`);
    const errors: unknown[] = [];
    const total = Math.round((JOBS_PER_S * (warmupMs + measureMs)) / 1000);
    const warmupJobs = Math.round((JOBS_PER_S * warmupMs) / 1000);
    const start = now();
    let submitted = 0;
    let measureStart = 0;
    while (submitted < total) {
      const due = Math.min(total, Math.floor(((now() - start) * JOBS_PER_S) / 1000) + 1);
      while (submitted < due) {
        if (submitted === warmupJobs) measureStart = now();
        app.enqueue(submitted < warmupJobs ? warmupTask : progressTask, {}).catch((err: unknown) => errors.push(err));
        submitted++;
      }
      await sleep(1);
    }
    const measuredFor = now() - measureStart;
    if (errors.length > 0) throw errors[0];
    const measuredJobs = total - warmupJobs;
    const expectedPerStream = measuredJobs * EVENTS_PER_JOB;
    // Every stream has the messages of every measured job, or the report says it has not.
    readers.child.send({ type: 'wait', expected: expectedPerStream, timeoutMs: 60_000 });
    const report = await readers.message<ClientsReport>((m: { type?: string }) => m.type === 'done', 90_000);
    server.assertRunning();
    worker.assertRunning();
    if (!report.complete) throw new Error(`a stream got ${report.fewest} of the ${expectedPerStream} messages of the measured jobs`);

    const received = report.count;
    const lagged = report.lagged;
    const { p50, p95, p99, max } = report.latencies;
    const perStream = received / STREAMS;
    const eventsPerS = (perStream / measuredFor) * 1000;
    const notes: string[] = [];
    if (lagged > 0) notes.push(`${lagged} lagged messages: a stream fell behind the feed`);
    if (p95 > 1_000) notes.push(`p95 ${p95} ms is above the 1 s target`);
    return {
      fields: {
        streams: STREAMS,
        events_per_s_per_stream: round(eventsPerS),
        deliveries_per_s: round(eventsPerS * STREAMS),
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p99,
        max_ms: max,
        // Counts, which may be 0 (the bench's test checks that measured numbers are positive).
        detail: { messages: received, expected_messages: expectedPerStream * STREAMS, lagged },
      },
      params: {
        streams: STREAMS,
        jobs_per_s: JOBS_PER_S,
        events_per_job: EVENTS_PER_JOB,
        warmup_ms: warmupMs,
        measure_ms: measureMs,
        worker_concurrency: 50,
        store: 'postgres',
        auth: 'off',
        log_level: 'warn',
      },
      rows: [
        { metric: `job events per stream (${STREAMS} streams)`, unit: 'events/s', celerity: round(eventsPerS) },
        { metric: 'event → client p50', unit: 'ms', celerity: p50 },
        { metric: 'event → client p95 (target ≤ 1,000)', unit: 'ms', celerity: p95 },
        { metric: 'event → client p99', unit: 'ms', celerity: p99 },
      ],
      notes,
    };
  },
};
