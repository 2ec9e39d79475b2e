import { z } from 'zod';
import type { Logger } from 'pino';
import { ALL_TENANTS } from '../auth/principal.ts';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import type { CelerityConfig } from '../config.ts';
import type { JobStore } from '../store/job-store.ts';
import { pruneMetrics } from '../store/job-metrics.ts';
import { withTenantScope } from '../store/tenant-scope.ts';
import { defineTask, type Task } from '../task.ts';
import { sweepUploads } from '../uploads/store.ts';
import { schedule, type Schedule } from './schedule.ts';
import { purgeJobLogs } from '../store/job-logs.ts';

/**
 * The queue of the built-in maintenance tasks. Workers consume it unless
 * `--queues` leaves it out; at least one worker of a deployment must list it.
 */
export const MAINTENANCE_QUEUE = 'celerity';

/** Names of the built-in maintenance tasks. */
export const MAINTENANCE_TASKS = {
  purge: 'celerity.purge',
  sweepUploads: 'celerity.uploads.sweep',
  stuck: 'celerity.stuck',
} as const;

/** Default ticks of the maintenance tasks, in ms. */
export const MAINTENANCE_EVERY = {
  purge: 3_600_000,
  sweepUploads: 3_600_000,
  stuck: 300_000,
} as const;

/** What the maintenance tasks need of the app (the App class provides it). */
export interface MaintenanceHost {
  readonly config: CelerityConfig;
  readonly broker: Broker;
  readonly logger: Logger;
  openStore(): Promise<JobStore>;
  queueNames(): string[];
}

const DAY_MS = 86_400_000;
// With the tombstones of deleted jobs (client/job-actions.ts), which only guard against late recorder writes.
const TERMINAL = ['completed', 'failed', 'cancelled', 'deleted'];

/**
 * Deletes the SQL history of jobs finished more than `retentionDays` ago, in
 * batches so that no transaction holds the table for long. 0 keeps
 * everything. Only the `jobs` table is touched: what the workloads wrote
 * (imported records, indexed documents) is data, not history.
 */
export async function purgeHistory(store: JobStore, retentionDays: number, now: number = Date.now(), batchSize = 1000): Promise<{ deleted: number; cutoff: number | null }> {
  if (retentionDays <= 0) return { deleted: 0, cutoff: null };
  const cutoff = now - retentionDays * DAY_MS;
  let deleted = 0;
  for (;;) {
    // Every tenant's history (row-level security scope `*`); one short transaction per batch.
    const res = await withTenantScope(store, ALL_TENANTS, (db) => {
      // `created_at` too: a job finished before the cutoff was created before it, and on PostgreSQL only `jobs_created` can find
      // them (no index covers `finished_at` there, migration 0014). A worker's clock behind the producer's delays a job's purge
      // to a later run, never purges it early.
      const batch = db.selectFrom('jobs').select('id').where('created_at', '<', cutoff).where('finished_at', '<', cutoff).where('status', 'in', TERMINAL).limit(batchSize);
      return db.deleteFrom('jobs').where('id', 'in', batch).executeTakeFirst();
    });
    const n = Number(res.numDeletedRows);
    deleted += n;
    if (n < batchSize) {
      // The kept log lines of jobs as old (written when each job finished) go with them.
      await purgeJobLogs(store, cutoff);
      return { deleted, cutoff };
    }
  }
}

/**
 * Removes finished jobs older than the result TTL from Redis. BullMQ's own
 * retention only runs when another job of the queue finishes, so a queue that
 * went quiet keeps its last results until this runs.
 */
export async function cleanRedisResults(broker: Broker, queues: readonly string[], resultTtlSeconds: number): Promise<{ completed: number; failed: number }> {
  const limit = 1000;
  const removed = { completed: 0, failed: 0 };
  for (const name of queues) {
    const queue = broker.queue(name);
    for (const state of ['completed', 'failed'] as const) {
      for (;;) {
        const ids = await viaBroker(broker.redis, () => queue.clean(resultTtlSeconds * 1000, limit, state));
        removed[state] += ids.length;
        if (ids.length < limit) break;
      }
    }
  }
  return removed;
}

/** A job BullMQ holds as active whose lock is gone: started, and no worker heartbeat since. */
export interface StuckJob {
  job_id: string;
  task: string;
  queue: string;
  /** When its current attempt started (epoch ms), if known. */
  started_at: number | null;
  attempts: number;
}

/**
 * Finds active jobs whose lock has expired: their worker stopped renewing it
 * (died, froze, or lost Redis) and no stalled check has moved them back yet,
 * which is what happens when no worker of their queue is left. Each queue is
 * read in one MULTI, so a job finishing meanwhile is not reported.
 */
export async function findStuckJobs(broker: Broker, queues: readonly string[]): Promise<StuckJob[]> {
  const stuck: StuckJob[] = [];
  for (const name of queues) {
    const queue = broker.queue(name);
    const active = await viaBroker(broker.redis, () => broker.redis.lrange(queue.keys.active!, 0, -1));
    if (active.length === 0) continue;
    const multi = broker.redis.multi();
    for (const id of active)
      multi
        .exists(`${queue.toKey(id)}:lock`)
        .lpos(queue.keys.active!, id)
        .hmget(queue.toKey(id), 'name', 'processedOn', 'atm');
    const replies = (await viaBroker(broker.redis, () => multi.exec())) ?? [];
    active.forEach((id, i) => {
      const [, locked] = replies[i * 3]!;
      const [, position] = replies[i * 3 + 1]!;
      const [, fields] = replies[i * 3 + 2]!;
      if (locked === 1 || position === null) return;
      const [task, processedOn, attemptsMade] = fields as (string | null)[];
      stuck.push({
        job_id: id,
        task: task ?? '(unknown)',
        queue: name,
        started_at: processedOn ? Number(processedOn) : null,
        attempts: Number(attemptsMade ?? 0) + 1,
      });
    });
  }
  return stuck;
}

const noInput = z.object({}).strict();

/**
 * The built-in maintenance tasks, bound to the app: `celerity.purge`
 * (history past `CELERITY_HISTORY_RETENTION`, Redis results past
 * `CELERITY_RESULT_TTL`, job metrics past their retention), `celerity.uploads.sweep` (orphan uploads past
 * `CELERITY_UPLOAD_TTL`) and `celerity.stuck` (reports stuck jobs).
 */
export function maintenanceTasks(host: MaintenanceHost): Task[] {
  const common = { queue: MAINTENANCE_QUEUE, retries: 0, input: noInput } as const;
  return [
    defineTask({
      ...common,
      name: MAINTENANCE_TASKS.purge,
      description:
        'Deletes the job history past CELERITY_HISTORY_RETENTION days, Redis results past CELERITY_RESULT_TTL, and job metrics past 48 hours (minutes) and CELERITY_METRICS_RETENTION days (hours).',
      handler: async () => {
        const store = await host.openStore();
        const sql = await purgeHistory(store, host.config.historyRetention);
        const metrics = await pruneMetrics(store, host.config.metricsRetention);
        const redis = await cleanRedisResults(host.broker, host.queueNames(), host.config.resultTtl);
        const result = {
          jobs_deleted: sql.deleted,
          cutoff: sql.cutoff,
          metric_minutes_deleted: metrics.minutes,
          metric_hours_deleted: metrics.hours,
          redis_completed_removed: redis.completed,
          redis_failed_removed: redis.failed,
        };
        if (sql.deleted + redis.completed + redis.failed > 0) host.logger.info(result, 'purged old jobs');
        return result;
      },
    }),
    defineTask({
      ...common,
      name: MAINTENANCE_TASKS.sweepUploads,
      description: 'Removes orphan uploads older than CELERITY_UPLOAD_TTL.',
      handler: async () => ({ removed: await sweepUploads(host.config.uploadDir, host.config.uploadTtl * 1000, Date.now(), host.logger) }),
    }),
    defineTask({
      ...common,
      name: MAINTENANCE_TASKS.stuck,
      description: 'Reports jobs that are active but whose worker stopped renewing their lock.',
      handler: async () => {
        const stuck = await findStuckJobs(host.broker, host.queueNames());
        for (const job of stuck) host.logger.warn({ job_id: job.job_id, task: job.task, queue: job.queue, started_at: job.started_at }, 'stuck job: active, but no worker holds its lock');
        return { stuck };
      },
    }),
  ];
}

/** The default schedules of the maintenance tasks. */
export function maintenanceSchedules(): Schedule[] {
  return [
    schedule(MAINTENANCE_TASKS.purge, { every: MAINTENANCE_EVERY.purge }),
    schedule(MAINTENANCE_TASKS.sweepUploads, { every: MAINTENANCE_EVERY.sweepUploads }),
    schedule(MAINTENANCE_TASKS.stuck, { every: MAINTENANCE_EVERY.stuck }),
  ];
}
