import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { App } from '../app.ts';
import type { JobEventInfo, LifecycleEvent } from '../worker/lifecycle.ts';
import type { Worker } from '../worker/worker.ts';
import { type JobTotals, readTotals } from '../store/job-metrics.ts';
import { BUCKET_COUNT, BUCKET_LOWER } from './histogram.ts';
import { measureHistoryLag, withTimeout } from './readiness.ts';

/** The `status` label of `celerity_jobs_total` and `celerity_job_duration_seconds`: how an attempt ended. */
export type AttemptStatus = 'completed' | 'failed' | 'retrying' | 'cancelled';

/** The BullMQ states `celerity_queue_depth` reports, as its `state` label. */
export const QUEUE_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'waiting-children', 'completed', 'failed'] as const;

/** How long a scrape waits for the queue counts before serving the last ones it has. */
export const QUEUE_DEPTH_TIMEOUT_MS = 1_000;

// From 5 ms to 10 min: most tasks are short, but imports and ingestions run minutes.
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
// Waits reach further than runs: a backlog or a long delay queues jobs for an hour.
const WAIT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];

const OUTCOMES: [LifecycleEvent, AttemptStatus][] = [
  ['job:completed', 'completed'],
  ['job:failed', 'failed'],
  ['job:retrying', 'retrying'],
  ['job:cancelled', 'cancelled'],
];

/**
 * The Prometheus metrics of one app: job counters and histograms fed by the
 * app's job hooks (so they count the jobs this process runs), the active
 * jobs of the workers registered with {@link Metrics.trackWorker}, and the
 * depth of the app's queues read from Redis at scrape time.
 *
 * Every label value is a task, queue, status or state name, or a tenant
 * on the `celerity_tenant_*` series, where the number of distinct tenants
 * is capped ({@link TenantLabels}): bounded, never a job id.
 */
export class Metrics {
  /** This app's metrics; {@link Metrics.render} adds the process defaults. */
  readonly registry: Registry;
  /** Requests refused because their address failed to authenticate too often (api/auth-failure-limit.ts). */
  readonly authRefusals: Counter;
  private readonly app: App;
  private readonly workers = new Set<Worker>();
  private clusterTotals = false;
  /** The totals read by the last scrape, for the cluster run-time histogram. */
  private lastTotals: JobTotals[] = [];

  constructor(app: App) {
    this.app = app;
    // One registry per app, not prom-client's global one: a process (a test
    // run) may create many apps, and a name registers once per registry.
    this.registry = new Registry();
    const registers = [this.registry];

    const jobs: Counter<'task' | 'queue' | 'status' | 'source'> = new Counter({
      name: 'celerity_jobs_total',
      help: 'Without `source`: attempts ended in this process, by task, queue and how they ended (completed, failed, retrying, cancelled). With source="cluster" (the API only): jobs of the whole cluster that ended completed, failed or cancelled, and the retried attempts of those jobs (retrying), from the SQL history.',
      labelNames: ['task', 'queue', 'status', 'source'] as const,
      registers,
      collect: (): Promise<void> => this.readClusterTotals(jobs),
    });
    const duration = new Histogram({
      name: 'celerity_job_duration_seconds',
      help: 'Run time of an attempt, from its start to its end, by task, queue and how it ended.',
      labelNames: ['task', 'queue', 'status'] as const,
      buckets: DURATION_BUCKETS,
      registers,
    });
    const wait = new Histogram({
      name: 'celerity_job_wait_seconds',
      help: 'Time from enqueue to the start of the first attempt (a requested delay included), by task and queue.',
      labelNames: ['task', 'queue'] as const,
      buckets: WAIT_BUCKETS,
      registers,
    });
    const retries = new Counter({
      name: 'celerity_retries_total',
      help: 'Failed attempts that will be retried, by task and queue.',
      labelNames: ['task', 'queue'] as const,
      registers,
    });
    const active = new Gauge({
      name: 'celerity_worker_active_jobs',
      help: "Jobs running now in this process's workers.",
      registers,
      collect: () => {
        let running = 0;
        for (const worker of this.workers) running += worker.activeCount;
        active.set(running);
      },
    });
    const depth: Gauge<'queue' | 'state'> = new Gauge({
      name: 'celerity_queue_depth',
      help: "Jobs in each of the app's queues, by BullMQ state, read from Redis at scrape time.",
      labelNames: ['queue', 'state'] as const,
      registers,
      collect: (): Promise<void> => this.readQueueDepth(depth),
    });

    // The recorder: how far the SQL history trails the queues, and what it
    // could not write. The counters mirror app.recorderStats (monotonic,
    // summed over the app's recorders) at scrape time.
    const lag: Gauge<'queue'> = new Gauge({
      name: 'celerity_recorder_lag_seconds',
      help: 'Age of the oldest event of each queue that no recorder has written to SQL yet (0: the history is up to date), read from Redis at scrape time.',
      labelNames: ['queue'] as const,
      registers,
      collect: async (): Promise<void> => {
        const lags = await measureHistoryLag(this.app, QUEUE_DEPTH_TIMEOUT_MS);
        for (const [queue, ms] of lags) lag.set({ queue }, ms / 1000);
      },
    });
    const failedBatches: Counter<'status'> = new Counter({
      name: 'celerity_recorder_failed_batches_total',
      help: 'Recorder batches whose SQL write failed, by status: "retried" (left pending, retried whole: the store was unavailable) or "isolated" (refused by the store, split until the rows at fault were alone).',
      labelNames: ['status'] as const,
      registers,
      collect: () => {
        const stats = this.app.recorderStats;
        failedBatches.reset();
        failedBatches.inc({ status: 'retried' }, stats.failedBatches);
        failedBatches.inc({ status: 'isolated' }, stats.isolatedBatches);
      },
    });
    const unrecordable: Counter<'kind'> = new Counter({
      name: 'celerity_recorder_unrecordable_rows_total',
      help: 'Job rows the SQL store refused, by kind: "minimal" (recorded with id, status and times only, error type UnrecordableRow) or "dropped" (not recorded at all).',
      labelNames: ['kind'] as const,
      registers,
      collect: () => {
        const stats = this.app.recorderStats;
        unrecordable.reset();
        unrecordable.inc({ kind: 'minimal' }, stats.minimalRows);
        unrecordable.inc({ kind: 'dropped' }, stats.droppedRows);
      },
    });

    this.authRefusals = new Counter({
      name: 'celerity_auth_refusals_total',
      help: 'Requests this process refused (429) because their client IP had failed to authenticate CELERITY_AUTH_FAILURE_LIMIT times in the window, on the job API and the dashboard login.',
      registers,
    });

    // Per tenant, on series of their own: a tenant label on the task series
    // would multiply every task's series by the tenants.
    const tenants = new TenantLabels(app.config.metricsTenants);
    const tenantJobs = new Counter({
      name: 'celerity_tenant_jobs_total',
      help: `Attempts ended in this process, by queue, tenant and how they ended. The tenant label is bounded: the first ${app.config.metricsTenants} distinct tenants a process sees (CELERITY_METRICS_TENANTS) keep their name, later ones count as "${OTHER_TENANTS}"; jobs without a tenant are "${NO_TENANT}".`,
      labelNames: ['queue', 'tenant', 'status'] as const,
      registers,
    });
    const tenantWait = new Histogram({
      name: 'celerity_tenant_job_wait_seconds',
      help: 'Time from enqueue to the start of the first attempt, by queue and tenant (the tenant label bounded as in celerity_tenant_jobs_total).',
      labelNames: ['queue', 'tenant'] as const,
      buckets: WAIT_BUCKETS,
      registers,
    });

    app.on('job:started', (info) => {
      // Only the first attempt: a retry's enqueue time is the job's, so its
      // "wait" would include the earlier attempts and their backoff.
      if (info.attempt === 1) {
        const seconds = Math.max(0, info.startedAt - info.enqueuedAt) / 1000;
        wait.observe(labels(info), seconds);
        tenantWait.observe({ queue: info.queue, tenant: tenants.label(info.tenant) }, seconds);
      }
    });
    for (const [event, status] of OUTCOMES) {
      app.on(event, (info) => {
        jobs.inc({ ...labels(info), status });
        tenantJobs.inc({ queue: info.queue, tenant: tenants.label(info.tenant), status });
        duration.observe({ ...labels(info), status }, Math.max(0, (info.finishedAt ?? Date.now()) - info.startedAt) / 1000);
        if (status === 'retrying') retries.inc(labels(info));
      });
    }
  }

  /**
   * Adds the cluster-wide series `celerity_jobs_total{source="cluster"}`,
   * read at scrape time from the totals the recorders keep in SQL: what
   * every worker of the cluster ran, not only this process, and the
   * histogram `celerity_cluster_job_run_seconds`. The API's stats routes
   * call it, so they are exposed by the API and not by each worker's health
   * server (which would repeat the same cluster numbers once per worker).
   */
  exposeClusterTotals(): void {
    this.clusterTotals = true;
  }

  /**
   * The cluster's totals, from `job_metrics_total`: a handful of rows, kept
   * in the recorders' transactions and never pruned, so each series only
   * rises. Set to the stored value (remove, then add) so that every API
   * process reports the same number. A store that does not answer in time
   * keeps the last values: a scrape never fails or hangs because of SQL.
   */
  private async readClusterTotals(counter: Counter<'task' | 'queue' | 'status' | 'source'>): Promise<void> {
    if (!this.clusterTotals) return;
    try {
      const totals = await withTimeout(
        this.app.openStore().then((store) => readTotals(store)),
        QUEUE_DEPTH_TIMEOUT_MS,
        'SQL',
      );
      this.lastTotals = totals;
      for (const t of totals) {
        const values: [AttemptStatus, number][] = [
          ['completed', t.completed],
          ['failed', t.failed],
          ['cancelled', t.cancelled],
          ['retrying', t.retries],
        ];
        for (const [status, value] of values) {
          const labels = { task: t.task, queue: t.queue, status, source: 'cluster' };
          counter.remove(labels);
          counter.inc(labels, value);
        }
      }
    } catch {
      // Stale (or absent) cluster totals; the scrape goes on.
    }
  }

  /** Counts `worker`'s running jobs in `celerity_worker_active_jobs` (and its queues in the depth); returns the undo. */
  trackWorker(worker: Worker): () => void {
    this.workers.add(worker);
    return () => this.workers.delete(worker);
  }

  /** The Content-Type of {@link Metrics.render}'s text (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition: the process defaults (CPU, memory, event loop, GC), then this app's metrics. */
  async render(): Promise<string> {
    const [process, app] = await Promise.all([processRegistry().metrics(), this.registry.metrics()]);
    const cluster = this.clusterTotals ? `${app.endsWith('\n') ? '' : '\n'}${clusterRunHistogram(this.lastTotals)}` : '';
    return `${process}\n${app}${cluster}`;
  }

  /**
   * Sets the depth gauges from BullMQ's counts. A queue that does not answer
   * in time (Redis down or slow) keeps its last values, or none: a scrape
   * must never fail or hang because of Redis.
   */
  private async readQueueDepth(gauge: Gauge<'queue' | 'state'>): Promise<void> {
    const queues = new Set([...this.app.queueNames(), ...(this.app.config.queues ?? [])]);
    for (const worker of this.workers) for (const q of worker.queues) queues.add(q);
    if (queues.size === 0) return;
    const broker = this.app.broker;
    await Promise.all(
      [...queues].map(async (name) => {
        try {
          const counts = await withTimeout(
            (async () => {
              // A connection still opening (the first scrape of a process) is
              // worth waiting for; one that is reconnecting fails at once.
              if (broker.redis.status === 'wait' || broker.redis.status === 'connecting') await broker.ready(QUEUE_DEPTH_TIMEOUT_MS);
              return broker.queue(name).getJobCounts(...QUEUE_STATES);
            })(),
            QUEUE_DEPTH_TIMEOUT_MS,
            'Redis',
          );
          for (const state of QUEUE_STATES) gauge.set({ queue: name, state }, counts[state] ?? 0);
        } catch {
          // Stale (or absent) depth; the scrape goes on.
        }
      }),
    );
  }
}

/**
 * `celerity_cluster_job_run_seconds`: the run time of the final attempt of
 * every job of the cluster, from the totals' buckets (see ops/histogram.ts),
 * as exposition text: prom-client's Histogram only observes values, and
 * these are counts summed in SQL. A name of its own, because its buckets
 * are not those of the in-process `celerity_job_duration_seconds`. A run is
 * whole ms, so each bucket's `le` is its largest ms, exactly.
 */
function clusterRunHistogram(totals: readonly JobTotals[]): string {
  const name = 'celerity_cluster_job_run_seconds';
  const lines = [`# HELP ${name} Run time of the final attempt of the jobs of the whole cluster that ended, by task and queue, from the SQL history (the API only).`, `# TYPE ${name} histogram`];
  for (const t of totals) {
    const labels = `task="${escapeLabel(t.task)}",queue="${escapeLabel(t.queue)}"`;
    let cumulative = 0;
    for (let k = 0; k < BUCKET_COUNT; k++) {
      cumulative += t.runBuckets[k] ?? 0;
      if (k === BUCKET_COUNT - 1) break;
      const largest = BUCKET_LOWER[k + 1]! - 1;
      // A bucket without a whole ms of its own (the second of [1.41, 2)) repeats the previous bound.
      if (largest < BUCKET_LOWER[k]!) continue;
      lines.push(`${name}_bucket{${labels},le="${largest / 1000}"} ${cumulative}`);
    }
    lines.push(`${name}_bucket{${labels},le="+Inf"} ${cumulative}`);
    lines.push(`${name}_sum{${labels}} ${t.runSumMs / 1000}`);
    lines.push(`${name}_count{${labels}} ${t.runCount}`);
  }
  return `${lines.join('\n')}\n`;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The tenant label of the jobs without a tenant. */
export const NO_TENANT = '(none)';
/** The tenant label of the tenants past the cap. */
export const OTHER_TENANTS = '(other)';

/**
 * Keeps the tenant label bounded: the first `max` distinct tenants a process
 * sees keep their name for its life, every later one is counted as
 * {@link OTHER_TENANTS}. Prometheus keeps a series per label value, so a
 * service with a tenant per customer would otherwise grow without end. The
 * parentheses keep the two reserved values apart from ordinary names; a
 * tenant actually named `(none)` or `(other)` would share their series.
 */
export class TenantLabels {
  private readonly seen = new Set<string>();
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  label(tenant: string | null): string {
    if (tenant === null) return NO_TENANT;
    if (this.seen.has(tenant)) return tenant;
    if (this.seen.size >= this.max) return OTHER_TENANTS;
    this.seen.add(tenant);
    return tenant;
  }
}

function labels(info: JobEventInfo): { task: string; queue: string } {
  return { task: info.task, queue: info.queue };
}

const byApp = new WeakMap<App, Metrics>();

/**
 * The app's metrics, created (and subscribed to its job hooks) on first use:
 * call it before the app's workers run jobs so that none goes uncounted.
 */
export function appMetrics(app: App): Metrics {
  let metrics = byApp.get(app);
  if (!metrics) {
    metrics = new Metrics(app);
    byApp.set(app, metrics);
  }
  return metrics;
}

let processMetrics: Registry | undefined;

/**
 * prom-client's default metrics describe the process, not an app, and each
 * collection installs its own GC observer: collected once per process and
 * shared by every app's exposition.
 */
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}
