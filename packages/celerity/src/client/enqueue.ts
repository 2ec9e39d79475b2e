import { stableJson } from '../stable-json.ts';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { Job, type JobsOptions } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { IdempotencyConflictError, InvalidOptionsError } from '../errors.ts';
import type { TimeLimits } from '../worker/limits.ts';
import { newJobId } from '../ids.ts';
import { IDENTIFIER_RULE, isIdentifierText, isValidJobId, JOB_ID_RULE, MAX_DELAY_MS, MAX_NAME_LENGTH, MAX_PRIORITY, MAX_TIME_LIMIT_MS } from '../limits.ts';
import type { JobEnvelope } from '../job-record.ts';
import { assertQueueName, DEFAULT_RETRIES, parseInput, zodIssues, type Task } from '../task.ts';

/** Per-call options of an enqueue. */
export interface EnqueueOptions {
  /** Milliseconds to wait before the job becomes runnable. */
  delay?: number;
  /** 1 is the highest priority, 2,097,151 the lowest; unset jobs run first-in first-out. */
  priority?: number;
  /** Your own id (1-128 letters, digits, `_.-`, not an integer). Enqueueing an id that exists returns that job. */
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

// Identifiers are stored, filtered on and logged: no NUL (PostgreSQL text
// refuses it), no control characters, no lone surrogates.
const identifier = z.string().min(1).max(MAX_NAME_LENGTH).refine(isIdentifierText, IDENTIFIER_RULE);
const timeLimit = z.number().int().positive().max(MAX_TIME_LIMIT_MS);

export const enqueueOptionsSchema = z
  .object({
    delay: z.number().int().min(0).max(MAX_DELAY_MS).optional(),
    priority: z.number().int().min(1).max(MAX_PRIORITY).optional(),
    jobId: z.string().refine(isValidJobId, `must be ${JOB_ID_RULE}`).optional(),
    tenant: identifier.optional(),
    queue: z.string().min(1).max(100).optional(),
    timeLimits: z
      .object({ soft: timeLimit.optional(), hard: timeLimit.optional() })
      .strict()
      .refine((l) => l.soft === undefined || l.hard === undefined || l.soft < l.hard, 'soft must be lower than hard')
      .optional(),
    idempotencyKey: identifier.optional(),
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
  // The job carries what the schema let through (Zod's output: unknown
  // fields stripped, so a client's junk is neither stored nor handed on),
  // unless parsing changes types: the worker parses the input again, and a
  // transform or pipe applied twice would break. Then the input as given.
  if (route.inputSchema) {
    const parsed = parseInput(route as Task, input);
    if (parsesToItself(route.inputSchema)) input = parsed;
  }
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

const plainSchemas = new WeakMap<z.ZodType, boolean>();

/**
 * True when parsing the schema's output again gives the same value: the
 * schema's input and output JSON Schemas are the same but for what parsing
 * settles once (unknown fields dropped, defaults filled in, so `required`
 * and `additionalProperties` differ). A transform or a date cannot be
 * written as JSON Schema, and a pipe shows as another type: false. Computed
 * once per schema.
 */
function parsesToItself(schema: z.ZodType): boolean {
  let plain = plainSchemas.get(schema);
  if (plain === undefined) {
    const settled = (io: 'input' | 'output') =>
      JSON.stringify(z.toJSONSchema(schema, { io }), (key, value: unknown) => (key === 'required' || (key === 'additionalProperties' && value === false) ? undefined : value));
    try {
      plain = settled('input') === settled('output');
    } catch {
      plain = false;
    }
    plainSchemas.set(schema, plain);
  }
  return plain;
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
