/**
 * The raw counterpart of `celerity serve` in s3_http: Fastify and a BullMQ
 * Queue with nothing of Celerity's, answering
 *   POST /v1/jobs  {"task": "...", "input": {...}}  ->  202 {job_id, status, status_url}
 * with one `Queue.add` (removeOnComplete, as every raw BullMQ side of the
 * benchmark), and GET /healthz. The body has a JSON schema, as Celerity's
 * route has, and the answer the same body and Location header; there is no
 * authentication, rate limit, idempotency, input validation against a task,
 * tenant, trace id, security header or log line: what is left is the floor
 * that Fastify and BullMQ put under any API built on them, on this machine.
 *
 * Environment: BENCH_REDIS_URL, BENCH_PREFIX, BENCH_QUEUE, PORT. It sends
 * {type: 'ready'} over IPC once it listens, and exits on SIGTERM or when the
 * benchmark goes away.
 */
import { Queue } from 'bullmq';
import Fastify from 'fastify';
import { createRedis } from '../../packages/celerity/src/broker/connection.ts';

const url = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = required('BENCH_PREFIX');
const queueName = required('BENCH_QUEUE');
const port = Number(required('PORT'));

// The connection Celerity's API uses to add jobs (its producer connection).
const connection = createRedis({ brokerUrl: url, redisCluster: 'off' }, 'producer');
const queue = new Queue(queueName, { connection, prefix });
queue.on('error', (err) => console.error('raw api queue error', err));
await queue.waitUntilReady();

const server = Fastify({ logger: false });
const submitSchema = {
  body: {
    type: 'object',
    required: ['task'],
    additionalProperties: false,
    properties: { task: { type: 'string', minLength: 1, maxLength: 200 }, input: { type: 'object' } },
  },
} as const;

server.post<{ Body: { task: string; input?: Record<string, unknown> } }>('/v1/jobs', { schema: submitSchema }, async (request, reply) => {
  const job = await queue.add(request.body.task, request.body.input ?? {}, { removeOnComplete: true });
  const statusUrl = `/v1/jobs/${encodeURIComponent(job.id!)}`;
  return reply.status(202).header('location', statusUrl).send({ job_id: job.id, status: 'queued', status_url: statusUrl });
});
server.get('/healthz', async () => ({ status: 'ok' }));

await server.listen({ port, host: '127.0.0.1' });
send({ type: 'ready' });

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server.close().catch(() => {});
  await queue.close().catch(() => {});
  connection.disconnect();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('disconnect', () => void stop());

function send(msg: object): void {
  if (process.send && process.connected) process.send(msg);
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`raw-api: ${name} is required`);
    process.exit(2);
  }
  return value;
}
