import { createHash } from 'node:crypto';
import { stableJson } from '../stable-json.ts';
import type { JobSchedulerJson, JobsOptions, RepeatOptions } from 'bullmq';
import type { Logger } from 'pino';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { keys } from '../broker/keys.ts';
import { baseJobOptions } from '../client/enqueue.ts';
import type { JobEnvelope } from '../job-record.ts';
import { SCHEDULER_PREFIX, type ResolvedSchedule } from './schedule.ts';

/** What {@link syncSchedules} did, by scheduler id. */
export interface ScheduleSync {
  /** Created or changed. */
  upserted: string[];
  /** Already in Redis as declared: left untouched, so its next tick stays where it was. */
  unchanged: string[];
  /** Celerity schedulers declared by no app version seen within the grace period. */
  removed: string[];
  /** Celerity schedulers this app does not declare, kept because another version declared them lately. */
  kept: string[];
}

/**
 * How long a declaration protects the schedulers it names: a scheduler that
 * no declaration seen within this time names is removed. Running workers
 * refresh theirs every {@link DECLARATION_REFRESH_MS}.
 */
export const DECLARATION_GRACE_MS = 5 * 60_000;
export const DECLARATION_REFRESH_MS = 60_000;

export interface SyncOptions {
  /** Upsert the declared schedules (default); false only refreshes this app's declaration and removes what nobody declares. */
  upsert?: boolean;
  /** {@link DECLARATION_GRACE_MS} unless given (tests). */
  graceMs?: number;
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
 * removes the `celerity:` schedulers of `queues` that no app version
 * declares any more.
 *
 * Removal rule. During a rolling deploy two versions of an app run side by
 * side, each declaring its own schedules; a worker that removed whatever its
 * own app does not declare would remove the other version's (an old pod
 * restarting would delete the schedule the new version just added). So each
 * sync first records its declaration (the set of scheduler ids, one hash
 * field per distinct set, with the time), and a scheduler is removed only
 * when no declaration refreshed within `graceMs` names it. Running workers
 * refresh theirs every minute (`startSchedulesInBackground`), so a schedule
 * stays while any live version declares it, and goes at most about the grace
 * after the last worker declaring it stopped. This needs no worker registry
 * or ownership bookkeeping, and a sync that runs alone (an app with no
 * other version) behaves as before, only later. Ownership by creator was
 * not chosen: two versions of one app are the same creator.
 *
 * Safe to run from every worker at once: BullMQ's upsert is one Lua script
 * that replaces the scheduler's pending job by the one for the same tick,
 * and a tick's job id (`repeat:<scheduler>:<tick ms>`) is unique, so a tick
 * becomes one job however many processes upsert or consume.
 */
export async function syncSchedules(broker: Broker, schedules: readonly ResolvedSchedule[], queues: readonly string[], logger?: Logger, opts: SyncOptions = {}): Promise<ScheduleSync> {
  const result: ScheduleSync = { upserted: [], unchanged: [], removed: [], kept: [] };
  const declared = new Map<string, Set<string>>();
  for (const s of schedules) {
    const ids = declared.get(s.task.queue) ?? new Set<string>();
    ids.add(s.schedulerId);
    declared.set(s.task.queue, ids);
  }
  // Recorded before anything is upserted, so that another version's sync
  // running at the same time either sees it or ran before our upserts.
  const othersDeclare = await declare(broker, declared, opts.graceMs ?? DECLARATION_GRACE_MS);
  for (const s of opts.upsert === false ? [] : schedules) {
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
  }
  for (const name of new Set([...queues, ...declared.keys()])) {
    const queue = broker.queue(name);
    const present = await viaBroker(broker.redis, () => queue.getJobSchedulers());
    for (const sch of present) {
      if (!sch.key.startsWith(SCHEDULER_PREFIX) || declared.get(name)?.has(sch.key)) continue;
      if (othersDeclare(name, sch.key)) {
        result.kept.push(sch.key);
        continue;
      }
      await viaBroker(broker.redis, () => queue.removeJobScheduler(sch.key));
      // BullMQ drops the pending tick only while it is delayed; one already
      // due (waiting) would still run once. A running one is left to finish.
      if (sch.next) await queue.remove(`repeat:${sch.key}:${sch.next}`).catch(() => 0);
      result.removed.push(sch.key);
    }
  }
  if (result.upserted.length > 0 || result.removed.length > 0) {
    logger?.info({ upserted: result.upserted, removed: result.removed, kept: result.kept, unchanged: result.unchanged.length }, 'job schedules updated');
  }
  return result;
}

interface Declaration {
  at: number;
  /** [queue, scheduler id] pairs. */
  schedulers: [string, string][];
}

/**
 * Records this app's declaration (refreshing its time), drops the ones older
 * than `graceMs`, and returns whether a fresh declaration names a scheduler.
 * Times are Redis' clock (TIME), so the workers' clocks need not agree.
 */
async function declare(broker: Broker, declared: ReadonlyMap<string, Set<string>>, graceMs: number): Promise<(queue: string, schedulerId: string) => boolean> {
  const key = keys.scheduleDeclarations(broker.config.prefix);
  const schedulers = [...declared].flatMap(([queue, ids]) => [...ids].map((id) => [queue, id] as [string, string])).sort((a, b) => (a.join('\0') < b.join('\0') ? -1 : 1));
  const field = createHash('sha256').update(stableJson(schedulers)).digest('base64url').slice(0, 22);
  const [sec, micro] = await viaBroker(broker.redis, () => broker.redis.time());
  const now = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
  await viaBroker(broker.redis, () => broker.redis.hset(key, field, JSON.stringify({ at: now, schedulers } satisfies Declaration)));
  const all = await viaBroker(broker.redis, () => broker.redis.hgetall(key));
  const fresh = new Set<string>();
  const stale: string[] = [];
  for (const [f, raw] of Object.entries(all)) {
    let decl: Declaration | undefined;
    try {
      decl = JSON.parse(raw) as Declaration;
    } catch {
      decl = undefined;
    }
    if (!decl || now - decl.at > graceMs) {
      stale.push(f);
      continue;
    }
    for (const [queue, id] of decl.schedulers) fresh.add(`${queue}\0${id}`);
  }
  if (stale.length > 0) await viaBroker(broker.redis, () => broker.redis.hdel(key, ...stale));
  return (queue, schedulerId) => fresh.has(`${queue}\0${schedulerId}`);
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
 * schedules, and they catch up once it answers. Then, every `refreshMs`,
 * refreshes this app's declaration and removes the schedulers that no app
 * version declared lately (see {@link syncSchedules}); it does not upsert
 * again, so two versions that declare one schedule differently do not
 * overwrite each other in turn. Returns a function that stops both.
 */
export function startSchedulesInBackground(
  app: { startSchedules(): Promise<ScheduleSync>; readonly logger: Logger; readonly broker: Broker; readonly schedules: readonly ResolvedSchedule[]; queueNames(): string[] },
  retryMs = 10_000,
  refreshMs = DECLARATION_REFRESH_MS,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const later = (fn: () => void, ms: number) => {
    if (stopped) return;
    timer = setTimeout(fn, ms);
    timer.unref();
  };
  const refresh = () => {
    syncSchedules(app.broker, app.schedules, app.queueNames(), app.logger, { upsert: false })
      .catch((err: unknown) => app.logger.warn({ err }, 'could not refresh the job schedules'))
      .finally(() => later(refresh, refreshMs));
  };
  const attempt = () => {
    app.startSchedules().then(
      () => later(refresh, refreshMs),
      (err: unknown) => {
        if (stopped) return;
        app.logger.warn({ err }, `could not update the job schedules; trying again in ${retryMs / 1000} s`);
        later(attempt, retryMs);
      },
    );
  };
  attempt();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
