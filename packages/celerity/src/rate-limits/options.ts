import { TaskDefinitionError } from '../errors.ts';
import { MAX_TIME_LIMIT_MS } from '../limits.ts';

/**
 * A rate limit: at most `max` starts in any window of `per`, counted across
 * every worker of the cluster.
 *
 * @example rateLimit: { max: 50, per: '1m' }
 */
export interface RateLimit {
  /** Starts allowed in any window of `per`; a positive integer. */
  max: number;
  /** The window: ms, or a duration such as `'500ms'`, `'10s'`, `'1m'`, `'1h'`, `'1d'`. */
  per: number | string;
  /**
   * Count each tenant of the task apart (jobs without a tenant form a tenant
   * of their own): `{ max: 10, per: '1m', perTenant: true }` lets every
   * tenant start 10 jobs of the task a minute. Default false: one count for
   * the whole task.
   */
  perTenant?: boolean;
}

/** A {@link RateLimit} once checked: its window in ms. */
export interface ResolvedRateLimit {
  max: number;
  perMs: number;
  perTenant: boolean;
}

/**
 * Limits of one routing queue, given as `createApp({ queueLimits: { llm: … } })`.
 *
 * @example queueLimits: { llm: { rateLimit: { max: 100, per: '1s' }, tenantCap: 5, tenantCaps: { acme: 20 } } }
 */
export interface QueueLimits {
  /**
   * Starts of the whole queue in any window, across every worker: BullMQ's
   * own limiter (its `Worker` `limiter` option). `perTenant` is refused here:
   * give a task a per-tenant `rateLimit` instead.
   */
  rateLimit?: Omit<RateLimit, 'perTenant'>;
  /** Running jobs of one tenant in this queue, across every worker. Default: no cap. */
  tenantCap?: number;
  /** Caps of named tenants, over `tenantCap`. Jobs without a tenant are capped by `tenantCap` alone. */
  tenantCaps?: Record<string, number>;
}

/** {@link QueueLimits} once checked. */
export interface ResolvedQueueLimits {
  rateLimit: { max: number; perMs: number } | undefined;
  tenantCap: number | undefined;
  tenantCaps: ReadonlyMap<string, number>;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Ms of a duration given as ms or as `'<number><ms|s|m|h|d>'`; undefined when it is neither. */
export function durationMs(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(value.trim());
  if (!match) return undefined;
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  return Number.isInteger(ms) ? ms : undefined;
}

/** Checks a rate limit; `where` names its owner in the error. */
export function resolveRateLimit(where: string, limit: RateLimit | undefined, opts: { tenants: boolean } = { tenants: true }): ResolvedRateLimit | undefined {
  if (limit === undefined) return undefined;
  if (limit === null || typeof limit !== 'object') throw new TaskDefinitionError(`${where}: rateLimit must be { max, per }`);
  if (!Number.isInteger(limit.max) || limit.max < 1) throw new TaskDefinitionError(`${where}: rateLimit.max must be a positive integer`);
  const perMs = durationMs(limit.per);
  // The window is a delay BullMQ schedules: bounded like a time limit.
  if (perMs === undefined || perMs < 1 || perMs > MAX_TIME_LIMIT_MS) {
    throw new TaskDefinitionError(`${where}: rateLimit.per must be ms or a duration such as '10s' or '1m' (at most about 24.8 days), got ${JSON.stringify(limit.per)}`);
  }
  if (limit.perTenant !== undefined && typeof limit.perTenant !== 'boolean') throw new TaskDefinitionError(`${where}: rateLimit.perTenant must be a boolean`);
  if (limit.perTenant && !opts.tenants) throw new TaskDefinitionError(`${where}: rateLimit.perTenant is for tasks; a queue's limiter counts the whole queue`);
  return { max: limit.max, perMs, perTenant: limit.perTenant === true };
}

function cap(where: string, value: unknown): number {
  if (!Number.isInteger(value) || (value as number) < 1) throw new TaskDefinitionError(`${where} must be a positive integer, got ${JSON.stringify(value)}`);
  return value as number;
}

/** Checks `createApp({ queueLimits })`. */
export function resolveQueueLimits(given: Record<string, QueueLimits> | undefined): ReadonlyMap<string, ResolvedQueueLimits> {
  const out = new Map<string, ResolvedQueueLimits>();
  if (given === undefined) return out;
  if (given === null || typeof given !== 'object') throw new TaskDefinitionError('queueLimits must map queue names to { rateLimit?, tenantCap?, tenantCaps? }');
  for (const [queue, limits] of Object.entries(given)) {
    const where = `queueLimits.${queue}`;
    if (limits === null || typeof limits !== 'object') throw new TaskDefinitionError(`${where} must be { rateLimit?, tenantCap?, tenantCaps? }`);
    const rate = resolveRateLimit(where, limits.rateLimit as RateLimit | undefined, { tenants: false });
    const tenantCaps = new Map<string, number>();
    for (const [tenant, value] of Object.entries(limits.tenantCaps ?? {})) tenantCaps.set(tenant, cap(`${where}.tenantCaps.${tenant}`, value));
    out.set(queue, {
      rateLimit: rate && { max: rate.max, perMs: rate.perMs },
      tenantCap: limits.tenantCap === undefined ? undefined : cap(`${where}.tenantCap`, limits.tenantCap),
      tenantCaps,
    });
  }
  return out;
}

/** The cap of `tenant`'s running jobs in a queue; undefined when uncapped. */
export function tenantCapOf(limits: ResolvedQueueLimits | undefined, tenant: string | null): number | undefined {
  if (!limits) return undefined;
  return (tenant !== null ? limits.tenantCaps.get(tenant) : undefined) ?? limits.tenantCap;
}
