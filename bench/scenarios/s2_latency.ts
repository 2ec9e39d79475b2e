/**
 * s2_latency: submit → start latency at a steady rate (500 jobs/s). Producer
 * and worker share one process, so both ends are read on the same clock
 * (performance.now()): the job's input carries its submit time, taken just
 * before the enqueue call, and the handler records start − submit.
 *
 * Celerity: app.enqueue + app.createWorker (concurrency 50), history on
 * PostgreSQL, twice: with the recorder running in the same process (as in
 * `celerity worker` by default), then with the recorder in a `celerity
 * recorder` process of its own (docs/deploy.md, "Where the history is
 * written"), which shares the machine but not the event loop. Raw BullMQ:
 * Queue.add (removeOnComplete) + a BullMQ Worker (concurrency 50). A
 * warm-up at the same rate precedes each measurement and is not counted.
 */
import { Queue, Worker as BullWorker } from 'bullmq';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { defineTask } from '../../packages/celerity/src/task.ts';
import { RECORDER_GROUP } from '../../packages/celerity/src/store/recorder.ts';
import { openApp, redisPrefix, storeEnv } from '../lib/env.ts';
import { GcWatch, type GcSummary } from '../lib/gc.ts';
import { now, percentile, pollUntil, ratio, round, sleep } from '../lib/measure.ts';
import { celerity } from '../lib/procs.ts';
import { withScope } from '../lib/scope.ts';
import type { Scenario, ScenarioContext } from '../lib/types.ts';

const RATE = 500;
const CONCURRENCY = 50;

interface Sample {
  submitted: number;
  latency: number;
}

interface Latency {
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  samples: number;
  /** The process's collections while the counted jobs ran. */
  gc: GcSummary;
}

/**
 * Submits `rate` jobs per second for `warmupMs + measureMs`: job i is due at
 * start + i / rate, and every job due is submitted without waiting for the
 * previous ones. Returns the time from which samples count.
 */
async function drive(rate: number, warmupMs: number, measureMs: number, submit: (t: number) => Promise<unknown>, errors: unknown[]): Promise<{ from: number; total: number }> {
  const total = Math.round((rate * (warmupMs + measureMs)) / 1000);
  const start = now();
  const from = start + warmupMs;
  let i = 0;
  while (i < total) {
    const due = Math.min(total, Math.floor(((now() - start) * rate) / 1000) + 1);
    while (i < due) {
      submit(now()).catch((err: unknown) => errors.push(err));
      i++;
    }
    await sleep(1);
  }
  return { from, total };
}

function summarise(samples: Sample[], from: number, gc: GcWatch): Latency {
  const counted = samples
    .filter((s) => s.submitted >= from)
    .map((s) => s.latency)
    .sort((a, b) => a - b);
  return { p50_ms: percentile(counted, 50), p99_ms: percentile(counted, 99), max_ms: counted[counted.length - 1] ?? NaN, samples: counted.length, gc: gc.summary(from, now()) };
}

/** Runs `fn` with a watch on the process's collections, stopped after. */
async function watchingGc<T>(fn: (gc: GcWatch) => Promise<T>): Promise<T> {
  const gc = new GcWatch();
  try {
    return await fn(gc);
  } finally {
    gc.stop();
  }
}

async function waitSamples(samples: Sample[], total: number, errors: unknown[]): Promise<void> {
  await pollUntil(
    async () => {
      if (errors.length > 0) throw errors[0];
      return samples.length >= total;
    },
    { intervalMs: 20, timeoutMs: 60_000, what: `${total} jobs started`, describe: async () => `${samples.length} started` },
  );
}

async function celerityLatency(ctx: ScenarioContext, warmupMs: number, measureMs: number, recorder: 'in-process' | 'own-process'): Promise<Latency> {
  return withScope(ctx.scope, async (scope) => {
    const samples: Sample[] = [];
    const task = defineTask({
      name: 'bench.latency',
      input: z.object({ t: z.number() }),
      handler: async ({ t }) => {
        samples.push({ submitted: t, latency: now() - t });
        return null;
      },
    });
    const env = storeEnv(ctx, scope, 'postgres');
    const app = await openApp(ctx, scope, env, [task]);
    if (recorder === 'in-process') {
      const inProcess = await app.startRecorder();
      scope.defer('stop recorder', () => inProcess.stop());
    } else {
      // The noop app's queue is this task's (`default`): the process records it.
      const proc = celerity(ctx, scope, 'celerity-recorder', 'recorder', env.childEnv());
      const events = app.broker.eventsKey(task.queue);
      await pollUntil(
        async () => {
          proc.assertRunning();
          const groups = (await app.broker.redis.xinfo('GROUPS', events).catch(() => [])) as unknown[][];
          return groups.some((g) => g[1] === RECORDER_GROUP);
        },
        { intervalMs: 50, timeoutMs: 60_000, what: 'the recorder process reading the stream' },
      );
    }
    const worker = app.createWorker({ concurrency: CONCURRENCY });
    worker.start();
    scope.defer('close worker', () => worker.close(5_000));
    await worker.ready();

    const errors: unknown[] = [];
    return watchingGc(async (gc) => {
      const { from, total } = await drive(RATE, warmupMs, measureMs, (t) => app.enqueue(task, { t }), errors);
      await waitSamples(samples, total, errors);
      return summarise(samples, from, gc);
    });
  });
}

async function bullmqLatency(ctx: ScenarioContext, warmupMs: number, measureMs: number): Promise<Latency> {
  return withScope(ctx.scope, async (scope) => {
    const prefix = redisPrefix(scope, ctx.redisUrl);
    const samples: Sample[] = [];
    const producer = new Redis(ctx.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
    producer.on('error', () => {});
    scope.defer('disconnect producer', () => producer.disconnect());
    const consumer = new Redis(ctx.redisUrl, { maxRetriesPerRequest: null });
    consumer.on('error', () => {});
    scope.defer('disconnect consumer', () => consumer.disconnect());
    const queue = new Queue('default', { connection: producer, prefix });
    queue.on('error', () => {});
    scope.defer('close queue', () => queue.close());
    await queue.waitUntilReady();
    const worker = new BullWorker(
      'default',
      async (job) => {
        const t = (job.data as { t: number }).t;
        samples.push({ submitted: t, latency: now() - t });
        return null;
      },
      { connection: consumer, prefix, concurrency: CONCURRENCY },
    );
    worker.on('error', () => {});
    scope.defer('close worker', () => worker.close(true));
    await worker.waitUntilReady();

    const errors: unknown[] = [];
    return watchingGc(async (gc) => {
      const { from, total } = await drive(RATE, warmupMs, measureMs, (t) => queue.add('bench.latency', { t }, { removeOnComplete: true }), errors);
      await waitSamples(samples, total, errors);
      return summarise(samples, from, gc);
    });
  });
}

export const s2Latency: Scenario = {
  name: 's2_latency',
  title: `submit → start latency at ${RATE} jobs/s, producer and worker in one process`,
  async run(ctx) {
    const warmupMs = ctx.quick ? 500 : 2_000;
    const measureMs = ctx.quick ? 2_000 : 10_000;
    ctx.log(`raw BullMQ, ${RATE} jobs/s for ${warmupMs} + ${measureMs} ms`);
    const bull = await bullmqLatency(ctx, warmupMs, measureMs);
    ctx.log(`Celerity (postgres), ${RATE} jobs/s for ${warmupMs} + ${measureMs} ms`);
    const cel = await celerityLatency(ctx, warmupMs, measureMs, 'in-process');
    ctx.log(`Celerity (postgres, a celerity recorder process), ${RATE} jobs/s for ${warmupMs} + ${measureMs} ms`);
    const apart = await celerityLatency(ctx, warmupMs, measureMs, 'own-process');
    const fields: Record<string, unknown> = {};
    const keys = ['p50_ms', 'p99_ms', 'max_ms'] as const;
    for (const k of keys) {
      fields[k] = { celerity: round(cel[k]), bullmq: round(bull[k]), ratio: round(ratio(cel[k], bull[k])) };
    }
    fields.recorder_process = Object.fromEntries(keys.map((k) => [k, { celerity: round(apart[k]), bullmq: round(bull[k]), ratio: round(ratio(apart[k], bull[k])) }]));
    fields.samples = { celerity: cel.samples, celerity_recorder_process: apart.samples, bullmq: bull.samples };
    const gcFields = (g: GcSummary) => ({ ...g, scavenge_avg_ms: round(g.scavenge_avg_ms), scavenge_max_ms: round(g.scavenge_max_ms), full_ms: round(g.full_ms) });
    fields.gc = { celerity: gcFields(cel.gc), celerity_recorder_process: gcFields(apart.gc), bullmq: gcFields(bull.gc) };
    const row = (label: string, latency: Latency, k: (typeof keys)[number]) => ({
      metric: `submit→start ${k.replace('_ms', '')}${label}`,
      unit: 'ms',
      celerity: latency[k],
      bullmq: bull[k],
      ratio: ratio(latency[k], bull[k]),
    });
    // The process's young-generation pauses: each holds up every job waiting in it.
    const gcRow = (label: string, latency: Latency) => ({
      metric: `young-generation GC pause, average${label}`,
      unit: 'ms',
      celerity: latency.gc.scavenge_avg_ms,
      bullmq: bull.gc.scavenge_avg_ms,
      ratio: ratio(latency.gc.scavenge_avg_ms, bull.gc.scavenge_avg_ms),
    });
    return {
      fields,
      params: { rate_per_s: RATE, warmup_ms: warmupMs, measure_ms: measureMs, concurrency: CONCURRENCY, store: 'postgres' },
      rows: [
        ...keys.map((k) => row('', cel, k)),
        ...keys.map((k) => row(', recorder process', apart, k)),
        // A run too short to scavenge (quick mode) has no pause to compare.
        ...(bull.gc.scavenges > 0 && cel.gc.scavenges > 0 ? [gcRow('', cel)] : []),
        ...(bull.gc.scavenges > 0 && apart.gc.scavenges > 0 ? [gcRow(', recorder process', apart)] : []),
      ],
    };
  },
};
