/**
 * Redis keys and channels Celerity adds beside BullMQ's own. All start with
 * the configured prefix, so a Cluster hash tag in the prefix covers them.
 */
export const keys = {
  /** Cancellation of one job: a marker for workers, and the record of a cancelled queued job. */
  cancel: (prefix: string, jobId: string) => `${prefix}:celerity:cancel:${jobId}`,
  /** Pub/sub channel on which cancellations are announced to every worker. */
  cancelChannel: (prefix: string) => `${prefix}:celerity:cancel`,
  /** Idempotency key → `<job id> <input digest>`. */
  idempotency: (prefix: string, key: string) => `${prefix}:celerity:idem:${key}`,
  /**
   * The signed content of a webhook (task, tenant, timestamp, body) → the
   * idempotency key of its first request, while the signature is accepted.
   */
  hookDelivery: (prefix: string, replayId: string) => `${prefix}:celerity:hook:${replayId}`,
  /** A live worker's registry entry (JSON), expiring 3 heartbeats after its last one. */
  worker: (prefix: string, workerId: string) => `${prefix}:celerity:worker:${workerId}`,
  /**
   * Hash of the schedule declarations seen lately: one field per distinct set
   * of declared schedulers (an app version), `{ at, schedulers }` in JSON.
   * Schedule syncs refresh their own and read the others' before removing.
   */
  scheduleDeclarations: (prefix: string) => `${prefix}:celerity:schedules:declared`,
  /** Sorted set of worker ids scored by last heartbeat (ms): the index readers walk instead of SCAN. */
  workers: (prefix: string) => `${prefix}:celerity:workers`,
  /** A job's latest retry (`<retry id> <ms>`): at most one unfinished retry per job (client/job-actions.ts). */
  retryGuard: (prefix: string, jobId: string) => `${prefix}:celerity:retry:${jobId}`,
};

/**
 * BullMQ's delayed set of a queue (its own key, not Celerity's): a job's
 * score is the time it is due (ms) × 0x1000 plus a counter that orders jobs
 * due in the same millisecond (BullMQ's getDelayedScore.lua). Checked in
 * test/bullmq-assumptions.test.ts.
 */
export const bullmqDelayed = {
  key: (prefix: string, queue: string) => `${prefix}:${queue}:delayed`,
  dueAt: (score: number) => Math.floor(score / 0x1000),
};

/**
 * A field Celerity sets on a BullMQ job's hash (BullMQ's own key, beside its
 * fields) once the job has kept log lines. The recorder reads it with the
 * few hash fields it reads anyway, so a job that never logs costs it
 * nothing. Set only while the hash exists: a job deleted meanwhile is not
 * brought back as a hash of one field. Checked in
 * test/bullmq-assumptions.test.ts (BullMQ keeps the field to the end).
 */
export const jobLogMarker = {
  field: 'clog',
  script: `if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], '1') end return 0`,
};

/** What the cancel key holds. */
export interface CancelMarker {
  requestedAt: number;
  /** Set when the job was removed from its queue before it ran. */
  record?: import('../job-record.ts').JobRecord;
}
