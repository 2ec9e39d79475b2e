import type { Queue } from 'bullmq';
import { ALL_TENANTS } from '../auth/principal.ts';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { StoreUnavailableError } from '../errors.ts';
import type { JobStatus } from '../job-record.ts';
import { SCHEDULER_PREFIX } from '../schedules/schedule.ts';
import type { JobStore } from '../store/job-store.ts';
import { withTenantScope } from '../store/tenant-scope.ts';

/** The newest run of a schedule that has started, from the SQL history. */
export interface LastRun {
  jobId: string;
  status: JobStatus;
  startedAt: number | null;
  finishedAt: number | null;
}

/** A schedule as the cluster runs it: what BullMQ's job scheduler holds, and its last run. */
export interface ScheduleState {
  /** The schedule's id (`schedule(…, { id })`), without BullMQ's `celerity:` prefix. */
  id: string;
  task: string;
  queue: string;
  every: number | null;
  cron: string | null;
  tz: string | null;
  /** When the next tick is due (ms since the epoch); null when BullMQ has none planned. */
  nextRunAt: number | null;
  /** Ticks made so far, as BullMQ counts them. */
  iterations: number | null;
  lastRun: LastRun | null;
}

/**
 * Every schedule Celerity declared on these queues, read from BullMQ's job
 * schedulers (so a schedule another version of the app declared is listed
 * too), with the newest started run of each from the history.
 *
 * BullMQ names a scheduler's jobs `repeat:<scheduler id>:<due ms>`, so the
 * last run is the newest id of that prefix that started: one descending
 * range read on the primary key, however long the history.
 */
export async function readSchedules(broker: Broker, store: JobStore, queues: readonly string[]): Promise<ScheduleState[]> {
  const perQueue = await viaBroker(broker.redis, () => Promise.all(queues.map((name) => schedulersOf(broker.queue(name)))));
  const schedules = perQueue.flat();
  const lastRuns = await Promise.all(schedules.map((s) => lastRunOf(store, `${SCHEDULER_PREFIX}${s.id}`)));
  return schedules.map((s, i) => ({ ...s, lastRun: lastRuns[i] ?? null })).sort((a, b) => a.id.localeCompare(b.id));
}

async function schedulersOf(queue: Queue): Promise<Omit<ScheduleState, 'lastRun'>[]> {
  const schedulers = await queue.getJobSchedulers();
  return schedulers
    .filter((s) => s.key.startsWith(SCHEDULER_PREFIX))
    .map((s) => ({
      id: s.key.slice(SCHEDULER_PREFIX.length),
      task: s.name,
      queue: queue.name,
      every: s.every ?? null,
      cron: s.pattern ?? null,
      tz: s.tz ?? null,
      nextRunAt: s.next ?? null,
      iterations: s.iterationCount ?? null,
    }));
}

async function lastRunOf(store: JobStore, schedulerId: string): Promise<LastRun | null> {
  // `;` is the character after `:`: the range holds exactly the ids `repeat:<id>:…`.
  const from = `repeat:${schedulerId}:`;
  const to = `repeat:${schedulerId};`;
  try {
    const row = await withTenantScope(store, ALL_TENANTS, (db) =>
      db
        .selectFrom('jobs')
        .select(['id', 'status', 'started_at', 'finished_at'])
        .where('id', '>', from)
        .where('id', '<', to)
        .where('started_at', 'is not', null)
        .orderBy('id', 'desc')
        .limit(1)
        .executeTakeFirst(),
    );
    return row ? { jobId: row.id, status: row.status as JobStatus, startedAt: toMs(row.started_at), finishedAt: toMs(row.finished_at) } : null;
  } catch (err) {
    throw new StoreUnavailableError(err);
  }
}

/** PostgreSQL's bigint comes back as a string. */
function toMs(value: number | string | null): number | null {
  return value === null ? null : Number(value);
}
