/**
 * overview: the dashboard's Overview page on a history of 1,000,000 jobs
 * (20,000 with --quick), on SQLite and on PostgreSQL, through the HTTP API
 * of a real `celerity serve`.
 *
 * One load is the page's requests sent together, as the browser does:
 * `GET /v1/queues`, `GET /v1/workers`, `GET /v1/schedules` and the charts'
 * `GET /v1/stats` (the last hour by minute, one series per queue and task:
 * the dashboard's query), timed until the last one answers. Loads run one
 * after another (one person's page, not the server's throughput): `warm-up`
 * uncounted, then `loads`; reported: p50/p95 of a load, and p50/p95 of
 * each route within the loads. Then each route alone, one request at a
 * time (`alone`): its own cost, without waiting behind the page's other
 * requests in the same single-threaded server.
 *
 * The store looks like production for these reads:
 * - the history of bench/seed-history.ts (30 days, ending now);
 * - its metrics: the seeding's inserts fire migration 0009's triggers
 *   (PostgreSQL adds each batch into the metrics tables; SQLite appends the
 *   jobs to `job_metrics_pending`), then the scenario folds the pending jobs
 *   as the recorder does after each batch, prunes the minutes past 48 hours
 *   as `celerity.purge` does, and (PostgreSQL) analyses the tables as
 *   autovacuum would;
 * - the runs of the app's schedules (bench/apps/overview-tasks.ts) over the
 *   same 30 days (3 with --quick), with BullMQ's ids `repeat:celerity:<id>:<due ms>` (43,200
 *   for the every-minute one), which the schedules' last-run read ranges over;
 * - live queues and workers: two `celerity worker` processes (heartbeats,
 *   the schedules upserted in Redis), the queue `imports` paused with jobs
 *   waiting, and jobs delayed by an hour on the others.
 */
import { sql } from 'kysely';
import { foldJobMetrics, pruneMetrics } from '../../packages/celerity/src/store/job-metrics.ts';
import { JobStore } from '../../packages/celerity/src/store/job-store.ts';
import { OVERVIEW_SCHEDULES, overviewTasks } from '../apps/overview-tasks.ts';
import { openApp, storeEnv, type StoreEnv, type StoreKind } from '../lib/env.ts';
import { now, percentile, pollUntil, round } from '../lib/measure.ts';
import { celerity, freePort } from '../lib/procs.ts';
import { type Scope, withScope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';
import { seedHistory, seedScheduleRuns } from '../seed-history.ts';
import { key } from './history_search.ts';

const APP = 'bench/apps/overview-app.ts';
const HOUR = 3_600_000;
/** What `celerity.purge` keeps by default (CELERITY_METRICS_RETENTION). */
const RETENTION_DAYS = 30;

const ROUTES = [
  { name: 'queues', path: () => '/v1/queues' },
  { name: 'workers', path: () => '/v1/workers' },
  { name: 'schedules', path: () => '/v1/schedules' },
  {
    name: 'stats',
    // The dashboard's charts (dashboard/src/pages/Overview.tsx): the last hour, by minute.
    path: () => {
      const to = Date.now();
      return `/v1/stats?from=${new Date(to - HOUR).toISOString()}&to=${new Date(to).toISOString()}&granularity=minute`;
    },
  },
] as const;

type RouteName = (typeof ROUTES)[number]['name'];

interface Timing {
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
}

function timing(values: number[]): Timing {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50_ms: round(percentile(sorted, 50)), p95_ms: round(percentile(sorted, 95)), max_ms: round(sorted[sorted.length - 1]!) };
}

async function prepare(ctx: ScenarioContext, env: StoreEnv, rows: number): Promise<{ seeded_s: number; scheduleRuns: number; minuteRows: number }> {
  const store = new JobStore({
    databaseUrl: env.kind === 'postgres' ? ctx.databaseUrl : undefined,
    sqlitePath: env.sqlitePath ?? ':memory:',
    ...(env.schema ? { schema: env.schema } : {}),
  });
  try {
    const t0 = now();
    ctx.log(`${env.kind}: seeding ${rows} jobs`);
    await seedHistory(store, { rows, log: (m) => ctx.log(`${env.kind}: ${m}`) });
    const scheduleRuns = await seedScheduleRuns(store, OVERVIEW_SCHEDULES, { days: rows < 1_000_000 ? 3 : 30 });
    ctx.log(`${env.kind}: ${scheduleRuns} schedule runs; folding and pruning the metrics`);
    await foldJobMetrics(store);
    await pruneMetrics(store, RETENTION_DAYS);
    if (store.dialect === 'postgres') await sql`vacuum (analyze) job_metrics_minute, job_metrics_hour, job_metrics_total, job_metrics_pending`.execute(store.db);
    const { rows: minutes } = await sql<{ n: number | string }>`select count(*) as n from job_metrics_minute`.execute(store.db);
    return { seeded_s: round((now() - t0) / 1000), scheduleRuns, minuteRows: Number(minutes[0]!.n) };
  } finally {
    await store.close();
  }
}

/** Queues with something in them: `imports` paused with jobs waiting, jobs delayed by an hour elsewhere. */
async function liveJobs(ctx: ScenarioContext, scope: Scope, env: StoreEnv, perQueue: number): Promise<void> {
  const app = await openApp(ctx, scope, env, overviewTasks);
  await app.pauseQueue('imports');
  const byQueue = new Map(overviewTasks.map((t) => [t.queue, t]));
  for (const [queue, task] of byQueue) {
    const options = queue === 'imports' ? {} : { delay: HOUR };
    for (let i = 0; i < perQueue; i += 50) await Promise.all(Array.from({ length: Math.min(50, perQueue - i) }, () => app.enqueue(task, {}, options)));
  }
}

async function measureStore(ctx: ScenarioContext, scope: Scope, kind: StoreKind, rows: number, warmup: number, loads: number, aloneSamples: number) {
  const env = storeEnv(ctx, scope, kind);
  const prepared = await prepare(ctx, env, rows);
  const admin = await key(scope, env, 'bench-admin', ['--scopes', 'admin']);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = celerity(ctx, scope, `celerity-serve-${kind}`, 'serve', env.childEnv({ PORT: String(port), HOST: '127.0.0.1', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0' }), APP);
  const workers = [0, 1].map((i) => celerity(ctx, scope, `celerity-worker-${kind}-${i}`, 'worker', env.childEnv(), APP));
  await liveJobs(ctx, scope, env, ctx.quick ? 50 : 200);
  const headers = { authorization: `Bearer ${admin}` };
  const get = async (path: string) => {
    const res = await fetch(`${base}${path}`, { headers });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  // Ready when the server answers and both workers beat and have upserted the schedules.
  await pollUntil(
    async () => {
      server.assertRunning();
      for (const w of workers) w.assertRunning();
      try {
        const [w, s] = await Promise.all([get('/v1/workers'), get('/v1/schedules')]);
        return w.body.workers?.length >= 2 && OVERVIEW_SCHEDULES.every((o) => s.body.schedules?.some((x: { id: string }) => x.id === o.id));
      } catch {
        return false;
      }
    },
    { intervalMs: 200, timeoutMs: 90_000, what: `${base} to list 2 workers and the schedules` },
  );

  const perRoute = Object.fromEntries(ROUTES.map((r) => [r.name, [] as number[]])) as Record<RouteName, number[]>;
  const loadTimes: number[] = [];
  const detail = { errors: 0, queues: 0, workers: 0, schedules: 0, schedules_with_last_run: 0, stats_series: 0, stats_points: 0 };
  for (let i = 0; i < warmup + loads; i++) {
    const counted = i >= warmup;
    const t0 = now();
    await Promise.all(
      ROUTES.map(async (route) => {
        const t = now();
        const { status, body } = await get(route.path());
        const ms = now() - t;
        if (!counted) return;
        perRoute[route.name].push(ms);
        if (status !== 200) {
          detail.errors++;
          if (detail.errors === 1) ctx.note(`${kind} ${route.name}: ${status} ${JSON.stringify(body.error)}`);
        } else if (route.name === 'queues') detail.queues = body.queues.length;
        else if (route.name === 'workers') detail.workers = body.workers.length;
        else if (route.name === 'schedules') {
          detail.schedules = body.schedules.length;
          detail.schedules_with_last_run = body.schedules.filter((s: { last_run: unknown }) => s.last_run).length;
        } else {
          detail.stats_series = body.series.length;
          detail.stats_points = body.series.reduce((n: number, s: { points: unknown[] }) => n + s.points.length, 0);
        }
      }),
    );
    if (counted) loadTimes.push(now() - t0);
  }
  // Each route alone, one request at a time: its own cost, without the queueing behind the page's other requests in the same server.
  const alone = {} as Record<RouteName, Timing>;
  for (const route of ROUTES) {
    const times: number[] = [];
    for (let i = 0; i < aloneSamples; i++) {
      const t = now();
      const { status } = await get(route.path());
      times.push(now() - t);
      if (status !== 200) detail.errors++;
    }
    alone[route.name] = timing(times);
  }
  server.assertRunning();
  // Numbers of a page that shows less than production's would flatter it.
  if (detail.schedules_with_last_run < OVERVIEW_SCHEDULES.length) ctx.note(`${kind}: only ${detail.schedules_with_last_run} schedules had a last run; the seeded runs were not read`);
  if (detail.stats_points === 0) ctx.note(`${kind}: GET /v1/stats answered no points: the metrics of the seeded jobs are missing`);
  const load = timing(loadTimes);
  const routes = Object.fromEntries(ROUTES.map((r) => [r.name, timing(perRoute[r.name])])) as Record<RouteName, Timing>;
  ctx.log(`${kind}: overview load p50 ${load.p50_ms} ms, p95 ${load.p95_ms} ms; ${ROUTES.map((r) => `${r.name} p95 ${routes[r.name].p95_ms} ms`).join(', ')}; ${JSON.stringify(detail)}`);
  ctx.log(`${kind}: alone, ${ROUTES.map((r) => `${r.name} p50 ${alone[r.name].p50_ms} ms p95 ${alone[r.name].p95_ms} ms`).join(', ')}`);
  return { seeded_s: prepared.seeded_s, load, routes, alone, detail: { ...detail, schedule_runs: prepared.scheduleRuns, metric_minute_rows: prepared.minuteRows } };
}

export const overview: Scenario = {
  name: 'overview',
  title: "the dashboard's overview (queues, workers, schedules, stats in parallel) on a 1,000,000-job history (p50/p95), SQLite and PostgreSQL",
  async run(ctx) {
    const rows = ctx.quick ? 20_000 : 1_000_000;
    const warmup = ctx.quick ? 2 : 20;
    const loads = ctx.quick ? 10 : 200;
    const aloneSamples = ctx.quick ? 5 : 50;
    const fields: Record<string, unknown> = {};
    const rowsOut: Row[] = [];
    for (const kind of ['sqlite', 'postgres'] as const) {
      // Each store's processes stop (and its store goes) before the next store is measured.
      const result = await withScope(ctx.scope, (scope) => measureStore(ctx, scope, kind, rows, warmup, loads, aloneSamples));
      fields[kind] = result;
      rowsOut.push({ metric: `${kind}: overview load p95`, unit: 'ms', celerity: result.load.p95_ms });
      for (const [name, t] of Object.entries(result.routes)) rowsOut.push({ metric: `${kind}: GET /v1/${name} p95`, unit: 'ms', celerity: t.p95_ms });
    }
    return { fields, params: { rows, warmup, loads, alone_samples: aloneSamples, clients: 1, routes: ROUTES.map((r) => r.path().split('?')[0]), schedules: OVERVIEW_SCHEDULES }, rows: rowsOut };
  },
};
