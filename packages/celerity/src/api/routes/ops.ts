import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { viaBroker } from '../../broker/connection.ts';
import { COUNTED_STATES, queueStats, type QueueStats, type Throughput } from '../../ops/queue-stats.ts';
import { readWorkers, type WorkerInfo } from '../../worker/registry.ts';

/** A worker as `GET /v1/workers` (and `celerity inspect workers --json`) shows it. */
export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  concurrency: number;
  active_jobs: { id: string; task: string; queue: string }[];
  started_at: string;
  last_beat_at: string;
  /** Ms since the last heartbeat, by this process' clock. */
  age_ms: number;
}

/** A queue as `GET /v1/queues` (and `celerity inspect queues --json`) shows it. */
export interface QueueView {
  name: string;
  counts: Record<string, number>;
  paused: boolean;
  oldest_waiting_age_ms: number | null;
  throughput: { completed: Throughput; failed: Throughput };
}

/** A registry entry as the API shows it; `now` gives its age. */
export function workerView(w: WorkerInfo, now: number): WorkerView {
  return {
    id: w.id,
    host: w.host,
    pid: w.pid,
    queues: w.queues,
    concurrency: w.concurrency,
    active_jobs: w.active,
    started_at: new Date(w.startedAt).toISOString(),
    last_beat_at: new Date(w.lastBeatAt).toISOString(),
    age_ms: Math.max(0, now - w.lastBeatAt),
  };
}

/** Queue stats as the API shows them (snake_case). */
export function queueView(q: QueueStats): QueueView {
  return { name: q.name, counts: q.counts, paused: q.paused, oldest_waiting_age_ms: q.oldestWaitingAgeMs, throughput: q.throughput };
}

const throughputSchema = {
  type: 'object',
  description: 'Jobs finished in the current clock minute (m1), and in it and the 4 (m5) or 14 (m15) minutes before it.',
  properties: { m1: { type: 'integer' }, m5: { type: 'integer' }, m15: { type: 'integer' } },
  required: ['m1', 'm5', 'm15'],
} as const;

const workersResponse = {
  type: 'object',
  properties: {
    workers: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string', description: '`<host>:<pid>:<random>`' },
          host: { type: 'string' },
          pid: { type: 'integer' },
          queues: { type: 'array', items: { type: 'string' } },
          concurrency: { type: 'integer', description: 'Jobs run at once, per queue.' },
          active_jobs: {
            type: 'array',
            items: { type: 'object', properties: { id: { type: 'string' }, task: { type: 'string' }, queue: { type: 'string' } }, required: ['id', 'task', 'queue'] },
          },
          started_at: { type: 'string', format: 'date-time' },
          last_beat_at: { type: 'string', format: 'date-time' },
          age_ms: { type: 'integer', description: 'Ms since the last heartbeat.' },
        },
        required: ['id', 'host', 'pid', 'queues', 'concurrency', 'active_jobs', 'started_at', 'last_beat_at', 'age_ms'],
      },
    },
  },
  required: ['workers'],
} as const;

const queuesResponse = {
  type: 'object',
  properties: {
    queues: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          counts: {
            type: 'object',
            properties: Object.fromEntries(COUNTED_STATES.map((s) => [s, { type: 'integer' }])),
            required: [...COUNTED_STATES],
          },
          paused: { type: 'boolean', description: 'Paused: its jobs wait (counted in `waiting`) until it is resumed.' },
          oldest_waiting_age_ms: { type: ['integer', 'null'], description: 'Ms since the oldest waiting job was enqueued (or its delay ended); null when none waits.' },
          throughput: {
            type: 'object',
            properties: { completed: throughputSchema, failed: throughputSchema },
            required: ['completed', 'failed'],
          },
        },
        required: ['name', 'counts', 'paused', 'oldest_waiting_age_ms', 'throughput'],
      },
    },
  },
  required: ['queues'],
} as const;

/** `GET /v1/workers` (the worker registry) and `GET /v1/queues` (counts, oldest waiting job, throughput). */
export async function opsRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.get(
    '/v1/workers',
    {
      schema: {
        summary: 'List the live workers, from their heartbeats',
        description: 'A worker that stops beating (killed, frozen) drops out within 3 × its heartbeat interval (`CELERITY_HEARTBEAT_INTERVAL`); one that stops gracefully, at once.',
        tags: ['operations'],
        response: { 200: workersResponse, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'ops:read' } },
    },
    async () => {
      const workers = await viaBroker(app.broker.redis, () => readWorkers(app.broker.redis, app.config.prefix));
      const now = Date.now();
      return { workers: workers.map((w) => workerView(w, now)) };
    },
  );

  server.get(
    '/v1/queues',
    {
      schema: {
        summary: "Counts per state, oldest waiting job and throughput of each of the app's queues",
        tags: ['operations'],
        response: { 200: queuesResponse, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'ops:read' } },
    },
    async () => ({ queues: (await queueStats(app.broker, app.queueNames())).map(queueView) }),
  );
}
