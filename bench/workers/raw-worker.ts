/**
 * The raw BullMQ side of the throughput scenarios: a plain BullMQ worker in
 * its own process, as `celerity worker` is for Celerity. It runs a no-op
 * processor and talks to the benchmark over IPC:
 *   -> {type: 'ready'}                       once the worker is connected
 *   <- {type: 'stats'}  -> {type: 'stats', completed, failed}
 *   <- {type: 'stop'}                        closes the worker and exits
 *
 * Environment: BENCH_REDIS_URL, BENCH_PREFIX, BENCH_QUEUE, BENCH_CONCURRENCY;
 * BENCH_REDIS_CLUSTER=on when BENCH_REDIS_URL lists a Redis Cluster's seed nodes.
 */
import { Worker } from 'bullmq';
import { createRedis } from '../../packages/celerity/src/broker/connection.ts';

const url = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = required('BENCH_PREFIX');
const queue = required('BENCH_QUEUE');
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? '50');

// The connection Celerity's workers use.
const connection = createRedis({ brokerUrl: url, redisCluster: process.env.BENCH_REDIS_CLUSTER === 'on' ? 'on' : 'off' }, 'worker');

let completed = 0;
let failed = 0;
const worker = new Worker(queue, async () => null, { connection, prefix, concurrency });
worker.on('completed', () => completed++);
worker.on('failed', () => failed++);
worker.on('error', (err) => console.error('raw worker error', err));

await worker.waitUntilReady();
send({ type: 'ready' });

process.on('message', (msg: { type?: string }) => {
  if (msg.type === 'stats') send({ type: 'stats', completed, failed });
  if (msg.type === 'stop') void stop();
});
process.on('SIGTERM', () => void stop());
process.on('disconnect', () => void stop());

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await worker.close().catch(() => {});
  connection.disconnect();
  process.exit(0);
}

function send(msg: object): void {
  if (process.send && process.connected) process.send(msg);
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`raw-worker: ${name} is required`);
    process.exit(2);
  }
  return value;
}
