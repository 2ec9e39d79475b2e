// s7_peers' pg-boss run, in a process of its own (see bench/scenarios/s7_peers.ts).
// Setup as pg-boss's docs advise for throughput (docs/api/workers.md, pg-boss 12):
// - enqueue: send() per job, as Celerity and BullMQ are driven (inFlight at once);
// - "per job": work() with batchSize 1 and localConcurrency = the concurrency,
//   each worker fetching again at once while the backlog lasts (burstWhenReadyExceeds);
// - "batch": work() with batchSize 50 and burstWhenBatchFull (fetch again at once
//   while batches come back full), localConcurrency 4, the batch's jobs run together.
// Completed jobs stay in pg-boss's job table (state 'completed'): its durable record.
// Env: BENCH_DATABASE_URL, PEER_SCHEMA, PEER_JOBS, PEER_CONCURRENCY, PEER_IN_FLIGHT, PEER_MODE (job|batch).
import { PgBoss } from 'pg-boss';

const env = process.env;
const jobs = Number(env.PEER_JOBS);
const concurrency = Number(env.PEER_CONCURRENCY);
const inFlight = Number(env.PEER_IN_FLIGHT);
const mode = env.PEER_MODE;
const schema = env.PEER_SCHEMA;
const queue = 'bench-noop';

// Stats refreshed every second, so that burstWhenReadyExceeds sees the backlog within one (the defaults are 60 s).
const boss = new PgBoss({
  connectionString: env.BENCH_DATABASE_URL,
  schema,
  max: Math.max(10, Math.min(concurrency, 50)),
  superviseIntervalSeconds: 1,
  monitorIntervalSeconds: 1,
  queueCacheIntervalSeconds: 1,
});
boss.on('error', (err) => console.error('pg-boss error', err));
await boss.start();
await boss.createQueue(queue);

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
let next = 0;
const t0 = performance.now();
const c0 = cpu();
await Promise.all(
  Array.from({ length: inFlight }, async () => {
    while (next < jobs) {
      next++;
      await boss.send(queue, {});
    }
  }),
);
const enqueueMs = performance.now() - t0;
const enqueueCpu = cpu() - c0;

// The observer counts the handler's runs and reads the table only once all
// have run: a count(*) every 20 ms from the start took PostgreSQL CPU from
// the drain it measured (the record cannot be complete before the jobs ran).
let ran = 0;
const done = async () => {
  const { rows } = await boss.getDb().executeSql(`select count(*)::int as n from ${schema}.job where name = $1 and state = 'completed'`, [queue]);
  return rows[0].n;
};
const t1 = performance.now();
const c1 = cpu();
if (mode === 'batch') {
  await boss.work(queue, { batchSize: 50, burstWhenBatchFull: true, localConcurrency: 4, pollingIntervalSeconds: 0.5 }, async (batch) => {
    await Promise.all(batch.map(async () => null));
    ran += batch.length;
  });
} else {
  await boss.work(queue, { batchSize: 1, localConcurrency: concurrency, burstWhenReadyExceeds: 1, pollingIntervalSeconds: 0.5 }, async () => {
    ran += 1;
    return null;
  });
}
for (;;) {
  if (ran >= jobs && (await done()) >= jobs) break;
  await new Promise((r) => setTimeout(r, 20));
}
const drainMs = performance.now() - t1;
const drainCpu = cpu() - c1;
await boss.stop({ graceful: false, wait: false }).catch(() => {});
process.stdout.write(`${JSON.stringify({ enqueue_ms: enqueueMs, drain_ms: drainMs, cpu_ms: { enqueue: enqueueCpu, drain: drainCpu } })}\n`);
process.exit(0);
