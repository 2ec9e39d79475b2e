/**
 * s5_scale: s1's drain with 1, 2 and 4 worker processes (each at concurrency
 * 50), Celerity with its history on PostgreSQL against raw BullMQ. Fields
 * as in s1: celerity_per_s (completed in Redis), recorded_per_s (completed
 * in SQL), bullmq_per_s, and ratio = recorded_per_s / bullmq_per_s. Each
 * worker count is a fresh run of lib/drains.ts: N jobs enqueued into the
 * paused queue, then drained from the resume.
 *
 * On a Redis Cluster: `BENCH_REDIS_CLUSTER=host:port,host:port,...` (seed
 * nodes; `redis://` URLs are taken too) runs both sides against that cluster
 * instead of BENCH_REDIS_URL, for example
 * `BENCH_REDIS_CLUSTER=127.0.0.1:7001 npm run bench -- --scenario s5_scale`.
 * Celerity runs with CELERITY_REDIS_CLUSTER=on and raw BullMQ on an ioredis
 * Cluster, each under a hash-tagged prefix (`{bench<random>}`), so each run's
 * keys sit in one slot, on one master: the numbers are those of one node
 * reached through cluster routing, not of the cluster's masters together
 * (docs/deploy.md, "Redis Cluster"). The bench does not start a cluster;
 * Redis CPU (`cpu.redis_ms`) is then the sum over the masters.
 */
import { celerityDrain, rawDrain, warmUp, type DrainOptions } from '../lib/drains.ts';
import { ratio, round } from '../lib/measure.ts';
import type { Row, Scenario } from '../lib/types.ts';

const WORKER_COUNTS = [1, 2, 4];
/** --quick checks that the scenario runs, not how it scales: four processes cost the test suite ~10 s. */
const QUICK_WORKER_COUNTS = [1, 2];

export const s5Scale: Scenario = {
  name: 's5_scale',
  title: `drain with ${WORKER_COUNTS.join(', ')} worker processes (concurrency 50 each), PostgreSQL history`,
  async run(given) {
    const cluster = clusterSeeds(process.env.BENCH_REDIS_CLUSTER);
    const ctx = cluster ? { ...given, redisUrl: cluster, redisCluster: true } : given;
    if (cluster) ctx.log(`on the Redis Cluster at ${cluster}`);
    const jobs = ctx.quick ? 2_000 : 20_000;
    await warmUp(ctx);
    const fields: Record<string, unknown> = {};
    const rows: Row[] = [];
    const counts = ctx.quick ? QUICK_WORKER_COUNTS : WORKER_COUNTS;
    for (const workers of counts) {
      const opts: DrainOptions = { jobs, workers, concurrency: 50, inFlight: 256 };
      ctx.log(`raw BullMQ, ${workers} worker(s), ${jobs} jobs`);
      const raw = await rawDrain(ctx, opts);
      ctx.log(`Celerity (postgres), ${workers} worker(s), ${jobs} jobs`);
      const cel = await celerityDrain(ctx, 'postgres', opts);
      fields[`workers_${workers}`] = {
        celerity_per_s: round(cel.drain_per_s),
        recorded_per_s: round(cel.recorded_per_s),
        bullmq_per_s: round(raw.drain_per_s),
        ratio: round(ratio(cel.recorded_per_s, raw.drain_per_s)),
        detail: { celerity_drain_cpu_ms: cel.cpu.drain, bullmq_drain_cpu_ms: raw.cpu.drain },
      };
      rows.push({
        metric: `drain, ${workers} worker${workers > 1 ? 's' : ''}, completed in Redis`,
        unit: 'jobs/s',
        celerity: cel.drain_per_s,
        bullmq: raw.drain_per_s,
        ratio: ratio(cel.drain_per_s, raw.drain_per_s),
      });
      rows.push({
        metric: `drain, ${workers} worker${workers > 1 ? 's' : ''}, recorded in SQL`,
        unit: 'jobs/s',
        celerity: cel.recorded_per_s,
        bullmq: raw.drain_per_s,
        ratio: ratio(cel.recorded_per_s, raw.drain_per_s),
      });
    }
    return { fields, rows, params: { jobs, worker_counts: counts, concurrency: 50, store: 'postgres', redis: cluster ? 'cluster' : 'server' } };
  },
};

/** `host:port,...` (or `redis://` URLs) as the broker URL list Celerity takes; undefined when unset. */
function clusterSeeds(value: string | undefined): string | undefined {
  if (!value?.trim()) return undefined;
  return value
    .split(',')
    .map((seed) => seed.trim())
    .filter(Boolean)
    .map((seed) => (/^rediss?:\/\//.test(seed) ? seed : `redis://${seed}`))
    .join(',');
}
