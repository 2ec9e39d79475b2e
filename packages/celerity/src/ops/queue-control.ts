import type { Job } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { keptOptions, keys, type CancelMarker } from '../broker/keys.ts';
import { positionAfterNow } from '../client/job-actions.ts';
import { CelerityError } from '../errors.ts';
import { recordFromJob, type JobRecord } from '../job-record.ts';
import type { JobStore } from '../store/job-store.ts';

/** The queue is not one of the app's (its tasks' and workflows' routing queues). */
export class UnknownQueueError extends CelerityError {
  readonly code = 'queue_not_found';
  override readonly httpStatus = 404;

  constructor(queue: string, known: string[]) {
    super(`No queue named "${queue}" in this app`, { queue, known });
  }
}

/** What the queue actions need of the app (the App class provides it). */
export interface QueueControlHost {
  readonly broker: Broker;
  openStore(): Promise<JobStore>;
  queueNames(): string[];
}

function knownQueue(host: QueueControlHost, name: string) {
  const known = host.queueNames();
  if (!known.includes(name)) throw new UnknownQueueError(name, known);
  return host.broker.queue(name);
}

/**
 * Pauses a queue (BullMQ's `Queue.pause`): workers finish what they run and
 * take nothing more; new jobs wait. The flag lives in Redis (the queue's
 * meta hash), so it holds for every worker, those started later included,
 * until {@link resumeQueue}.
 */
export async function pauseQueue(host: QueueControlHost, name: string): Promise<void> {
  const queue = knownQueue(host, name);
  await viaBroker(host.broker.redis, () => queue.pause());
}

/** Resumes a paused queue (BullMQ's `Queue.resume`); resuming a running queue is harmless. */
export async function resumeQueue(host: QueueControlHost, name: string): Promise<void> {
  const queue = knownQueue(host, name);
  await viaBroker(host.broker.redis, () => queue.resume());
}

/** Whether a queue is paused. */
export async function isQueuePaused(host: QueueControlHost, name: string): Promise<boolean> {
  const queue = knownQueue(host, name);
  return viaBroker(host.broker.redis, () => queue.isPaused());
}

/** The states BullMQ's drain empties (with `delayed`); a paused queue's jobs read as `waiting`. */
const DRAINED_STATES = ['waiting', 'delayed', 'prioritized'] as const;

/** Ids read per page while collecting what a drain will remove. */
const PAGE = 1_000;

/**
 * Removes every job of a queue that waits to run (waiting, paused, delayed,
 * prioritized; not running or finished ones, nor a schedule's next tick),
 * with BullMQ's `Queue.drain(true)`. Returns how many were removed.
 *
 * BullMQ's drain appends no event per job, so the recorder would never learn
 * of them and their rows would read `queued` for ever. So each drained job
 * ends as a cancelled one does: its record, `cancelled`, is kept in its
 * cancel marker (what status reads and the recorder use for a job Redis no
 * longer has) and written to the history at the stream position after the
 * drain, so that no older event can move it back to `queued`. A job that
 * started between the listing and the drain was not removed, and is left
 * alone.
 */
export async function drainQueue(host: QueueControlHost, name: string): Promise<{ removed: number }> {
  const queue = knownQueue(host, name);
  const { broker } = host;
  const { redis, config } = broker;
  const before = new Map<string, Job>();
  for (let start = 0; ; start += PAGE) {
    const jobs = await viaBroker(redis, () => queue.getJobs([...DRAINED_STATES], start, start + PAGE - 1, true));
    for (const job of jobs) if (job?.id) before.set(job.id, job);
    if (jobs.length < PAGE) break;
  }
  await viaBroker(redis, () => queue.drain(true));
  const ids = [...before.keys()];
  const still = ids.length === 0 ? [] : await viaBroker(redis, () => Promise.all(ids.map((id) => redis.exists(queue.toKey(id)))));
  const drained = ids.filter((_, i) => still[i] === 0).map((id) => before.get(id)!);
  if (drained.length === 0) return { removed: 0 };

  const now = Date.now();
  const records: JobRecord[] = [];
  for (const job of drained) records.push({ ...recordFromJob(job, name, 'cancelled'), finishedAt: now });
  const multi = redis.multi();
  for (const [i, record] of records.entries()) {
    const marker: CancelMarker = { requestedAt: now, record, kept: keptOptions(drained[i]!) };
    multi.set(keys.cancel(config.prefix, record.id), JSON.stringify(marker), 'EX', config.resultTtl);
  }
  await viaBroker(redis, () => multi.exec());
  const seq = await positionAfterNow(broker, name);
  const store = await host.openStore();
  await store.write(records.map((record) => ({ record, eventSeq: seq })));
  return { removed: drained.length };
}
