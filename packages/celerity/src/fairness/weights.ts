import type { RedisClient } from '../broker/connection.ts';
import { fairKeys, FAIR_PARTS } from '../broker/fair-keys.ts';

/** Highest weight a tenant may have; weights are relative, so this only bounds mistakes. */
export const MAX_WEIGHT = 10_000;
/** Lowest weight: a tenant of weight 0.01 gets one job for every 100 of a tenant of weight 1. */
export const MIN_WEIGHT = 0.01;

/** A configured weight: `CELERITY_FAIR_WEIGHTS=<queue>:<tenant>=<weight>,…`. */
export interface ConfiguredWeight {
  queue: string;
  tenant: string;
  weight: number;
}

/**
 * Parses `CELERITY_FAIR_WEIGHTS`. Returns an error message for a bad entry.
 * The queue ends at the first `:` (queue names have none), the weight starts
 * after the last `=`, so a tenant may hold either (not a comma).
 */
export function parseWeights(text: string): ConfiguredWeight[] | string {
  const out: ConfiguredWeight[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    const colon = entry.indexOf(':');
    const eq = entry.lastIndexOf('=');
    const weight = Number(entry.slice(eq + 1));
    if (colon <= 0 || eq <= colon + 1 || !Number.isFinite(weight) || weight < MIN_WEIGHT || weight > MAX_WEIGHT) {
      return `each entry must be <queue>:<tenant>=<weight>, the weight between ${MIN_WEIGHT} and ${MAX_WEIGHT} (not one: ${JSON.stringify(entry)})`;
    }
    out.push({ queue: entry.slice(0, colon), tenant: entry.slice(colon + 1, eq), weight });
  }
  return out;
}

/**
 * Replaces the configured weights of a queue in Redis (the dispatch script
 * reads them there). Weights set through the API are kept apart and win.
 */
export async function applyConfiguredWeights(redis: RedisClient, prefix: string, queue: string, weights: readonly ConfiguredWeight[]): Promise<void> {
  const key = fairKeys.base(prefix, queue) + FAIR_PARTS.weightsConfig;
  const mine = weights.filter((w) => w.queue === queue);
  const multi = redis.multi().del(key);
  if (mine.length > 0) multi.hset(key, Object.fromEntries(mine.map((w) => [w.tenant, String(w.weight)])));
  await multi.exec();
}

/** A tenant's weight and where it comes from. */
export interface TenantWeight {
  weight: number;
  source: 'api' | 'config' | 'default';
}

/** Reads a tenant's weight as the dispatcher sees it. */
export async function readWeight(redis: RedisClient, prefix: string, queue: string, tenant: string): Promise<TenantWeight> {
  const base = fairKeys.base(prefix, queue);
  const [api, config] = await Promise.all([redis.hget(base + FAIR_PARTS.weightsApi, tenant), redis.hget(base + FAIR_PARTS.weightsConfig, tenant)]);
  if (api !== null) return { weight: Number(api), source: 'api' };
  if (config !== null) return { weight: Number(config), source: 'config' };
  return { weight: 1, source: 'default' };
}

/** Sets a tenant's weight through the API, or with null drops that override (back to the configured weight or 1). */
export async function setWeight(redis: RedisClient, prefix: string, queue: string, tenant: string, weight: number | null): Promise<TenantWeight> {
  const key = fairKeys.base(prefix, queue) + FAIR_PARTS.weightsApi;
  if (weight === null) await redis.hdel(key, tenant);
  else await redis.hset(key, tenant, String(weight));
  return readWeight(redis, prefix, queue, tenant);
}
