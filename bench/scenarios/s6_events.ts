/**
 * s6_events: the live event feed under load. `celerity serve` (with its
 * recorder, CELERITY_AUTH=off) and one `celerity worker` (concurrency 50) run
 * as child processes on a PostgreSQL history, both on
 * bench/apps/events-app.ts. The bench process opens 100 Server-Sent Events
 * streams on GET /v1/events and submits `bench.progress` jobs at 250 jobs/s;
 * each job makes four messages (queued, started, progress, completed), so
 * the feed carries 1,000 job events per second to each of the 100 streams.
 *
 * The latency of a message is the time from its event's `at` (when Redis
 * appended the entry to the queue's event stream, Redis' clock, in the id
 * of the entry) to the moment the bench process has read the message off
 * its stream (Date.now()). Redis and the bench run on the same machine, so
 * both read the same clock, at 1 ms resolution. The warm-up's jobs are of
 * another task (`bench.progress-warmup`), and their messages not counted.
 */
import { request, type ClientRequest } from 'node:http';
import { progressTask, warmupTask } from '../apps/events-app.ts';
import { openApp, storeEnv } from '../lib/env.ts';
import { summariseLogs } from '../lib/logs.ts';
import { now, percentile, pollUntil, round, sleep } from '../lib/measure.ts';
import { freePort, Proc } from '../lib/procs.ts';
import type { Scope } from '../lib/scope.ts';
import type { Scenario, ScenarioContext } from '../lib/types.ts';

const STREAMS = 100;
const JOBS_PER_S = 250;
const EVENTS_PER_JOB = 4;
const MEASURED = `"task":"${progressTask.name}"`;

/** One open stream: the messages it read, as latencies (ms) of those that count. */
interface Client {
  req: ClientRequest;
  latencies: number[];
  /** Messages read, counted or not. */
  messages: number;
  lagged: number;
}

/** `node packages/celerity/bin/celerity.js <command> --app bench/apps/events-app.ts`; its warnings become notes. */
function celerityProc(ctx: ScenarioContext, scope: Scope, name: string, command: 'serve' | 'worker', env: NodeJS.ProcessEnv): Proc {
  let proc: Proc | undefined;
  scope.defer(`collect ${name} warnings`, () => {
    if (proc) for (const note of summariseLogs(name, proc.output)) ctx.note(note);
  });
  proc = new Proc(scope, name, process.execPath, ['packages/celerity/bin/celerity.js', command, '--app', 'bench/apps/events-app.ts'], { env });
  return proc;
}

/**
 * Opens a stream and reads it as a browser's EventSource would, but keeps
 * only what the measure needs: the `at` of each message (found in the JSON
 * without parsing it whole, so that 100,000 messages a second do not
 * measure the bench's own JSON.parse). Only messages of `bench.progress`
 * jobs count.
 */
function openStream(url: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { accept: 'text/event-stream' }, agent: false });
    const client: Client = { req, latencies: [], messages: 0, lagged: 0 };
    req.on('error', reject);
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`GET /v1/events answered ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (chunk: string) => {
        const received = Date.now();
        buffer += chunk;
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          end = buffer.indexOf('\n\n');
          if (message.includes('event: lagged')) client.lagged++;
          const at = message.lastIndexOf('"at":"');
          if (at < 0) continue;
          client.messages++;
          if (!message.includes(MEASURED)) continue;
          client.latencies.push(received - Date.parse(message.slice(at + 6, message.indexOf('"', at + 6))));
        }
      });
      res.on('error', () => {});
      resolve(client);
    });
    req.end();
  });
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

export const s6Events: Scenario = {
  name: 's6_events',
  title: `GET /v1/events: ${STREAMS} SSE streams, ${JOBS_PER_S * EVENTS_PER_JOB} job events/s, event → client latency`,
  async run(ctx: ScenarioContext) {
    const { scope } = ctx;
    const warmupMs = ctx.quick ? 1_000 : 3_000;
    const measureMs = ctx.quick ? 3_000 : 10_000;
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

    const clients: Client[] = [];
    for (let i = 0; i < STREAMS; i++) clients.push(await openStream(`${base}/v1/events`));
    scope.defer('close streams', () => {
      for (const c of clients) c.req.destroy();
    });

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
    // Every stream has its messages of every measured job, or a stream has stalled.
    await pollUntil(async () => clients.every((c) => c.latencies.length >= expectedPerStream), {
      intervalMs: 50,
      timeoutMs: 60_000,
      what: `${expectedPerStream} messages on each of ${STREAMS} streams`,
      describe: async () => `fewest ${Math.min(...clients.map((c) => c.latencies.length))}`,
    });
    server.assertRunning();
    worker.assertRunning();

    const all = clients.flatMap((c) => c.latencies).sort((a, b) => a - b);
    const received = all.length;
    const lagged = clients.reduce((n, c) => n + c.lagged, 0);
    const p50 = percentile(all, 50);
    const p95 = percentile(all, 95);
    const p99 = percentile(all, 99);
    const max = all[all.length - 1] ?? Number.NaN;
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
        messages: received,
        expected_messages: expectedPerStream * STREAMS,
        lagged,
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
