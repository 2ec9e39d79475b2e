/**
 * s1_throughput: enqueue N no-op jobs, then drain them with one worker
 * process at concurrency 50; Celerity (durable history on PostgreSQL, then on
 * SQLite) against raw BullMQ with `removeOnComplete: true`, measured the same
 * way (see lib/drains.ts). Raw BullMQ runs right before each Celerity run so
 * that each pair shares the machine's state. A third pair runs Celerity with
 * no history at all (`no_history`): the floor the recorded drains stand on.
 */
import { celerityCoreDrain, celerityDrain, rawDrain, warmUp, type DrainOptions } from '../lib/drains.ts';
import type { StoreKind } from '../lib/env.ts';
import { ratio, round } from '../lib/measure.ts';
import type { Row, Scenario } from '../lib/types.ts';

export const s1Throughput: Scenario = {
  name: 's1_throughput',
  title: 'enqueue and drain no-op jobs, 1 worker process at concurrency 50',
  async run(ctx) {
    const opts: DrainOptions = { jobs: ctx.quick ? 2_000 : 20_000, workers: 1, concurrency: 50, inFlight: 256 };
    await warmUp(ctx);
    const fields: Record<string, unknown> = {};
    const rows: Row[] = [];
    for (const store of ['postgres', 'sqlite'] as StoreKind[]) {
      ctx.log(`raw BullMQ, ${opts.jobs} jobs`);
      const raw = await rawDrain(ctx, opts);
      ctx.log(`Celerity (${store}), ${opts.jobs} jobs`);
      const cel = await celerityDrain(ctx, store, { ...opts, countWrites: true });
      fields[store] = {
        enqueue: {
          celerity_per_s: round(cel.enqueue_per_s),
          bullmq_per_s: round(raw.enqueue_per_s),
          ratio: round(ratio(cel.enqueue_per_s, raw.enqueue_per_s)),
        },
        drain: {
          celerity_per_s: round(cel.drain_per_s),
          recorded_per_s: round(cel.recorded_per_s),
          bullmq_per_s: round(raw.drain_per_s),
          ratio: round(ratio(cel.recorded_per_s, raw.drain_per_s)),
          ratio_redis_only: round(ratio(cel.drain_per_s, raw.drain_per_s)),
        },
        detail: {
          celerity: {
            enqueue_ms: round(cel.enqueue_ms),
            drain_ms: round(cel.drain_ms),
            recorded_ms: round(cel.recorded_ms),
            rows_at_resume: cel.rows_at_resume,
            cpu_ms: cel.cpu,
            cpu_ms_by_process: cel.cpu_by_process,
            sql_writes_per_job: cel.sql_writes_per_job,
          },
          bullmq: { enqueue_ms: round(raw.enqueue_ms), drain_ms: round(raw.drain_ms), cpu_ms: raw.cpu },
        },
      };
      rows.push(
        { metric: `${store}: enqueue`, unit: 'jobs/s', celerity: cel.enqueue_per_s, bullmq: raw.enqueue_per_s, ratio: ratio(cel.enqueue_per_s, raw.enqueue_per_s) },
        { metric: `${store}: drain, completed in Redis`, unit: 'jobs/s', celerity: cel.drain_per_s, bullmq: raw.drain_per_s, ratio: ratio(cel.drain_per_s, raw.drain_per_s) },
        { metric: `${store}: drain, recorded in SQL`, unit: 'jobs/s', celerity: cel.recorded_per_s, bullmq: raw.drain_per_s, ratio: ratio(cel.recorded_per_s, raw.drain_per_s) },
      );
    }
    ctx.log(`raw BullMQ, ${opts.jobs} jobs`);
    const raw = await rawDrain(ctx, opts);
    ctx.log(`Celerity with no history (no recorder anywhere), ${opts.jobs} jobs`);
    const core = await celerityCoreDrain(ctx, opts);
    fields.no_history = {
      enqueue: { celerity_per_s: round(core.enqueue_per_s), bullmq_per_s: round(raw.enqueue_per_s), ratio: round(ratio(core.enqueue_per_s, raw.enqueue_per_s)) },
      drain: { celerity_per_s: round(core.drain_per_s), bullmq_per_s: round(raw.drain_per_s), ratio: round(ratio(core.drain_per_s, raw.drain_per_s)) },
      detail: {
        celerity: { enqueue_ms: round(core.enqueue_ms), drain_ms: round(core.drain_ms), cpu_ms: core.cpu },
        bullmq: { enqueue_ms: round(raw.enqueue_ms), drain_ms: round(raw.drain_ms), cpu_ms: raw.cpu },
      },
    };
    rows.push(
      { metric: 'no history: enqueue', unit: 'jobs/s', celerity: core.enqueue_per_s, bullmq: raw.enqueue_per_s, ratio: ratio(core.enqueue_per_s, raw.enqueue_per_s) },
      { metric: 'no history: drain', unit: 'jobs/s', celerity: core.drain_per_s, bullmq: raw.drain_per_s, ratio: ratio(core.drain_per_s, raw.drain_per_s) },
    );
    return { fields, rows, params: { ...opts, stores: ['postgres', 'sqlite'], no_history: true } };
  },
};
