import { Job } from 'bullmq';
import { ALL_TENANTS, type TenantScope } from '../auth/principal.ts';
import type { Broker } from '../broker/broker.ts';
import { inOneWrite, viaBroker } from '../broker/connection.ts';
import { BrokerUnavailableError } from '../errors.ts';
import { bullmqDelayed, keys, type CancelMarker } from '../broker/keys.ts';
import { attemptHistory, recordFromJob, statusFromState, type JobRecord } from '../job-record.ts';
import { parseWaitReason } from '../rate-limits/held.ts';
import type { JobStore } from '../store/job-store.ts';

/**
 * Reads a job's current record. Redis first: while a job is live or within its
 * result retention, its hash holds the status, progress, result and error, so
 * a status poll never touches SQL. After that (or while Redis is down) the
 * SQL history answers, within `scope`. The scope applies to the SQL read
 * only: a record read from Redis is returned whatever its tenant, and the
 * caller checks it.
 */
export async function readJob(broker: Broker, store: JobStore, queues: readonly string[], id: string, scope: TenantScope = ALL_TENANTS): Promise<JobRecord | null> {
  try {
    const live = await readLive(broker, queues, id);
    if (live) return live;
  } catch (err) {
    if (!(err instanceof BrokerUnavailableError)) throw err;
  }
  return store.get(id, scope);
}

async function readLive(broker: Broker, queues: readonly string[], id: string): Promise<JobRecord | null> {
  // Polls usually repeat: when this process knows the job's queue, hash,
  // state and attempt log are read in one round trip and one socket write.
  const hinted = broker.queueHint(id);
  if (hinted && queues.includes(hinted)) {
    const queue = broker.queue(hinted);
    const [job, state, logs, held] = await viaBroker(broker.redis, () =>
      inOneWrite(broker.redis, () => Promise.all([Job.fromId(queue, id), queue.getJobState(id), broker.jobLogs(hinted, id), broker.redis.get(keys.heldReason(broker.config.prefix, id))])),
    );
    if (job) return liveRecord(broker, hinted, job, state, logs, held);
  }
  // Ids are unique across queues, so at most one queue holds the job; asking
  // all of them at once costs one round trip.
  const [marker, ...found] = await viaBroker(broker.redis, () =>
    inOneWrite(broker.redis, () => Promise.all([broker.redis.get(keys.cancel(broker.config.prefix, id)), ...queues.map((q) => Job.fromId(broker.queue(q), id))])),
  );
  const index = found.findIndex(Boolean);
  if (index < 0) {
    // A job cancelled while queued was removed from its queue; its record stays with the marker.
    const record = marker ? (JSON.parse(marker as string) as CancelMarker).record : undefined;
    return record ?? null;
  }
  const queueName = queues[index]!;
  broker.hintQueue(id, queueName);
  const queue = broker.queue(queueName);
  const [state, logs, held] = await viaBroker(broker.redis, () =>
    inOneWrite(broker.redis, () => Promise.all([queue.getJobState(id), broker.jobLogs(queueName, id), broker.redis.get(keys.heldReason(broker.config.prefix, id))])),
  );
  return liveRecord(broker, queueName, found[index] as Job, state, logs, held);
}

async function liveRecord(broker: Broker, queueName: string, job: Job, state: string, logs: string[], held: string | null): Promise<JobRecord | null> {
  // The hash was read before the state: if the job finished in between, the
  // hash lacks the outcome; read it again (only in that race).
  if ((state === 'completed' || state === 'failed') && !job.finishedOn) {
    job = (await viaBroker(broker.redis, () => Job.fromId(broker.queue(queueName), job.id!))) ?? job;
  }
  const status = statusFromState(state, job.attemptsMade);
  if (!status) return null;
  const record = recordFromJob(job, queueName, status);
  record.attemptHistory = attemptHistory(record, logs);
  // A limit's reason outlives its hold by a minute; it explains a job still in line, nothing else.
  const waiting = record.status === 'queued' || record.status === 'retrying' ? parseWaitReason(held) : null;
  if (waiting) record.waiting = waiting;
  if (state === 'delayed') {
    // One more read, for delayed jobs only: the hash does not say when a retry's backoff ends.
    const score = await viaBroker(broker.redis, () => broker.redis.zscore(bullmqDelayed.key(broker.config.prefix, queueName), job.id!));
    if (score !== null) record.runAt = bullmqDelayed.dueAt(Number(score));
  }
  return record;
}
