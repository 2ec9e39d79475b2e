import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { viaBroker } from '../../broker/connection.ts';
import { COUNTED_STATES, queueStats, type QueueStats, type Throughput } from '../../ops/queue-stats.ts';
import { readSchedules, type ScheduleState } from '../../ops/schedules-view.ts';
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

/** A schedule as `GET /v1/schedules` shows it. */
export interface ScheduleView {
  id: string;
  task: string;
  queue: string;
  every_ms: number | null;
  cron: string | null;
  tz: string | null;
  next_run_at: string | null;
  iterations: number | null;
  last_run: { job_id: string; status: string; started_at: string | null; finished_at: string | null } | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A schedule's state as the API shows it (snake_case, ISO times). */
export function scheduleView(s: ScheduleState): ScheduleView {
  return {
    id: s.id,
    task: s.task,
    queue: s.queue,
    every_ms: s.every,
    cron: s.cron,
    tz: s.tz,
    next_run_at: iso(s.nextRunAt),
    iterations: s.iterations,
    last_run: s.lastRun && { job_id: s.lastRun.jobId, status: s.lastRun.status, started_at: iso(s.lastRun.startedAt), finished_at: iso(s.lastRun.finishedAt) },
  };
}

const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;

const schedulesResponse = {
  type: 'object',
  properties: {
    schedules: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string', description: 'The schedule id (`schedule(…, { id })`, by default derived from the task and its timing).' },
          task: { type: 'string' },
          queue: { type: 'string' },
          every_ms: { type: ['integer', 'null'] },
          cron: { type: ['string', 'null'] },
          tz: { type: ['string', 'null'] },
          next_run_at: { ...nullableTime, description: 'When the next tick is due.' },
          iterations: { type: ['integer', 'null'], description: 'Ticks made so far.' },
          last_run: {
            type: ['object', 'null'],
            description: 'The newest tick that started, from the history; null before the first.',
            properties: { job_id: { type: 'string' }, status: { type: 'string' }, started_at: nullableTime, finished_at: nullableTime },
            required: ['job_id', 'status', 'started_at', 'finished_at'],
          },
        },
        required: ['id', 'task', 'queue', 'every_ms', 'cron', 'tz', 'next_run_at', 'iterations', 'last_run'],
      },
    },
  },
  required: ['schedules'],
} as const;

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

/** `GET /v1/workers` (the worker registry), `GET /v1/queues` (counts, oldest waiting job, throughput) and `GET /v1/schedules`. */
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

  server.get(
    '/v1/schedules',
    {
      schema: {
        summary: "The schedules of the app's queues: timing, next tick and last run",
        description: "Read from BullMQ's job schedulers, so a schedule declared by another version of the app (during a rolling deploy) is listed too; the last run comes from the history.",
        tags: ['operations'],
        response: { 200: schedulesResponse, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'ops:read' } },
    },
    async () => ({ schedules: (await readSchedules(app.broker, await app.openStore(), app.queueNames())).map(scheduleView) }),
  );
}
