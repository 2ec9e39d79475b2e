import { stableJson } from '../stable-json.ts';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { Job, type JobsOptions } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { IdempotencyConflictError, InvalidOptionsError } from '../errors.ts';
import type { TimeLimits } from '../worker/limits.ts';
import { isValidJobId, newJobId } from '../ids.ts';
import type { JobEnvelope } from '../job-record.ts';
import { assertQueueName, DEFAULT_RETRIES, parseInput, zodIssues, type Task } from '../task.ts';

/** Per-call options of an enqueue. */
export interface EnqueueOptions {
  /** Milliseconds to wait before the job becomes runnable. */
  delay?: number;
  /** 1 is the highest priority, 2,097,152 the lowest; unset jobs run first-in first-out. */
  priority?: number;
  /** Your own id (letters, digits, `_.-`, not all digits). Enqueueing an id that exists returns that job. */
  jobId?: string;
  /** Tenant the job belongs to; stored and filterable. */
  tenant?: string;
  /** Only for `enqueueByName` of a task this process does not define: the queue to route to. */
  queue?: string;
  /** Time limits of this call's attempts (ms), over the task's. */
  timeLimits?: TimeLimits;
  /**
   * Enqueueing the same key again within `CELERITY_IDEMPOTENCY_TTL` returns
   * the first job instead of a new one; the same key with another task or
   * input throws IdempotencyConflictError.
   */
  idempotencyKey?: string;
  /** Correlation id for the job's log lines (the API passes the request's X-Request-Id). */
  traceId?: string;
}

export const enqueueOptionsSchema = z
  .object({
    delay: z
      .number()
      .int()
      .min(0)
      .max(365 * 24 * 3600 * 1000)
      .optional(),
    priority: z.number().int().min(1).max(2_097_152).optional(),
    jobId: z.string().refine(isValidJobId, 'must be 1-128 letters, digits, "_", "." or "-", and not all digits').optional(),
    tenant: z.string().min(1).max(200).optional(),
    queue: z.string().min(1).max(100).optional(),
    timeLimits: z
      .object({ soft: z.number().int().positive().optional(), hard: z.number().int().positive().optional() })
      .strict()
      .refine((l) => l.soft === undefined || l.hard === undefined || l.soft < l.hard, 'soft must be lower than hard')
      .optional(),
    idempotencyKey: z.string().min(1).max(200).optional(),
    traceId: z.string().min(1).max(200).optional(),
  })
  .strict();

export interface Enqueued {
  id: string;
  task: string;
  queue: string;
  /** False when an idempotency key (or an existing job id) returned an earlier job. */
  created: boolean;
}

/** What an enqueue needs to know of a task; a full {@link Task} or just a name and a queue. */
export type TaskRoute = Pick<Task, 'name' | 'queue' | 'retries'> & Partial<Pick<Task, 'inputSchema'>>;

/** A job validated and built for BullMQ, not yet written. */
export interface PreparedJob {
  id: string;
  /** The task name (BullMQ's job name). */
  name: string;
  queue: string;
  data: JobEnvelope;
  opts: JobsOptions;
  /** Set when the call carries an idempotency key. */
  idempotencyKey: string | undefined;
}

/**
 * Validates options and input and builds the BullMQ job; writes nothing.
 * Throws InvalidOptionsError (paths `options.…`) or InvalidInputError (paths
 * within the input). Shared by `enqueue` and `enqueueMany`, so a job is the
 * same whichever way it was added.
 */
export function prepareJob(broker: Broker, route: TaskRoute, input: unknown, options: EnqueueOptions = {}): PreparedJob {
  let opts: z.output<typeof enqueueOptionsSchema> = {};
  // Most calls pass no options: nothing to check (the schema costs more than the add's own work).
  if (hasOwnKeys(options)) {
    const parsedOptions = enqueueOptionsSchema.safeParse(options);
    if (!parsedOptions.success) {
      throw new InvalidOptionsError(zodIssues(parsedOptions.error).map((i) => ({ ...i, path: `options.${i.path}`.replace(/\.$/, '') })));
    }
    opts = parsedOptions.data;
  }
  // Validate, but store the input as given: the worker parses it again, so
  // defaults and transforms are applied once, with the worker's schema.
  if (route.inputSchema) parseInput(route as Task, input);
  const queue = route.queue;
  assertQueueName(queue);
  const id = opts.jobId ?? newJobId();
  const digest = opts.idempotencyKey ? inputDigest(route.name, input) : undefined;
  const jobOptions: JobsOptions = {
    jobId: id,
    ...baseJobOptions(broker, route),
    ...(opts.delay ? { delay: opts.delay } : {}),
    ...(opts.priority ? { priority: opts.priority } : {}),
    // BullMQ's deduplication in its TTL mode: the key holds the first job's
    // id for the TTL, whatever happens to the job, inside the add script.
    ...(opts.idempotencyKey ? { deduplication: { id: `idem:${opts.idempotencyKey}`, ttl: broker.config.idempotencyTtl * 1000 } } : {}),
  };
  const data: JobEnvelope = {
    input,
    ...(opts.tenant ? { tenant: opts.tenant } : {}),
    ...(opts.timeLimits ? { limits: opts.timeLimits } : {}),
    ...(digest ? { digest } : {}),
    ...(opts.traceId ? { trace: opts.traceId } : {}),
  };
  return { id, name: route.name, queue, data, opts: jobOptions, idempotencyKey: opts.idempotencyKey };
}

/**
 * Validates input and options, then adds the job to its BullMQ queue. Nothing
 * is written unless both are valid; a Redis failure throws
 * BrokerUnavailableError and leaves nothing behind (the add is one script).
 */
export async function enqueueJob(broker: Broker, route: TaskRoute, input: unknown, options: EnqueueOptions = {}): Promise<Enqueued> {
  const prepared = prepareJob(broker, route, input, options);
  const { id, queue } = prepared;
  const job = await viaBroker(broker.redis, () => broker.queue(queue).add(prepared.name, prepared.data, prepared.opts));
  // For a duplicate, BullMQ adds nothing and answers with the earlier job's id.
  const created = job.id === id;
  broker.hintQueue(job.id!, queue);
  const digest = prepared.data.digest;
  if (!created && digest) {
    const earlier = await viaBroker(broker.redis, () => Job.fromId(broker.queue(queue), job.id!));
    if (earlier && (earlier.data as JobEnvelope).digest !== digest) throw new IdempotencyConflictError(prepared.idempotencyKey!, job.id!);
  }
  return { id: job.id!, task: route.name, queue, created };
}

function hasOwnKeys(o: object | null | undefined): boolean {
  if (o === null || o === undefined) return false;
  if (typeof o !== 'object') return true; // not an object: let the schema say so
  for (const _ in o) return true;
  return false;
}

/** The options every Celerity job gets: its attempts, the task's backoff policy, result retention. */
export function baseJobOptions(broker: Broker, route: Pick<Task, 'retries'>): JobsOptions {
  const ttl = broker.config.resultTtl;
  return {
    attempts: (route.retries ?? DEFAULT_RETRIES) + 1,
    backoff: { type: 'celerity' },
    removeOnComplete: { age: ttl },
    removeOnFail: { age: ttl },
  };
}

/** Identifies a call by task and input, so that a reused idempotency key with other input is caught. */
export function inputDigest(task: string, input: unknown): string {
  return createHash('sha256').update(task).update('\0').update(stableJson(input)).digest('base64url');
}
