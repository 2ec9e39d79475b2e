import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { FAIR_PARTS, fairKeys, NO_TENANT } from '../broker/fair-keys.ts';
import { isFairQueue } from './park.ts';

/** Most finished jobs the view reads for waits and throughput. */
export const TENANT_SAMPLE = 1_000;
/** Most tenants the view lists (those with the largest backlogs first). */
export const MAX_TENANTS_SHOWN = 500;

/**
 * What the view reads, in one script so that it is one consistent moment
 * and sends back only tenants and numbers (not the jobs' inputs):
 * the fair stage's active tenants and their backlogs, the tenants of the
 * running jobs, and tenant, wait (processedOn − timestamp) and finish time of
 * the last `n` completed jobs.
 *
 * KEYS[1] BullMQ's `active` list, KEYS[2] BullMQ's `completed` sorted set.
 * ARGV[1] the stage's base, [2] BullMQ's job key prefix, [3] n, [4] most tenants.
 * Returns { {tenant, backlog}…, {tenant}…, {tenant, wait, finishedOn}… }, flat.
 */
export const TENANTS_LUA = `
local rcall = redis.call
local base, jobs = ARGV[1], ARGV[2]
local function tenantOf(data)
  if not data then return nil end
  local ok, env = pcall(cjson.decode, data)
  if not ok or type(env) ~= 'table' then return '' end
  local t = env['tenant']
  if type(t) ~= 'string' then return '' end
  return t
end
local backlogs = {}
local active = rcall('ZRANGE', base .. 'active', 0, tonumber(ARGV[4]) - 1)
for _, t in ipairs(active) do
  backlogs[#backlogs + 1] = t
  backlogs[#backlogs + 1] = rcall('ZCARD', base .. 'b:' .. t)
end
local running = {}
for _, id in ipairs(rcall('LRANGE', KEYS[1], 0, 9999)) do
  local t = tenantOf(rcall('HGET', jobs .. id, 'data'))
  if t then running[#running + 1] = t end
end
local recent = {}
for _, id in ipairs(rcall('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1)) do
  local f = rcall('HMGET', jobs .. id, 'data', 'timestamp', 'processedOn', 'finishedOn')
  local t = tenantOf(f[1])
  if t and f[2] and f[3] and f[4] then
    recent[#recent + 1] = t
    recent[#recent + 1] = tonumber(f[3]) - tonumber(f[2])
    recent[#recent + 1] = tonumber(f[4])
  end
end
return { backlogs, running, recent }`;

/** One tenant of a queue as `GET /v1/queues/:name/tenants` shows it. */
export interface TenantView {
  /** Null for the jobs without a tenant. */
  tenant: string | null;
  /** Jobs in its backlog in the fair stage, not yet runnable (0 on a queue that is not fair). */
  backlog: number;
  /** Its jobs running now. */
  running: number;
  /** 95th percentile of submit → start (ms) over its jobs among the last finished ones; null if none. */
  wait_p95_ms: number | null;
  /** Its jobs per minute among the last finished ones, over the time they span. */
  throughput_per_min: number;
  weight: number;
}

export interface TenantsView {
  queue: string;
  fair: boolean;
  /** How many finished jobs the waits and throughputs come from. */
  sampled: number;
  /** Ms between the oldest sampled finish and now. */
  sample_span_ms: number;
  /** True when more tenants have a backlog than the view lists. */
  truncated: boolean;
  tenants: TenantView[];
}

/**
 * The tenants of a queue: backlog, running jobs, wait p95 and throughput over
 * the last {@link TENANT_SAMPLE} completed jobs, weight. Read from Redis only.
 */
export async function tenantsView(broker: Broker, queue: string, now: number = Date.now()): Promise<TenantsView> {
  const { redis, config } = broker;
  const base = fairKeys.base(config.prefix, queue);
  const [raw, apiWeights, configWeights] = await viaBroker(redis, () =>
    Promise.all([
      redis.eval(
        TENANTS_LUA,
        2,
        fairKeys.bullActive(config.prefix, queue),
        fairKeys.bullCompleted(config.prefix, queue),
        base,
        fairKeys.bullJobPrefix(config.prefix, queue),
        TENANT_SAMPLE,
        MAX_TENANTS_SHOWN + 1,
      ) as Promise<[(string | number)[], string[], (string | number)[]]>,
      redis.hgetall(base + FAIR_PARTS.weightsApi),
      redis.hgetall(base + FAIR_PARTS.weightsConfig),
    ]),
  );
  const [backlogs, running, recent] = raw;
  const rows = new Map<string, { backlog: number; running: number; waits: number[] }>();
  const row = (t: string) => {
    let r = rows.get(t);
    if (!r) {
      r = { backlog: 0, running: 0, waits: [] };
      rows.set(t, r);
    }
    return r;
  };
  const truncated = backlogs.length / 2 > MAX_TENANTS_SHOWN;
  for (let i = 0; i < Math.min(backlogs.length, MAX_TENANTS_SHOWN * 2); i += 2) row(String(backlogs[i])).backlog = Number(backlogs[i + 1]);
  for (const t of running) row(t).running++;
  let oldest = now;
  for (let i = 0; i < recent.length; i += 3) {
    row(String(recent[i])).waits.push(Math.max(0, Number(recent[i + 1])));
    oldest = Math.min(oldest, Number(recent[i + 2]));
  }
  const span = Math.max(1, now - oldest);
  const tenants = [...rows.entries()].map(([t, r]): TenantView => {
    const waits = r.waits.sort((a, b) => a - b);
    return {
      tenant: t === NO_TENANT ? null : t,
      backlog: r.backlog,
      running: r.running,
      wait_p95_ms: waits.length > 0 ? waits[Math.min(waits.length, Math.ceil(0.95 * waits.length)) - 1]! : null,
      throughput_per_min: Math.round((waits.length * 60_000 * 100) / span) / 100,
      weight: Number(apiWeights[t] ?? configWeights[t] ?? 1),
    };
  });
  tenants.sort((a, b) => b.backlog - a.backlog || b.running - a.running || String(a.tenant).localeCompare(String(b.tenant)));
  return { queue, fair: isFairQueue(broker, queue), sampled: recent.length / 3, sample_span_ms: recent.length > 0 ? span : 0, truncated, tenants };
}
