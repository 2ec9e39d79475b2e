/**
 * worker_gc (opt-in): the garbage collections of one worker process while
 * it drains no-op jobs at concurrency 50, `celerity worker` with no history
 * (no recorder anywhere, as s1's `no_history` pair) beside raw BullMQ's
 * worker, each traced by V8 (`--trace-gc-nvp`, lib/worker-gc.ts) over the
 * drain's second half: the scavenges, their average pause and what each
 * promoted to the old generation. A job whose objects stay reachable after
 * it ends shows as promotion (docs/benchmarks.md, run 32). The trace costs
 * the worker a little, so the drain rates here are not s1's.
 */
import { celerityCoreDrain, rawDrain, warmUp, type DrainOptions } from '../lib/drains.ts';
import { ratio, round } from '../lib/measure.ts';
import type { Row, Scenario } from '../lib/types.ts';
import type { WorkerGc } from '../lib/worker-gc.ts';

export const workerGcScenario: Scenario = {
  name: 'worker_gc',
  title: "a worker process's collections during a drain (V8's trace), Celerity with no history beside raw BullMQ",
  optIn: true,
  async run(ctx) {
    const opts: DrainOptions = { jobs: ctx.quick ? 2_000 : 20_000, workers: 1, concurrency: 50, inFlight: 256, traceWorkerGc: true };
    await warmUp(ctx);
    ctx.log(`raw BullMQ, ${opts.jobs} jobs, GC traced`);
    const raw = await rawDrain(ctx, opts);
    ctx.log(`Celerity with no history, ${opts.jobs} jobs, GC traced`);
    const cel = await celerityCoreDrain(ctx, opts);
    const gc = (run: { worker_gc?: WorkerGc }) => {
      const g = run.worker_gc!;
      return { scavenges: g.scavenges, scavenge_avg_ms: round(g.scavenge_avg_ms), promoted_kb_per_scavenge: round(g.promoted_kb_per_scavenge), full: g.full };
    };
    const rows: Row[] = [
      row('drain (GC traced)', 'jobs/s', cel.drain_per_s, raw.drain_per_s),
      row('worker scavenges', 'count', cel.worker_gc!.scavenges, raw.worker_gc!.scavenges),
      row('worker scavenge pause, average', 'ms', cel.worker_gc!.scavenge_avg_ms, raw.worker_gc!.scavenge_avg_ms),
      row('worker promoted per scavenge', 'KB', cel.worker_gc!.promoted_kb_per_scavenge, raw.worker_gc!.promoted_kb_per_scavenge),
      row('worker full collections', 'count', cel.worker_gc!.full, raw.worker_gc!.full),
    ];
    return {
      fields: {
        celerity: { drain_per_s: round(cel.drain_per_s), gc: gc(cel) },
        bullmq: { drain_per_s: round(raw.drain_per_s), gc: gc(raw) },
      },
      rows,
      params: { ...opts, history: 'none' },
    };
  },
};

function row(metric: string, unit: string, celerity: number, bullmq: number): Row {
  return { metric, unit, celerity, bullmq, ratio: ratio(celerity, bullmq) };
}
