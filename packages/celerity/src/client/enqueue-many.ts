import { touchJobs } from '../process-load.ts';
import type { FlowJob } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { BrokerUnavailableError, InvalidInputError, InvalidOptionsError } from '../errors.ts';
import { addWithPark } from '../fairness/park.ts';
import { producerDispatcher } from '../fairness/stage.ts';
import { prepareJob, type Enqueued, type EnqueueOptions, type PreparedJob, type TaskRoute } from './enqueue.ts';

/**
 * Most jobs one call may add. The MULTI runs as one block in Redis, which
 * answers no other client meanwhile; larger batches go in several calls
 * (each of them all or nothing).
 */
export const MAX_BULK_JOBS = 1_000;

/** One job of a bulk enqueue, its task already resolved. */
export interface BulkJob {
  route: TaskRoute;
  input: unknown;
  options?: EnqueueOptions | undefined;
}

/**
 * Validates every job, then adds them all in one round trip, all or nothing.
 *
 * How: FlowProducer.addBulk with one childless flow per job. BullMQ puts
 * every add script of the call in a single MULTI on the producer connection,
 * across queues: Redis runs all of them or, if the connection breaks before
 * EXEC, none. Queue.addBulk was the other candidate, but it is per queue
 * and, in BullMQ 6.7, sends its adds as a plain pipeline, which a broken
 * connection can cut half-way. Each job is built by `prepareJob`, as for
 * `enqueue`, so it is the same job either way.
 *
 * Idempotency keys are refused: the single path detects a reused key with
 * other input only after BullMQ's add answered, which in a batch would be
 * after the other jobs were written (not all or nothing any more).
 */
export async function enqueueMany(broker: Broker, jobs: readonly BulkJob[]): Promise<Enqueued[]> {
  if (jobs.length > MAX_BULK_JOBS) {
    throw new InvalidOptionsError([{ path: 'items', message: `at most ${MAX_BULK_JOBS} jobs per call (got ${jobs.length}); split the batch` }]);
  }
  if (jobs.length === 0) return [];
  const prepared: PreparedJob[] = [];
  const byId = new Map<string, number>();
  for (const [index, job] of jobs.entries()) {
    const p = prepareAt(broker, job, index);
    // A second add of the same id would be a silent no-op answering "added".
    const first = byId.get(p.id);
    if (first !== undefined) throw new InvalidOptionsError([{ path: `items.${index}.options.jobId`, message: `"${p.id}" is also the id of items.${first}` }]);
    byId.set(p.id, index);
    prepared.push(p);
  }
  touchJobs(prepared.length);
  // Any chosen id, or a fair queue: one MULTI built by hand, which can ask whether each chosen id was taken.
  if (prepared.some((p) => p.fair || p.chosenId)) return addFairBatch(broker, prepared);
  const flows: FlowJob[] = prepared.map((p) => ({ name: p.name, queueName: p.queue, data: p.data, opts: p.opts }));
  const nodes = await viaBroker(broker.redis, () => broker.flows.addBulk(flows));
  // addBulk answers nothing (and adds nothing) once its producer is closing.
  if (!nodes || nodes.length !== prepared.length) throw new BrokerUnavailableError(new Error('the broker is closing; nothing was enqueued'));
  return prepared.map((p, index) => {
    const { job } = nodes[index]!;
    const id = job.id ?? p.id;
    broker.hintQueue(id, p.queue);
    broker.addedSink?.(job);
    return { id, task: p.name, queue: p.queue, created: true };
  });
}

/**
 * A batch with jobs for fair queues or caller-chosen ids: the same one MULTI,
 * built by hand so that each parked job's park script follows its add, and
 * each chosen id's EXISTS comes right before it (src/fairness/park.ts).
 */
async function addFairBatch(broker: Broker, prepared: PreparedJob[]): Promise<Enqueued[]> {
  const added = await viaBroker(broker.redis, () => addWithPark(broker, prepared));
  for (const queue of new Set(prepared.filter((p) => p.fair).map((p) => p.queue))) producerDispatcher(broker, queue).trigger();
  return prepared.map((p, index) => {
    const { id, existed } = added[index]!;
    broker.hintQueue(id, p.queue);
    return { id, task: p.name, queue: p.queue, created: !existed };
  });
}

/** prepareJob for item `index`, with the paths of its issues under `items.<index>`. */
function prepareAt(broker: Broker, job: BulkJob, index: number): PreparedJob {
  const at = `items.${index}`;
  if (job.options?.idempotencyKey !== undefined) {
    throw new InvalidOptionsError([{ path: `${at}.options.idempotencyKey`, message: 'not supported by enqueueMany (it could not stay all or nothing); use enqueue, or a jobId' }]);
  }
  try {
    return prepareJob(broker, job.route, job.input, job.options);
  } catch (err) {
    if (err instanceof InvalidOptionsError) throw new InvalidOptionsError(err.details.issues.map((i) => ({ ...i, path: `${at}.${i.path}` })));
    if (err instanceof InvalidInputError) {
      throw new InvalidInputError(
        err.details.task,
        err.details.issues.map((i) => ({ ...i, path: i.path ? `${at}.input.${i.path}` : `${at}.input` })),
      );
    }
    throw err;
  }
}
