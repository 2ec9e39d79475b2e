// s7_peers' graphile-worker run, in a process of its own (see bench/scenarios/s7_peers.ts).
// Setup as graphile-worker's performance page advises
// (https://worker.graphile.org/docs/performance): a local queue of 500, job
// completions batched (completeJobBatchDelay 0), a pool one larger than the
// concurrency. Enqueue: addJob per job, inFlight at once, as the others are driven.
// graphile-worker deletes a job when it completes: it keeps no record of it,
// so its "drain" ends when the job table holds none of them.
// Env: BENCH_DATABASE_URL, PEER_SCHEMA, PEER_JOBS, PEER_CONCURRENCY, PEER_IN_FLIGHT.
import { makeWorkerUtils, run } from 'graphile-worker';

const env = process.env;
const jobs = Number(env.PEER_JOBS);
const concurrency = Number(env.PEER_CONCURRENCY);
const inFlight = Number(env.PEER_IN_FLIGHT);
const schema = env.PEER_SCHEMA;
const connectionString = env.BENCH_DATABASE_URL;
const noLog = () => () => {};
const { Logger } = await import('graphile-worker');
const logger = new Logger(noLog);

const utils = await makeWorkerUtils({ connectionString, schema, logger });
await utils.migrate();
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
      await utils.addJob('noop', {});
    }
  }),
);
const enqueueMs = performance.now() - t0;
const enqueueCpu = cpu() - c0;

let ran = 0;
const t1 = performance.now();
const c1 = cpu();
const runner = await run({
  connectionString,
  schema,
  logger,
  concurrency,
  maxPoolSize: concurrency + 1,
  noHandleSignals: true,
  pollInterval: 1000,
  preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  taskList: {
    noop: async () => {
      ran += 1;
    },
  },
});
// The table is read only once every job has run (as for Celerity and pg-boss:
// a count every 20 ms from the start took PostgreSQL CPU from the drain).
for (;;) {
  if (ran < jobs) {
    await new Promise((r) => setTimeout(r, 5));
    continue;
  }
  const { rows } = await utils.withPgClient((c) => c.query(`select count(*)::int as n from ${schema}._private_jobs`));
  if (rows[0].n === 0) break;
  await new Promise((r) => setTimeout(r, 20));
}
const drainMs = performance.now() - t1;
const drainCpu = cpu() - c1;
await runner.stop();
await utils.release();
process.stdout.write(`${JSON.stringify({ enqueue_ms: enqueueMs, drain_ms: drainMs, cpu_ms: { enqueue: enqueueCpu, drain: drainCpu } })}\n`);
process.exit(0);
