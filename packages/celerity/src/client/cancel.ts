import { Job } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { keptOptions, keys, type CancelMarker } from '../broker/keys.ts';
import { JobFinishedError, JobNotFoundError } from '../errors.ts';
import { attemptHistory, recordFromJob, statusFromState, TERMINAL_STATUSES, type JobRecord } from '../job-record.ts';
import type { JobStore } from '../store/job-store.ts';
import { releaseUpload, uploadIdOf } from '../uploads/store.ts';

export type CancelOutcome = 'cancelled' | 'cancelling';

/**
 * Cancels a job from any process.
 *
 * 1. The cancel marker is written first (with the result TTL), so that a
 *    worker that picks the job up from now on, or polls its running jobs,
 *    finds it.
 * 2. A job still waiting or delayed is removed from its queue by BullMQ
 *    (which refuses if a worker has just locked it). The marker then also
 *    holds the job's final record, which status reads and the recorder use
 *    since the job hash is gone: `cancelled` at once.
 * 3. Otherwise the job is running: the cancellation is published to every
 *    worker, and the one holding the job aborts its signal (and ends the
 *    attempt after the grace period). The job then fails as `JobCancelled`,
 *    never retried, which reads as `cancelled`.
 * Cancelling a cancelled job answers `cancelled` again; a completed or failed
 * one is refused (409).
 */
export async function cancelJob(broker: Broker, store: JobStore, queues: readonly string[], id: string): Promise<CancelOutcome> {
  const { redis, config } = broker;
  const found = await viaBroker(redis, () => Promise.all(queues.map((q) => Job.fromId(broker.queue(q), id))));
  const index = found.findIndex(Boolean);
  if (index < 0) return cancelGone(broker, store, id);
  const job = found[index]!;
  const queue = queues[index]!;
  const state = await viaBroker(redis, () => job.getState());
  const status = statusFromState(state, job.attemptsMade);
  if (status && TERMINAL_STATUSES.has(status)) {
    const record = recordFromJob(job, queue, status);
    if (record.status === 'cancelled') return 'cancelled';
    throw new JobFinishedError(id, record.status);
  }
  const markerKey = keys.cancel(config.prefix, id);
  const ttl = config.resultTtl;
  const marker: CancelMarker = { requestedAt: Date.now() };
  const queued = status === 'queued' || status === 'retrying';
  let record: JobRecord | undefined;
  if (queued) {
    record = { ...recordFromJob(job, queue, 'cancelled'), finishedAt: marker.requestedAt };
    const logs = await viaBroker(redis, () => broker.jobLogs(queue, id));
    record.attemptHistory = attemptHistory(record, logs);
  }
  await viaBroker(redis, () => redis.set(markerKey, JSON.stringify(record ? { ...marker, record, kept: keptOptions(job) } : marker), 'EX', ttl));

  if (queued) {
    const removed = await job.remove().then(
      () => true,
      () => false,
    );
    if (removed) {
      // No worker will ever end this job, so its uploaded file goes now. A
      // failure leaves it to the API's janitor rather than failing the cancel.
      const uploadId = uploadIdOf(config.uploadDir, (job.data as { input?: unknown } | undefined)?.input);
      if (uploadId) await releaseUpload(config.uploadDir, uploadId).catch(() => false);
      return 'cancelled';
    }
    // A worker locked it between our read and the removal: it is running now.
    await viaBroker(redis, () => redis.set(markerKey, JSON.stringify(marker), 'EX', ttl));
  }
  await viaBroker(redis, () => redis.publish(keys.cancelChannel(config.prefix), id));
  return 'cancelling';
}

/** The job is not in Redis: cancelled before (tombstone), finished long ago (SQL), or unknown. */
async function cancelGone(broker: Broker, store: JobStore, id: string): Promise<CancelOutcome> {
  const marker = await viaBroker(broker.redis, () => broker.redis.get(keys.cancel(broker.config.prefix, id)));
  if (marker && (JSON.parse(marker) as CancelMarker).record) return 'cancelled';
  const record = await store.get(id);
  if (!record) throw new JobNotFoundError(id);
  if (record.status === 'cancelled') return 'cancelled';
  throw new JobFinishedError(id, record.status);
}
