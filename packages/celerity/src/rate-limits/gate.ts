import type { Job } from 'bullmq';
import type { RedisClient } from '../broker/connection.ts';
import { bullmqInternals, keys } from '../broker/keys.ts';
import type { JobEnvelope } from '../job-record.ts';
import type { Task } from '../task.ts';
import { tenantCapOf, type ResolvedQueueLimits } from './options.ts';
import { GATE_SCRIPT, PAUSE_SCRIPT } from './scripts.ts';

/** Why a job waits: a rate limit's window is full, a limit is paused (`ctx.rateLimited`), or its tenant is at its cap. */
export type HoldReason = 'rate_limit' | 'rate_limit_pause' | 'tenant_cap';

/** A job held back by a limit: it waits `waitMs`, then is tried again. */
export interface Hold {
  waitMs: number;
  reason: HoldReason;
  /** The limit's label: `task:<name>`, `task:<name>#tenant=<t>` (or `#no-tenant`), `queue:<name>#tenant=<t>`. */
  key: string;
}

/** What a job must pass before it starts; built without Redis. */
export interface JobLimits {
  rates: { max: number; perMs: number; label: string }[];
  cap: { max: number; label: string } | undefined;
}

/** The label of a task's rate limit (per tenant or not). Task names hold no `#`, so the tenant part cannot be forged. */
export function rateLabel(task: string, perTenant: boolean, tenant: string | null): string {
  if (!perTenant) return `task:${task}`;
  return tenant === null ? `task:${task}#no-tenant` : `task:${task}#tenant=${tenant}`;
}

/** The label of a tenant's cap in a queue. */
export function capLabel(queue: string, tenant: string | null): string {
  return tenant === null ? `queue:${queue}#no-tenant` : `queue:${queue}#tenant=${tenant}`;
}

type GateRedis = RedisClient & {
  celerityLimitGate(numKeys: number, ...args: (string | number)[]): Promise<[number, number?, string?, string?]>;
  celerityLimitPause(numKeys: number, ...args: (string | number)[]): Promise<number>;
};

export interface LimitGateOptions {
  redis: RedisClient;
  prefix: string;
  queueLimits: ReadonlyMap<string, ResolvedQueueLimits>;
  /** Lease of a cap's slot: the lock duration, so a slot outlives its lock by at most that. */
  leaseMs: number;
  /** How long a job over its tenant's cap waits before it is tried again. */
  capRecheckMs: number;
}

/**
 * The gate every job passes before it starts: the task's rate limits and
 * its tenant's concurrency cap, counted in Redis for the whole cluster. A job
 * with none of them pays nothing ({@link LimitGate.limitsOf} is answered from
 * memory); any other pays one script per start, and one `ZREM` at its end
 * when capped.
 */
export class LimitGate {
  private readonly redis: GateRedis;
  private readonly opts: LimitGateOptions;

  constructor(opts: LimitGateOptions) {
    this.opts = opts;
    const redis = opts.redis as GateRedis;
    if (typeof redis.celerityLimitGate !== 'function') {
      redis.defineCommand('celerityLimitGate', { lua: GATE_SCRIPT });
      redis.defineCommand('celerityLimitPause', { lua: PAUSE_SCRIPT });
    }
    this.redis = redis;
  }

  /** The limits `job` must pass, or undefined when it has none (no Redis call). */
  limitsOf(queue: string, job: Job, task: Task | undefined): JobLimits | undefined {
    const queueLimits = this.opts.queueLimits.get(queue);
    const rate = task?.rateLimit;
    if (!rate && queueLimits?.tenantCap === undefined && !queueLimits?.tenantCaps.size) return undefined;
    const tenant = (job.data as JobEnvelope | undefined)?.tenant ?? null;
    const capMax = tenantCapOf(queueLimits, tenant);
    const rates = rate ? [{ max: rate.max, perMs: rate.perMs, label: rateLabel(task.name, rate.perTenant, tenant) }] : [];
    if (rates.length === 0 && capMax === undefined) return undefined;
    return { rates, cap: capMax === undefined ? undefined : { max: capMax, label: capLabel(queue, tenant) } };
  }

  /** Admits the job (its start counted, a slot of its cap taken), or returns why it must wait; a hold already undid BullMQ's count of its start. */
  async admit(queue: string, job: Job, limits: JobLimits): Promise<Hold | undefined> {
    const p = this.opts.prefix;
    const keyArgs = [keys.held(p), keys.heldReason(p, job.id!), bullmqInternals.jobKey(p, queue, job.id!), keys.tenantRunning(p, limits.cap?.label ?? '-')];
    const argv: (string | number)[] = [job.id!, limits.rates.length, limits.cap?.max ?? 0, this.opts.leaseMs, bullmqInternals.jobKey(p, queue, ''), this.opts.capRecheckMs, limits.cap?.label ?? ''];
    for (const r of limits.rates) {
      keyArgs.push(keys.rateWindow(p, r.label), keys.ratePause(p, r.label), keys.rateHeld(p, r.label));
      argv.push(r.max, r.perMs, r.label);
    }
    const [held, ms, reason, key] = await this.redis.celerityLimitGate(keyArgs.length, ...keyArgs, ...argv);
    if (held === 0) {
      // The script stamped the admission (Redis's clock) as the start: keep the in-memory job in step.
      job.processedOn = ms!;
      return undefined;
    }
    return { waitMs: ms!, reason: reason as HoldReason, key: key! };
  }

  /** Gives the job's slot of its tenant's cap back (its attempt ended, or it went back to wait). */
  async release(limits: JobLimits, jobId: string): Promise<void> {
    if (limits.cap) await this.redis.zrem(keys.tenantRunning(this.opts.prefix, limits.cap.label), jobId);
  }

  /**
   * `ctx.rateLimited(ms)`: pauses the task's rate limit (its tenant's, when
   * per tenant) for every worker, and holds this job back as long. A task
   * without a rate limit has no key to pause: only this job waits.
   */
  async pause(queue: string, job: Job, task: Task | undefined, ms: number): Promise<Hold> {
    const p = this.opts.prefix;
    const tenant = (job.data as JobEnvelope | undefined)?.tenant ?? null;
    const rate = task?.rateLimit;
    const label = rate ? rateLabel(job.name, rate.perTenant, tenant) : `task:${job.name}`;
    const waitMs = await this.redis.celerityLimitPause(
      4,
      keys.held(p),
      keys.heldReason(p, job.id!),
      bullmqInternals.jobKey(p, queue, job.id!),
      keys.ratePause(p, label),
      job.id!,
      ms,
      label,
      rate ? 1 : 0,
    );
    return { waitMs, reason: 'rate_limit_pause', key: label };
  }
}
