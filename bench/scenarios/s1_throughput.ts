/**
 * s1_throughput: enqueue N no-op jobs, then drain them with one worker
 * process at concurrency 50; Celerity (durable history on PostgreSQL, then on
 * SQLite) against raw BullMQ with `removeOnComplete: true`, measured the same
 * way (see lib/drains.ts). Raw BullMQ runs right before each Celerity run so
 * that each pair shares the machine's state. A third pair runs Celerity with
 * no history at all (`no_history`): the floor the recorded drains stand on.
 */
import { celerityCoreDrain, celerityDrain, rawDrain, warmUp, type DrainOptions, type RawDrain } from '../lib/drains.ts';
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
        enqueue: rates(cel.enqueue_per_s, raw.enqueue_per_s),
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
          bullmq: timings(raw),
        },
      };
      rows.push(
        rateRow(`${store}: enqueue`, cel.enqueue_per_s, raw.enqueue_per_s),
        rateRow(`${store}: drain, completed in Redis`, cel.drain_per_s, raw.drain_per_s),
        rateRow(`${store}: drain, recorded in SQL`, cel.recorded_per_s, raw.drain_per_s),
      );
    }
    ctx.log(`raw BullMQ, ${opts.jobs} jobs`);
    const raw = await rawDrain(ctx, opts);
    ctx.log(`Celerity with no history (no recorder anywhere), ${opts.jobs} jobs`);
    const core = await celerityCoreDrain(ctx, opts);
    fields.no_history = {
      enqueue: rates(core.enqueue_per_s, raw.enqueue_per_s),
      drain: rates(core.drain_per_s, raw.drain_per_s),
      detail: { celerity: timings(core), bullmq: timings(raw) },
    };
    rows.push(rateRow('no history: enqueue', core.enqueue_per_s, raw.enqueue_per_s), rateRow('no history: drain', core.drain_per_s, raw.drain_per_s));
    return { fields, rows, params: { ...opts, stores: ['postgres', 'sqlite'], no_history: true } };
  },
};

/** A rate of Celerity's beside raw BullMQ's, as the fields give it. */
function rates(celerity: number, bullmq: number) {
  return { celerity_per_s: round(celerity), bullmq_per_s: round(bullmq), ratio: round(ratio(celerity, bullmq)) };
}

/** The same as a line of the printed table. */
function rateRow(metric: string, celerity: number, bullmq: number): Row {
  return { metric, unit: 'jobs/s', celerity, bullmq, ratio: ratio(celerity, bullmq) };
}

/** A drain's phases and their CPU, as `detail` gives them. */
function timings(run: RawDrain) {
  return { enqueue_ms: round(run.enqueue_ms), drain_ms: round(run.drain_ms), cpu_ms: run.cpu };
}
