import { stableJson } from '../stable-json.ts';
import { touchJobs } from '../process-load.ts';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { Job, type JobsOptions } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { inOneWrite, viaBroker } from '../broker/connection.ts';
import { keys } from '../broker/keys.ts';
import { IdempotencyConflictError, InvalidOptionsError } from '../errors.ts';
import type { TimeLimits } from '../worker/limits.ts';
import { newJobId } from '../ids.ts';
import { fairCommands } from '../fairness/dispatcher.ts';
import { addWithPark, bullTransaction, isFairQueue, parkedOptions, queuePark, type FairPlacement } from '../fairness/park.ts';
import { producerDispatcher } from '../fairness/stage.ts';
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
  /** Public id of the API key submitting the job (the API sets it); stored as the job's `key_id` and filterable. */
  keyId?: string;
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
    keyId: identifier.optional(),
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
  /** Set on a fair queue: the job is added parked and goes into its tenant's backlog (src/fairness). */
  fair?: FairPlacement;
  /**
   * The caller chose the id (`jobId`): a job of that id may exist, and then
   * BullMQ's add writes nothing and answers the same id, so whether the call
   * created the job must be asked of Redis (see {@link addWithPark}).
   */
  chosenId?: true;
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
    ...(opts.keyId ? { keyId: opts.keyId } : {}),
    ...(opts.timeLimits ? { limits: opts.timeLimits } : {}),
    ...(digest ? { digest } : {}),
    ...(opts.traceId ? { trace: opts.traceId } : {}),
  };
  const chosen = opts.jobId !== undefined ? ({ chosenId: true } as const) : {};
  if (isFairQueue(broker, queue)) {
    const parked = parkedOptions(jobOptions, opts.tenant);
    const fairData: JobEnvelope = opts.priority ? { ...data, priority: opts.priority } : data;
    return { id, name: route.name, queue, data: fairData, opts: parked.opts, idempotencyKey: opts.idempotencyKey, fair: parked.fair, ...chosen };
  }
  return { id, name: route.name, queue, data, opts: jobOptions, idempotencyKey: opts.idempotencyKey, ...chosen };
}

/**
 * Validates input and options, then adds the job to its BullMQ queue. Nothing
 * is written unless both are valid; a Redis failure throws
 * BrokerUnavailableError and leaves nothing behind (the add is one script).
 */
export async function enqueueJob(broker: Broker, route: TaskRoute, input: unknown, options: EnqueueOptions = {}): Promise<Enqueued> {
  const prepared = prepareJob(broker, route, input, options);
  const { id, queue } = prepared;
  touchJobs();
  // Each path below writes one command (or one MULTI); the adds issued
  // together (a burst resumed by one read of replies) leave in one socket
  // write (see writeTogether).
  const { redis } = broker;
  if (prepared.idempotencyKey) {
    const winner = await viaBroker(redis, () => inOneWrite(redis, () => addIdempotent(broker, prepared, prepared.idempotencyKey!)));
    broker.hintQueue(winner, queue);
    if (prepared.fair) producerDispatcher(broker, queue).trigger();
    return { id: winner, task: route.name, queue, created: winner === id };
  }
  // A fair queue's park script, or a chosen id's EXISTS, rides in one MULTI with the add.
  if (prepared.fair || prepared.chosenId) {
    const [added] = await viaBroker(redis, () => inOneWrite(redis, () => addWithPark(broker, [prepared])));
    broker.hintQueue(added!.id, queue);
    if (prepared.fair) producerDispatcher(broker, queue).trigger();
    return { id: added!.id, task: route.name, queue, created: !added!.existed };
  }
  // Our own ids are new: BullMQ's add needs no question beside it.
  const job = await viaBroker(redis, () => inOneWrite(redis, () => broker.queue(queue).add(prepared.name, prepared.data, prepared.opts)));
  broker.hintQueue(job.id!, queue);
  broker.addedSink?.(job);
  return { id: job.id!, task: route.name, queue, created: true };
}

/**
 * Before BullMQ's add, in the same MULTI: if the idempotency record exists
 * but BullMQ's deduplication key does not (BullMQ drops it when the job is
 * removed by hand or by a cancel, not when retention removes it), put the
 * deduplication key back, pointing at the recorded job, for what is left of
 * the record's TTL. BullMQ's add then deduplicates against it: the record,
 * not the job's life in Redis, decides for the whole TTL.
 * KEYS: record, deduplication key.
 */
const IDEM_BEFORE_ADD = `
local rec = redis.call('GET', KEYS[1])
if rec and redis.call('EXISTS', KEYS[2]) == 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('SET', KEYS[2], string.match(rec, '^(%S+)'), 'PX', ttl) end
end
return rec`;

/**
 * After BullMQ's add, in the same MULTI: if the add created our job (the
 * deduplication key holds its id), record `<job id> <digest>` under the
 * idempotency key with the same TTL; return the record as it now stands.
 * KEYS: record, deduplication key. ARGV: job id, record, TTL ms.
 */
const IDEM_AFTER_ADD = `
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return redis.call('GET', KEYS[1])`;

/**
 * Adds a job that carries an idempotency key; returns the id of the job the
 * key stands for (ours if this call created it). Throws
 * IdempotencyConflictError when the key was used with another task or input.
 *
 * BullMQ's deduplication (TTL mode) is the gate: its add script sets the key
 * to the first job's id, or answers with that id. The check of task and
 * input needs the first call's digest for as long as the key lives (24 h),
 * far longer than the job stays in Redis (CELERITY_RESULT_TTL, 1 h), so the
 * digest is kept beside the key, in a record of the same TTL
 * (`keys.idempotency`: `<job id> <digest>`). We MUST write that record in the
 * same MULTI as the add: written after it, a crash in between would leave a
 * key whose conflicts go unseen once the job is gone; written before it, a
 * failed add would leave a record of a job that never existed. The MULTI
 * runs the three scripts with nothing in between, so a concurrent call sees
 * either no key at all or the key with its record.
 */
async function addIdempotent(broker: Broker, prepared: PreparedJob, key: string): Promise<string> {
  const queue = broker.queue(prepared.queue);
  // BullMQ defines its scripts on the shared connection when the queue connects.
  await queue.waitUntilReady();
  const dedupId = (prepared.opts.deduplication as { id: string }).id;
  const dedupKey = `${queue.toKey('de')}:${dedupId}`;
  const recordKey = keys.idempotency(broker.config.prefix, key);
  const digest = prepared.data.digest!;
  const multi = broker.redis.multi();
  const transaction = bullTransaction(multi);
  multi.eval(IDEM_BEFORE_ADD, 2, recordKey, dedupKey);
  const job = new Job(queue, prepared.name, prepared.data, { ...queue.defaultJobOptions, ...prepared.opts, jobId: prepared.id }, prepared.id);
  // Queues the add script on the MULTI (synchronously; the promise settles with the MULTI itself).
  await job.addJob(transaction as unknown as Parameters<Job['addJob']>[0]);
  if (prepared.fair) {
    fairCommands(broker.redis);
    queuePark(broker, multi, prepared as PreparedJob & { fair: FairPlacement });
  }
  multi.eval(IDEM_AFTER_ADD, 2, recordKey, dedupKey, prepared.id, `${prepared.id} ${digest}`, broker.config.idempotencyTtl * 1000);
  const replies = await multi.exec();
  if (!replies) throw new Error('idempotent enqueue: transaction discarded');
  for (const [err] of replies) if (err) throw err;
  const added = replies[1]![1];
  if (typeof added === 'number' && added < 0) throw new Error(`idempotent enqueue: BullMQ's add script answered ${added}`);
  const winner = String(added);
  if (winner === prepared.id) return winner;
  const record = parseRecord(replies[prepared.fair ? 3 : 2]![1]);
  if (record && record.id === winner) {
    if (record.digest !== digest) throw new IdempotencyConflictError(key, winner);
    return winner;
  }
  // A key set before records existed (an earlier version): the first job
  // still in Redis is the only witness of its input.
  const earlier = await Job.fromId(queue, winner);
  if (earlier && (earlier.data as JobEnvelope).digest !== digest) throw new IdempotencyConflictError(key, winner);
  return winner;
}

function parseRecord(value: unknown): { id: string; digest: string } | undefined {
  if (typeof value !== 'string') return undefined;
  const [id, digest] = value.split(' ');
  return id && digest ? { id, digest } : undefined;
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
