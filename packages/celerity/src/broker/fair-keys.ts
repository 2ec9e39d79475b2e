/**
 * The Redis keys of the fair stage (src/fairness/), and what it relies on of
 * BullMQ's own keys. Everything here starts with the configured prefix, so a
 * Cluster hash tag in the prefix covers BullMQ's keys and ours alike: the
 * fair stage's Lua scripts touch both in one call.
 *
 * What the fair stage assumes of BullMQ 6.7 (checked in
 * test/bullmq-assumptions.test.ts):
 * - a queue's keys are `<prefix>:<queue>:<type>`; a job's hash is
 *   `<prefix>:<queue>:<job id>` with a `timestamp` field (the add's time);
 * - `wait` is a list of runnable job ids, `delayed` a sorted set of the
 *   delayed ones; the promote script moves a job from `delayed` to the head
 *   of `wait` (FIFO from there) and answers -3, changing nothing, for a job
 *   that is not in `delayed`;
 * - a job added with a delay is in `delayed` until promoted or due;
 * - for the tenants view: `active` is a list of running job ids, `completed`
 *   a sorted set scored by `finishedOn`, and a job hash holds `data` (the
 *   job's JSON envelope, with `tenant`), `timestamp` and `processedOn`.
 */
export const fairKeys = {
  /** Everything of one queue's fair stage starts with this. */
  base: (prefix: string, queue: string) => `${prefix}:celerity:fair:${queue}:`,
  /** BullMQ's list of runnable jobs. */
  bullWait: (prefix: string, queue: string) => `${prefix}:${queue}:wait`,
  /** BullMQ's sorted set of delayed jobs, where parked jobs wait. */
  bullDelayed: (prefix: string, queue: string) => `${prefix}:${queue}:delayed`,
  /** BullMQ's list of running jobs. */
  bullActive: (prefix: string, queue: string) => `${prefix}:${queue}:active`,
  /** BullMQ's sorted set of completed jobs, scored by `finishedOn`. */
  bullCompleted: (prefix: string, queue: string) => `${prefix}:${queue}:completed`,
  /** Prefix of BullMQ's job hashes: `<this><job id>`. */
  bullJobPrefix: (prefix: string, queue: string) => `${prefix}:${queue}:`,
};

/** The keys of one queue's fair stage, below {@link fairKeys.base}. */
export const FAIR_PARTS = {
  /** Sorted set: tenants with a backlog, scored by their virtual pass. */
  active: 'active',
  /** Sorted set: tenant → pass it left the active set with (so it cannot come back with credit), while above the virtual time. */
  left: 'left',
  /** Hash: the same, as versions before `left` kept it for every tenant ever seen; unlinked by the next dispatch. */
  lastLegacy: 'last',
  /** String: the virtual time, the pass of the tenant served last. */
  vtime: 'vt',
  /** Hash: tenant → arrival counter of its backlog (dropped when the backlog empties). */
  seq: 'seq',
  /** Sorted set: job id → Redis time (ms) it was taken from a backlog, until promoted. */
  inflight: 'inflight',
  /** Sorted set: `<job id>\n<priority>\n<tenant>` → when a delayed job becomes due (ms). */
  deferred: 'deferred',
  /** Hash: tenant → weight set through the API (wins over the configured one). */
  weightsApi: 'w:api',
  /** Hash: tenant → weight from `CELERITY_FAIR_WEIGHTS`. */
  weightsConfig: 'w:cfg',
  /** Sorted set per tenant, `b:<tenant>`: job id → priority · 2^32 + arrival. */
  backlog: 'b:',
} as const;

/**
 * How far in the future a parked job's BullMQ delay lies. A year: far enough
 * that BullMQ never promotes it by itself, near enough that BullMQ's delayed
 * score (timestamp · 4096) stays below 2^53 until 2038.
 */
export const PARK_DELAY_MS = 365 * 24 * 3600 * 1000;

/** The tenant name of jobs that have none, inside the fair stage's keys. */
export const NO_TENANT = '';
