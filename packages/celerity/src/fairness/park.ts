import { Job, type JobsOptions } from 'bullmq';
import type { ChainableCommander } from 'ioredis';
import type { Broker } from '../broker/broker.ts';
import { fairKeys, NO_TENANT, PARK_DELAY_MS } from '../broker/fair-keys.ts';
import type { PreparedJob } from '../client/enqueue.ts';
import { fairCommands, type FairCommands } from './dispatcher.ts';

/** Where a parked job goes in the fair stage. */
export interface FairPlacement {
  tenant: string;
  /** 0 when the job has none. */
  priority: number;
  /** When a delayed job becomes due (ms), else 0. */
  due: number;
  /** The add's timestamp, which the park script checks against the job's hash. */
  timestamp: number;
}

/** Whether jobs of this queue go through the fair stage (`CELERITY_FAIR_QUEUES`). */
export function isFairQueue(broker: Broker, queue: string): boolean {
  return broker.config.fairQueues?.includes(queue) ?? false;
}

/**
 * The BullMQ options of a job on a fair queue: parked (delayed a year, so
 * BullMQ never starts it by itself; it reads `queued` like any delayed job
 * with no attempt) and without priority, which only orders its tenant's
 * backlog: BullMQ's prioritized set would reorder the window across tenants.
 */
export function parkedOptions(opts: JobsOptions, tenant: string | undefined): { opts: JobsOptions; fair: FairPlacement } {
  const timestamp = Date.now();
  const { priority, delay, ...rest } = opts;
  return {
    opts: { ...rest, delay: PARK_DELAY_MS, timestamp },
    fair: { tenant: tenant ?? NO_TENANT, priority: priority ?? 0, due: delay ? timestamp + delay : 0, timestamp },
  };
}

/** An ioredis MULTI as BullMQ's `Job.addJob` takes it: its scripts called by name. */
export function bullTransaction(multi: ChainableCommander): ChainableCommander {
  const transaction = Object.assign(multi, {
    runCommand(name: string, args: unknown[]) {
      (multi as unknown as Record<string, (args: unknown[]) => unknown>)[name]!(args);
      return transaction;
    },
  });
  return transaction;
}

/** Queues the park script of a job right after its add, on the same MULTI. */
export function queuePark(broker: Broker, multi: ChainableCommander, job: PreparedJob & { fair: FairPlacement }): void {
  const { prefix } = broker.config;
  const f = job.fair;
  void (multi as unknown as FairCommands).celerityFairPark(
    `${fairKeys.bullJobPrefix(prefix, job.queue)}${job.id}`,
    fairKeys.bullDelayed(prefix, job.queue),
    fairKeys.base(prefix, job.queue),
    job.id,
    f.tenant,
    f.priority,
    f.timestamp,
    f.due,
  );
}

/**
 * Adds jobs in one MULTI, each parked job followed by its park script, so a
 * job is in BullMQ and in its tenant's backlog, or in neither. Returns the
 * job ids BullMQ answered, and whether a job of a caller-chosen id existed
 * already (then BullMQ added nothing). BullMQ's add answers the id either
 * way, so the answer cannot tell: the `EXISTS` of a chosen id's hash goes
 * right before its add in the same MULTI, where no other client's add can
 * come in between. The single enqueue and `enqueueMany` use it for every job
 * of a fair queue or with a chosen id.
 */
export async function addWithPark(broker: Broker, jobs: readonly PreparedJob[]): Promise<{ id: string; existed: boolean }[]> {
  fairCommands(broker.redis);
  const queues = [...new Set(jobs.map((j) => j.queue))].map((q) => broker.queue(q));
  // BullMQ defines its scripts on the shared connection when a queue connects.
  await Promise.all(queues.map((q) => q.waitUntilReady()));
  const multi = broker.redis.multi();
  const transaction = bullTransaction(multi);
  const addIndexes: number[] = [];
  // A caller-chosen id may be taken: its EXISTS goes right before its add.
  const existsIndexes: (number | undefined)[] = [];
  let n = 0;
  for (const p of jobs) {
    const queue = broker.queue(p.queue);
    if (p.chosenId) {
      multi.exists(queue.toKey(p.id));
      existsIndexes.push(n++);
    } else existsIndexes.push(undefined);
    const job = new Job(queue, p.name, p.data, { ...queue.defaultJobOptions, ...p.opts, jobId: p.id }, p.id);
    // Queues the add script on the MULTI (synchronously; its promise settles with the MULTI).
    void job.addJob(transaction as unknown as Parameters<Job['addJob']>[0]).catch(() => {});
    addIndexes.push(n++);
    if (p.fair) {
      queuePark(broker, multi, p as PreparedJob & { fair: FairPlacement });
      n++;
    }
  }
  const replies = await multi.exec();
  if (!replies) throw new Error('enqueue: transaction discarded');
  for (const [err] of replies) if (err) throw err;
  return addIndexes.map((i, k) => {
    const added = replies[i]![1];
    if (typeof added === 'number' && added < 0) throw new Error(`enqueue: BullMQ's add script answered ${added}`);
    const at = existsIndexes[k];
    return { id: added === null || added === undefined ? jobs[k]!.id : String(added), existed: at !== undefined && replies[at]![1] === 1 };
  });
}
