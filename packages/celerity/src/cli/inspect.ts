import { Argument, type Command, Option } from 'commander';
import { queueView, workerView, type QueueView, type WorkerView } from '../api/routes/ops.ts';
import type { App } from '../app.ts';
import { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { loadConfig, OPTIONS, type RawConfig, type CelerityConfig, type OptionName } from '../config.ts';
import { BrokerUnavailableError } from '../errors.ts';
import { queueStats } from '../ops/queue-stats.ts';
import { listHeld } from '../rate-limits/held.ts';
import { tenantsView, type TenantsView } from '../fairness/tenant-stats.ts';
import { readWorkers } from '../worker/registry.ts';
import { CliError } from './cli-error.ts';
import { loadApp } from './load-app.ts';

/** What `celerity inspect` can show. */
export const INSPECT_TARGETS = ['workers', 'active', 'queues', 'tenants', 'held', 'ping'] as const;
export type InspectTarget = (typeof INSPECT_TARGETS)[number];

/** The configuration `inspect` reads: where Redis is, and which queues. */
const INSPECT_OPTIONS: OptionName[] = ['redisUrl', 'brokerUrl', 'prefix', 'redisCluster', 'queues', 'logLevel'];

type InspectFlags = Partial<Record<OptionName, string>> & { app?: string; json?: boolean };

/**
 * Adds `celerity inspect workers|active|queues|ping` to the CLI. Unlike
 * Celery's broadcast `inspect`, it asks no worker anything: it reads the
 * registry the workers' heartbeats keep in Redis, and BullMQ's counters.
 */
export function registerInspect(program: Command): void {
  const cmd = program
    .command('inspect')
    .description("Show the live workers, their running jobs, the queues, the queues' tenants, or the jobs a rate limit or tenant cap holds back (`held`); `ping` exits 1 when no worker is alive.")
    .addArgument(new Argument('<what>', 'what to show').choices(INSPECT_TARGETS))
    .option('--json', 'print JSON instead of a table')
    .option('--app <module>', 'module exporting the app; needed by `queues` and `tenants` for its queue names (or give --queues)');
  for (const name of INSPECT_OPTIONS) {
    const meta = OPTIONS[name];
    cmd.addOption(new Option(`${meta.flag} <value>`, `${meta.doc} [env ${meta.env}]`));
  }
  cmd.action(async (what: InspectTarget, flags: InspectFlags) => {
    process.exitCode = await inspect(what, flags, (line) => process.stdout.write(`${line}\n`));
  });
}

/**
 * Runs one inspection and returns the exit code: 0, or 1 for `ping` when no
 * worker is alive. Redis being unreachable, or a bad flag, throws a one-line
 * {@link CliError}.
 */
export async function inspect(what: InspectTarget, flags: InspectFlags, print: (line: string) => void): Promise<number> {
  const given: RawConfig = {};
  for (const name of INSPECT_OPTIONS) if (flags[name] !== undefined) given[name] = flags[name];
  const config = loadConfig({ flags: given });
  const app = flags.app ? (await loadApp(flags.app)).configure(given) : undefined;
  const broker = app?.broker ?? new Broker(config);
  try {
    return await show(what, config, app, broker, flags.json === true, print);
  } catch (err) {
    if (err instanceof BrokerUnavailableError) {
      // viaBroker's "connection <status>" says nothing a user can act on; a socket error does.
      const cause = (err.cause as Error | undefined)?.message;
      const detail = cause && !/^connection \w+$/.test(cause) ? ` (${cause})` : '';
      throw new CliError(`Redis at ${redactUrl(config.brokerUrl)} is unreachable${detail}`, 2);
    }
    throw err;
  } finally {
    await (app ? app.close() : broker.close());
  }
}

async function show(what: InspectTarget, config: CelerityConfig, app: App | undefined, broker: Broker, json: boolean, print: (line: string) => void): Promise<number> {
  if (what === 'queues') {
    const names = config.queues ?? app?.queueNames();
    if (!names) throw new CliError('inspect queues needs --app <module> (the app names its queues) or --queues a,b');
    const queues = (await queueStats(broker, names)).map(queueView);
    if (json) print(JSON.stringify({ queues }, null, 2));
    else print(queuesTable(queues));
    return 0;
  }

  if (what === 'held') {
    const now = Date.now();
    const held = (await viaBroker(broker.redis, () => listHeld(broker.redis, config.prefix))).map((h) => ({
      job_id: h.jobId,
      waiting: { reason: h.reason, key: h.key, until: new Date(h.until).toISOString() },
    }));
    if (json) print(JSON.stringify({ held }, null, 2));
    else
      print(
        held.length === 0
          ? 'no held jobs'
          : table(
              ['JOB ID', 'REASON', 'KEY', 'UNTIL'],
              held.map((h) => {
                const left = Date.parse(h.waiting.until) - now;
                return [h.job_id, h.waiting.reason, h.waiting.key, left > 0 ? `in ${duration(left)}` : `${duration(-left)} ago`];
              }),
            ),
      );
    return 0;
  }

  if (what === 'tenants') {
    const names = config.queues ?? app?.queueNames();
    if (!names) throw new CliError('inspect tenants needs --app <module> (the app names its queues) or --queues a,b');
    const queues = await Promise.all(names.map((name) => tenantsView(broker, name)));
    if (json) print(JSON.stringify({ queues }, null, 2));
    else print(tenantsTable(queues));
    return 0;
  }

  const now = Date.now();
  const workers = (await viaBroker(broker.redis, () => readWorkers(broker.redis, config.prefix))).map((w) => workerView(w, now));
  switch (what) {
    case 'workers':
      if (json) print(JSON.stringify({ workers }, null, 2));
      else print(workers.length === 0 ? 'no workers' : workersTable(workers, now));
      return 0;
    case 'active': {
      const active = workers.flatMap((w) => w.active_jobs.map((j) => ({ worker: w.id, job_id: j.id, task: j.task, queue: j.queue })));
      if (json) print(JSON.stringify({ active }, null, 2));
      else
        print(
          active.length === 0
            ? 'no active jobs'
            : table(
                ['WORKER', 'JOB ID', 'TASK', 'QUEUE'],
                active.map((a) => [a.worker, a.job_id, a.task, a.queue]),
              ),
        );
      return 0;
    }
    case 'ping':
      if (json) print(JSON.stringify({ workers: workers.map((w) => ({ id: w.id, age_ms: w.age_ms })) }, null, 2));
      else print(workers.length === 0 ? 'no workers' : workers.map((w) => `${w.id}: pong (last beat ${duration(w.age_ms)} ago)`).join('\n'));
      return workers.length === 0 ? 1 : 0;
  }
}

function workersTable(workers: WorkerView[], now: number): string {
  return table(
    ['ID', 'HOST', 'PID', 'QUEUES', 'CONCURRENCY', 'ACTIVE', 'UP', 'LAST BEAT'],
    workers.map((w) => [w.id, w.host, String(w.pid), w.queues.join(','), String(w.concurrency), String(w.active_jobs.length), duration(now - Date.parse(w.started_at)), `${duration(w.age_ms)} ago`]),
    new Set([2, 4, 5]),
  );
}

function tenantsTable(queues: TenantsView[]): string {
  const rows = queues.flatMap((q) =>
    q.tenants.map((t) => [
      q.fair ? q.queue : `${q.queue} (not fair)`,
      t.tenant ?? '(none)',
      String(t.backlog),
      String(t.running),
      t.wait_p95_ms === null ? '-' : duration(t.wait_p95_ms),
      String(t.throughput_per_min),
      String(t.weight),
    ]),
  );
  if (rows.length === 0) return 'no tenants with jobs';
  return table(['QUEUE', 'TENANT', 'BACKLOG', 'RUNNING', 'WAIT P95', 'DONE/MIN', 'WEIGHT'], rows, new Set([2, 3, 4, 5, 6]));
}

function queuesTable(queues: QueueView[]): string {
  const c = (q: QueueView, s: string) => String(q.counts[s] ?? 0);
  const t = (x: { m1: number; m5: number; m15: number }) => `${x.m1}/${x.m5}/${x.m15}`;
  return table(
    ['QUEUE', 'WAITING', 'PRIORITIZED', 'DELAYED', 'ACTIVE', 'WAITING-CHILDREN', 'COMPLETED', 'FAILED', 'OLDEST WAITING', 'DONE 1/5/15m', 'FAILED 1/5/15m'],
    queues.map((q) => [
      q.paused ? `${q.name} (paused)` : q.name,
      c(q, 'waiting'),
      c(q, 'prioritized'),
      c(q, 'delayed'),
      c(q, 'active'),
      c(q, 'waiting-children'),
      c(q, 'completed'),
      c(q, 'failed'),
      q.oldest_waiting_age_ms === null ? '-' : duration(q.oldest_waiting_age_ms),
      t(q.throughput.completed),
      t(q.throughput.failed),
    ]),
    new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
  );
}

/** Columns padded to their widest cell; those in `right` aligned right (numbers). */
export function table(headers: string[], rows: string[][], right: ReadonlySet<number> = new Set()): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (right.has(i) ? cell.padStart(widths[i]!) : i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** `850ms`, `4.2s`, `3m12s`, `2h05m`, `3d04h`. */
export function duration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)}s`;
  const s = Math.floor(ms / 1_000);
  if (s < 3_600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86_400) return `${Math.floor(s / 3_600)}h${String(Math.floor((s % 3_600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86_400)}d${String(Math.floor((s % 86_400) / 3_600)).padStart(2, '0')}h`;
}

/** The URL (or a cluster's list of them) without passwords, fit for an error line. */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/g, '//$1:***@');
}
