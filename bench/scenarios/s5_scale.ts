/**
 * s5_scale: s1's drain with 1, 2 and 4 worker processes (each at concurrency
 * 50), Celerity with its history on PostgreSQL against raw BullMQ. Fields
 * as in s1: celerity_per_s (completed in Redis), recorded_per_s (completed
 * in SQL), bullmq_per_s, and ratio = recorded_per_s / bullmq_per_s. Each
 * worker count is a fresh run of lib/drains.ts: N jobs enqueued into the
 * paused queue, then drained from the resume.
 */
import { celerityDrain, rawDrain, warmUp, type DrainOptions } from '../lib/drains.ts';
import { ratio, round } from '../lib/measure.ts';
import type { Row, Scenario } from '../lib/types.ts';

const WORKER_COUNTS = [1, 2, 4];

export const s5Scale: Scenario = {
  name: 's5_scale',
  title: `drain with ${WORKER_COUNTS.join(', ')} worker processes (concurrency 50 each), PostgreSQL history`,
  async run(ctx) {
    const jobs = ctx.quick ? 2_000 : 20_000;
    await warmUp(ctx);
    const fields: Record<string, unknown> = {};
    const rows: Row[] = [];
    for (const workers of WORKER_COUNTS) {
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
    return { fields, rows, params: { jobs, worker_counts: WORKER_COUNTS, concurrency: 50, store: 'postgres' } };
  },
};
