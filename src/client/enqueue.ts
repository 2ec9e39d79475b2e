import { z } from 'zod';
import type { JobsOptions } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { InvalidOptionsError } from '../errors.ts';
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
}

export const enqueueOptionsSchema = z
  .object({
    delay: z.number().int().min(0).max(365 * 24 * 3600 * 1000).optional(),
    priority: z.number().int().min(1).max(2_097_152).optional(),
    jobId: z.string().refine(isValidJobId, 'must be 1-128 letters, digits, "_", "." or "-", and not all digits').optional(),
    tenant: z.string().min(1).max(200).optional(),
    queue: z.string().min(1).max(100).optional(),
  })
  .strict();

export interface Enqueued {
  id: string;
  task: string;
  queue: string;
}

/** What an enqueue needs to know of a task; a full {@link Task} or just a name and a queue. */
export type TaskRoute = Pick<Task, 'name' | 'queue' | 'retries'> & Partial<Pick<Task, 'inputSchema'>>;

/**
 * Validates input and options, then adds the job to its BullMQ queue. Nothing
 * is written unless both are valid; a Redis failure throws
 * BrokerUnavailableError and leaves nothing behind (the add is one script).
 */
export async function enqueueJob(broker: Broker, route: TaskRoute, input: unknown, options: EnqueueOptions = {}): Promise<Enqueued> {
  const parsedOptions = enqueueOptionsSchema.safeParse(options);
  if (!parsedOptions.success) {
    throw new InvalidOptionsError(zodIssues(parsedOptions.error).map((i) => ({ ...i, path: `options.${i.path}`.replace(/\.$/, '') })));
  }
  const opts = parsedOptions.data;
  // Validate, but store the input as given: the worker parses it again, so
  // defaults and transforms are applied once, with the worker's schema.
  if (route.inputSchema) parseInput(route as Task, input);
  const queue = route.queue;
  assertQueueName(queue);
  const id = opts.jobId ?? newJobId();
  const ttl = broker.config.resultTtl;
  const jobOptions: JobsOptions = {
    jobId: id,
    attempts: (route.retries ?? DEFAULT_RETRIES) + 1,
    backoff: { type: 'celerity' },
    removeOnComplete: { age: ttl },
    removeOnFail: { age: ttl },
    ...(opts.delay ? { delay: opts.delay } : {}),
    ...(opts.priority ? { priority: opts.priority } : {}),
  };
  const data: JobEnvelope = { input, ...(opts.tenant ? { tenant: opts.tenant } : {}) };
  await viaBroker(broker.redis, () => broker.queue(queue).add(route.name, data, jobOptions));
  return { id, task: route.name, queue };
}
