import { stableJson } from '../stable-json.ts';
import type { JobSchedulerJson, JobsOptions, RepeatOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { baseJobOptions } from '../client/enqueue.ts';
import type { JobEnvelope } from '../job-record.ts';
import { SCHEDULER_PREFIX, type ResolvedSchedule } from './schedule.ts';

/** What {@link syncSchedules} did, by scheduler id. */
export interface ScheduleSync {
  /** Created or changed. */
  upserted: string[];
  /** Already in Redis as declared: left untouched, so its next tick stays where it was. */
  unchanged: string[];
  /** Celerity schedulers no longer declared by the app. */
  removed: string[];
}

interface Desired {
  repeat: Omit<RepeatOptions, 'key'>;
  template: { name: string; data: JobEnvelope; opts: JobsOptions };
}

function desired(broker: Broker, s: ResolvedSchedule): Desired {
  const repeat: Omit<RepeatOptions, 'key'> = 'every' in s.when ? { every: s.when.every } : { pattern: s.when.cron, ...(s.when.tz ? { tz: s.when.tz } : {}) };
  // The same envelope, attempts, backoff and retention as an enqueue: a tick
  // is an ordinary Celerity job (recorded, retried, readable by id).
  return { repeat, template: { name: s.task.name, data: { input: s.input }, opts: baseJobOptions(broker, s.task) } };
}

/**
 * Makes the queues' job schedulers match the declared schedules: upserts
 * each one that is missing or differs, leaves identical ones alone, and
 * removes the `celerity:` schedulers of `queues` that are no longer declared.
 *
 * Safe to run from every worker at once: BullMQ's upsert is one Lua script
 * that replaces the scheduler's pending job by the one for the same tick,
 * and a tick's job id (`repeat:<scheduler>:<tick ms>`) is unique, so a tick
 * becomes one job however many processes upsert or consume.
 */
export async function syncSchedules(broker: Broker, schedules: readonly ResolvedSchedule[], queues: readonly string[], logger?: Logger): Promise<ScheduleSync> {
  const result: ScheduleSync = { upserted: [], unchanged: [], removed: [] };
  const declared = new Map<string, Set<string>>();
  for (const s of schedules) {
    const queue = broker.queue(s.task.queue);
    const want = desired(broker, s);
    const existing = await viaBroker(broker.redis, () => queue.getJobScheduler(s.schedulerId));
    // Identical and with its next tick's job present: upserting would only
    // churn that job (removed, re-added). Without the job (a worker died
    // between taking a tick and adding the next), the upsert repairs it.
    if (existing && sameScheduler(existing, want) && (await hasPendingTick(broker, s.task.queue, s.schedulerId, existing.next))) {
      result.unchanged.push(s.schedulerId);
    } else {
      await viaBroker(broker.redis, () => queue.upsertJobScheduler(s.schedulerId, want.repeat, want.template));
      result.upserted.push(s.schedulerId);
    }
    const ids = declared.get(s.task.queue) ?? new Set<string>();
    ids.add(s.schedulerId);
    declared.set(s.task.queue, ids);
  }
  for (const name of new Set([...queues, ...declared.keys()])) {
    const queue = broker.queue(name);
    const present = await viaBroker(broker.redis, () => queue.getJobSchedulers());
    for (const sch of present) {
      if (!sch.key.startsWith(SCHEDULER_PREFIX) || declared.get(name)?.has(sch.key)) continue;
      await viaBroker(broker.redis, () => queue.removeJobScheduler(sch.key));
      // BullMQ drops the pending tick only while it is delayed; one already
      // due (waiting) would still run once. A running one is left to finish.
      if (sch.next) await queue.remove(`repeat:${sch.key}:${sch.next}`).catch(() => 0);
      result.removed.push(sch.key);
    }
  }
  if (result.upserted.length > 0 || result.removed.length > 0) {
    logger?.info({ upserted: result.upserted, removed: result.removed, unchanged: result.unchanged.length }, 'job schedules updated');
  }
  return result;
}

async function hasPendingTick(broker: Broker, queue: string, schedulerId: string, next: number | undefined): Promise<boolean> {
  if (!next) return false;
  const key = broker.queue(queue).toKey(`repeat:${schedulerId}:${next}`);
  return (await viaBroker(broker.redis, () => broker.redis.exists(key))) === 1;
}

/** Whether the scheduler in Redis already runs the declared task, input, timing and job options. */
function sameScheduler(existing: JobSchedulerJson, want: Desired): boolean {
  const tmpl = existing.template;
  return (
    existing.name === want.template.name &&
    (existing.every ?? undefined) === want.repeat.every &&
    (existing.pattern ?? undefined) === want.repeat.pattern &&
    (existing.tz ?? undefined) === want.repeat.tz &&
    stableJson(tmpl?.data ?? null) === stableJson(want.template.data) &&
    stableJson(pick(tmpl?.opts ?? {})) === stableJson(pick(want.template.opts))
  );
}

function pick(opts: JobsOptions): unknown {
  return { attempts: opts.attempts, backoff: opts.backoff, removeOnComplete: opts.removeOnComplete, removeOnFail: opts.removeOnFail };
}

/**
 * Runs `app.startSchedules()` and, while Redis is unreachable, tries again
 * every `retryMs`: a worker starts (and waits for Redis) without its
 * schedules, and they catch up once it answers. Returns a function that stops
 * retrying.
 */
export function startSchedulesInBackground(app: { startSchedules(): Promise<ScheduleSync>; readonly logger: Logger }, retryMs = 10_000): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const attempt = () => {
    app.startSchedules().catch((err: unknown) => {
      if (stopped) return;
      app.logger.warn({ err }, `could not update the job schedules; trying again in ${retryMs / 1000} s`);
      timer = setTimeout(attempt, retryMs);
      timer.unref();
    });
  };
  attempt();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
