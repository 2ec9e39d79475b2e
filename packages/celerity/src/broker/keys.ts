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
  /** A rate limit's window: sorted set of its starts, scored by their time (ms, Redis clock). `limit` is a label such as `task:x`. */
  rateWindow: (prefix: string, limit: string) => `${prefix}:celerity:rl:${limit}`,
  /** Failed authentications from one client IP (IPv6: its /64) in the current window: a counter expiring with the window (api/auth-failure-limit.ts). */
  authFailures: (prefix: string, ip: string) => `${prefix}:celerity:auth-fail:${ip}`,
  /** A rate limit paused by `ctx.rateLimited(ms)`: exists (with that PX) while the pause lasts. */
  ratePause: (prefix: string, limit: string) => `${prefix}:celerity:rl-pause:${limit}`,
  /** The jobs a rate limit holds back, in turn: sorted set of job ids scored by the time each was given. */
  rateHeld: (prefix: string, limit: string) => `${prefix}:celerity:rl-held:${limit}`,
  /** A tenant's running jobs in a queue: sorted set of job ids scored by their lease's end (ms). `cap` is a label such as `queue:llm#tenant=acme`. */
  tenantRunning: (prefix: string, cap: string) => `${prefix}:celerity:cap:${cap}`,
  /** Jobs held back by a limit: sorted set of job ids scored by the end of their hold (ms). */
  held: (prefix: string) => `${prefix}:celerity:held`,
  /** Why a job is held back (JSON `{ reason, key, until }`), expiring a minute after its hold. */
  heldReason: (prefix: string, jobId: string) => `${prefix}:celerity:held:${jobId}`,
};

/**
 * BullMQ internals the limits rely on (test/bullmq-assumptions.test.ts checks
 * each): the job hash's key and lock key, and the hash fields a hold puts
 * back. BullMQ's `moveToActive` counts a start (`ats`) and stamps
 * `processedOn` before Celerity's gate runs; a job the gate holds back did
 * not start, so the gate undoes both in its script; a job it admits gets
 * the admission's time as its `processedOn`, the start the limits counted.
 */
export const bullmqInternals = {
  /** A job's hash: `<prefix>:<queue>:<id>`. */
  jobKey: (prefix: string, queue: string, jobId: string) => `${prefix}:${queue}:${jobId}`,
  /** What a job's hash key is suffixed with for its lock (`SET … PX lockDuration`, renewed while it runs). */
  lockSuffix: ':lock',
  /** Attempts started: incremented by every move to active. */
  attemptsStartedField: 'ats',
  /** Time of the latest move to active; the gate sets it to the admission's time. */
  processedOnField: 'processedOn',
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
 * The fields of BullMQ's announcement of a removed job in its queue's event
 * stream (`event removed jobId <id> prev <state>`, removeJobWithChildren.lua).
 * Celerity appends the same for a job it deletes after Redis let it go,
 * where BullMQ has nothing to remove and would say nothing. Checked in
 * test/bullmq-assumptions.test.ts.
 */
export const bullmqRemovedEvent = (jobId: string, prev: string): string[] => ['event', 'removed', 'jobId', jobId, 'prev', prev];

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
  /**
   * With `record`: what the record does not keep and a retry of the job reuses
   * (its hash, where a retry reads them otherwise, went with the removal).
   */
  kept?: KeptOptions;
}

/** A job's options that its SQL record does not keep: a retry takes them from its hash, or from its cancel marker. */
export interface KeptOptions {
  priority?: number;
  /** Per-call time limits (ms). */
  limits?: { soft?: number; hard?: number };
}

/** The {@link KeptOptions} of a BullMQ job (a fair queue's job keeps its priority in its envelope). */
export function keptOptions(job: { opts: { priority?: number }; data: unknown }): KeptOptions {
  const envelope = (job.data ?? {}) as { priority?: number; limits?: KeptOptions['limits'] };
  const priority = job.opts.priority || envelope.priority;
  return { ...(priority ? { priority } : {}), ...(envelope.limits ? { limits: envelope.limits } : {}) };
}

/**
 * The Redis Cluster hash tag of a prefix (the text between its first `{` and
 * the first `}` after it, if not empty), or null. Every key Celerity and
 * BullMQ write starts with `<prefix>:`, so with a tag all of them hash to the
 * slot of the tag, and scripts that touch several of them run on a cluster.
 */
export function clusterHashTag(prefix: string): string | null {
  const open = prefix.indexOf('{');
  if (open === -1) return null;
  const close = prefix.indexOf('}', open + 1);
  return close > open + 1 ? prefix.slice(open + 1, close) : null;
}
