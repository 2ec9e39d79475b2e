import { Job } from 'bullmq';
import { sql } from 'kysely';
import { ALL_TENANTS, type TenantScope } from '../auth/principal.ts';
import type { Broker } from '../broker/broker.ts';
import { viaBroker } from '../broker/connection.ts';
import { bullmqRemovedEvent, keptOptions, keys, type CancelMarker, type KeptOptions } from '../broker/keys.ts';
import { CelerityError, JobNotFoundError } from '../errors.ts';
import { newJobId } from '../ids.ts';
import { TERMINAL_STATUSES, type JobEnvelope, type JobRecord, type JobStatus } from '../job-record.ts';
import { padStreamId } from '../store/event-fold.ts';
import { DELETED, type JobStore } from '../store/job-store.ts';
import { forgetJobLogs } from '../store/job-logs.ts';
import { withTenantScope } from '../store/tenant-scope.ts';
import type { Task } from '../task.ts';
import { prepareJob, type Enqueued, type TaskRoute } from './enqueue.ts';
import { addWithPark } from '../fairness/park.ts';
import { producerDispatcher } from '../fairness/stage.ts';

/** Only a failed or cancelled job can be retried; this one is queued, running or completed. */
export class JobNotRetryableError extends CelerityError {
  readonly code = 'job_not_retryable';
  override readonly httpStatus = 409;

  constructor(jobId: string, status: string, reason?: string) {
    super(reason ?? `Job "${jobId}" is ${status}; only failed or cancelled jobs can be retried`, { job_id: jobId, status });
  }
}

/**
 * The job already has a retry that has not finished (a double click, two
 * operators): a second one would run the work twice. The details name it.
 */
export class RetryInProgressError extends CelerityError {
  readonly code = 'retry_in_progress';
  override readonly httpStatus = 409;

  constructor(jobId: string, retryId: string, retryStatus: string) {
    super(`Job "${jobId}" is already being retried by job "${retryId}" (${retryStatus}); wait for it to finish`, { job_id: jobId, retry_id: retryId, retry_status: retryStatus });
  }
}

/** A running job cannot be deleted: a worker holds its lock. */
export class JobActiveError extends CelerityError {
  readonly code = 'job_active';
  override readonly httpStatus = 409;

  constructor(jobId: string) {
    super(`Job "${jobId}" is running; cancel it first (POST /v1/jobs/${jobId}/cancel), then delete it`, { job_id: jobId });
  }
}

/** Only a delayed job (a delay, or a retry's backoff) can be promoted. */
export class JobNotDelayedError extends CelerityError {
  readonly code = 'job_not_delayed';
  override readonly httpStatus = 409;

  constructor(jobId: string, status: string) {
    super(`Job "${jobId}" is not delayed (${status}); only a delayed job can be promoted`, { job_id: jobId, status });
  }
}

/** What the job actions need of the app (the App class provides it). */
export interface JobActionsHost {
  readonly broker: Broker;
  openStore(): Promise<JobStore>;
  queueNames(): string[];
  getJob(id: string, opts?: { scope?: TenantScope }): Promise<JobRecord | null>;
  task(name: string): Task | undefined;
  readonly builtinTasks: ReadonlyMap<string, Task>;
  readonly workflows: ReadonlyMap<string, unknown>;
}

export interface RetryJobOptions {
  /** The input of the new job; default the original's. Validated by the task's schema. */
  input?: unknown;
  /** Public id of the API key asking for the retry, recorded as the new job's `key_id`. */
  keyId?: string;
  /** Whose jobs the caller may retry; another tenant's job is a JobNotFoundError. */
  scope?: TenantScope;
  traceId?: string;
}

/**
 * How long the double-click guard remembers a job's latest retry. Past it,
 * the SQL history (`retry_of`) still finds an unfinished retry; the key only
 * has to outlive the moment between enqueue and the recorder's first write.
 */
const RETRY_GUARD_TTL_S = 86_400;

/**
 * A retry whose guard key is set but whose job is not found yet is being
 * enqueued by a concurrent call, for this long at most.
 */
const RETRY_ENQUEUE_GRACE_MS = 10_000;

/** Sets the guard to ARGV[2] only if it still holds ARGV[1]: two callers replacing a finished retry, one wins. */
const COMPARE_AND_SET = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end
return 0`;

/** Deletes the guard only if it still holds ARGV[1] (a retry that could not be enqueued). */
const COMPARE_AND_DELETE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

const UNFINISHED: JobStatus[] = ['queued', 'started', 'retrying'];

/**
 * Retries a failed or cancelled job as a NEW job: same task, tenant and (if
 * Redis still holds the original) time limits and priority, with the
 * original's input or an edited one, and `retry_of` naming the original. A
 * new job rather than BullMQ's `job.retry()` because the original may exist
 * only in SQL (Redis let it go after the result TTL), because an edited input
 * must not rewrite what the original ran with, and because the original's
 * history (its attempts, its error) stays as it was.
 *
 * At most one unfinished retry per job: a second call while the first retry
 * is queued or running throws RetryInProgressError naming it; once it has
 * finished, the job may be retried again. A Redis key set with NX decides
 * between concurrent calls; the SQL history's `retry_of` remembers past the
 * key's TTL.
 */
export async function retryJob(host: JobActionsHost, id: string, opts: RetryJobOptions = {}): Promise<Enqueued> {
  const { broker } = host;
  const original = await host.getJob(id, { scope: opts.scope ?? ALL_TENANTS });
  if (!original) throw new JobNotFoundError(id);
  if (original.workflow || original.steps || host.workflows.has(original.task) || original.task.startsWith('workflow.')) {
    throw new JobNotRetryableError(id, original.status, `Job "${id}" is a workflow; submit the workflow again instead`);
  }
  if (original.status !== 'failed' && original.status !== 'cancelled') throw new JobNotRetryableError(id, original.status);

  const store = await host.openStore();
  const pending = await withTenantScope(store, ALL_TENANTS, (db) =>
    db.selectFrom('jobs').select(['id', 'status']).where('retry_of', '=', id).where('status', 'in', UNFINISHED).orderBy('created_at', 'desc').executeTakeFirst(),
  );
  if (pending) throw new RetryInProgressError(id, pending.id, pending.status);

  const route: TaskRoute = host.task(original.task) ?? host.builtinTasks.get(original.task) ?? { name: original.task, queue: original.queue, retries: Math.max(0, original.maxAttempts - 1) };
  // What SQL does not keep (time limits, priority) comes from the original's
  // hash while Redis has it, or from its cancel marker when it was removed
  // from its queue before it ran.
  const live = await viaBroker(broker.redis, () => Job.fromId(broker.queue(original.queue), id));
  const kept = live ? keptOptions(live) : await keptAtCancel(broker, id);
  const newId = newJobId();
  const prepared = prepareJob(broker, route, opts.input === undefined ? original.input : opts.input, {
    jobId: newId,
    ...(original.tenant !== null ? { tenant: original.tenant } : {}),
    ...(opts.keyId !== undefined ? { keyId: opts.keyId } : {}),
    ...(opts.traceId !== undefined ? { traceId: opts.traceId } : {}),
    ...(kept.limits ? { timeLimits: kept.limits } : {}),
    ...(kept.priority ? { priority: kept.priority } : {}),
  });

  const guard = keys.retryGuard(broker.config.prefix, id);
  const claim = `${newId} ${Date.now()}`;
  await claimRetry(host, id, guard, claim);
  try {
    const data: JobEnvelope = { ...prepared.data, retryOf: id };
    // On a fair queue the job is parked and goes into its tenant's backlog, in one MULTI (src/fairness).
    if (prepared.fair) await viaBroker(broker.redis, () => addWithPark(broker, [{ ...prepared, data }]));
    else await viaBroker(broker.redis, () => broker.queue(prepared.queue).add(prepared.name, data, prepared.opts));
  } catch (err) {
    await broker.redis.eval(COMPARE_AND_DELETE, 1, guard, claim).catch(() => {});
    throw err;
  }
  broker.hintQueue(newId, prepared.queue);
  if (prepared.fair) producerDispatcher(broker, prepared.queue).trigger();
  return { id: newId, task: prepared.name, queue: prepared.queue, created: true };
}

/** The kept options in a job's cancel marker; none when it has no marker, or one without them. */
async function keptAtCancel(broker: Broker, id: string): Promise<KeptOptions> {
  const text = await viaBroker(broker.redis, () => broker.redis.get(keys.cancel(broker.config.prefix, id)));
  if (!text) return {};
  try {
    return (JSON.parse(text) as CancelMarker).kept ?? {};
  } catch {
    return {};
  }
}

/** Takes the job's retry guard for `claim`, or throws RetryInProgressError naming the retry that holds it. */
async function claimRetry(host: JobActionsHost, id: string, guard: string, claim: string): Promise<void> {
  const { redis } = host.broker;
  for (let attempt = 0; attempt < 5; attempt++) {
    const set = await viaBroker(redis, () => redis.set(guard, claim, 'EX', RETRY_GUARD_TTL_S, 'NX'));
    if (set === 'OK') return;
    const held = await viaBroker(redis, () => redis.get(guard));
    if (held === null) continue;
    const [retryId = '', since = '0'] = held.split(' ');
    const retry = await host.getJob(retryId);
    if (!retry) {
      if (Date.now() - Number(since) < RETRY_ENQUEUE_GRACE_MS) throw new RetryInProgressError(id, retryId, 'queued');
    } else if (!TERMINAL_STATUSES.has(retry.status)) {
      throw new RetryInProgressError(id, retryId, retry.status);
    }
    // The retry finished (or vanished): the job may be retried again, by one caller.
    const swapped = await viaBroker(redis, () => redis.eval(COMPARE_AND_SET, 1, guard, held, claim, RETRY_GUARD_TTL_S));
    if (swapped === 1) return;
  }
  throw new RetryInProgressError(id, '(unknown)', 'queued');
}

/**
 * Deletes a job: from Redis (BullMQ's `job.remove`, with a workflow's steps)
 * and from the SQL history. A running job is refused (JobActiveError): it
 * must be cancelled first, since a worker holds it.
 *
 * The SQL row is not removed but replaced by a tombstone (status `deleted`,
 * its input, result, error and progress cleared, hidden from every read)
 * whose `event_seq` is the queue's stream position after the removal. A
 * recorder still holding older events of the job (read before the removal,
 * written after) is then refused by the row's ordering guard instead of
 * bringing the job back; the job's own `removed` event finds no hash and no
 * cancel marker and writes nothing. The purge removes tombstones with the
 * rest of the old history. A job Redis no longer held is announced removed
 * in its queue's event stream all the same (the live feed's `deleted`).
 */
export async function deleteJob(host: JobActionsHost, id: string, opts: { scope?: TenantScope } = {}): Promise<void> {
  const { broker } = host;
  const record = await host.getJob(id, { scope: opts.scope ?? ALL_TENANTS });
  if (!record) throw new JobNotFoundError(id);
  const queue = broker.queue(record.queue);
  const job = await viaBroker(broker.redis, () => Job.fromId(queue, id));
  if (job) {
    const state = await viaBroker(broker.redis, () => job.getState());
    if (state === 'active') throw new JobActiveError(id);
    await viaBroker(broker.redis, () => job.remove({ removeChildren: true })).catch((err: unknown) => {
      // BullMQ refuses a job a worker locked between our read and the removal.
      if (err instanceof Error && /locked/.test(err.message)) throw new JobActiveError(id);
      throw err;
    });
  }
  // A job cancelled while queued lives on in its marker, which reads and the recorder would use.
  await viaBroker(broker.redis, () => broker.redis.del(keys.cancel(broker.config.prefix, id), ...(record.steps ?? []).map((s) => keys.cancel(broker.config.prefix, s.id))));
  const seq = await positionAfterNow(broker, record.queue);
  const store = await host.openStore();
  const rows = [record, ...(record.steps ?? []).map((s) => ({ ...record, id: s.id, task: s.task }))];
  for (const row of rows) {
    await tombstone(store, row, seq);
    await forgetJobLogs(store, row.id);
  }
  if (!job) {
    // Redis had let the job go (its result TTL, or a cancel while it
    // waited): BullMQ removed nothing and says nothing, so the live feed and
    // BullMQ's own listeners would not hear of the delete. The same
    // announcement as a removal, after the tombstones, by which a feed that
    // never met the job places it. A recorder reading it finds no hash and no
    // cancel marker and writes nothing. Best effort: the delete is done.
    const announce = broker.redis.multi();
    for (const row of rows) announce.xadd(broker.eventsKey(record.queue), 'MAXLEN', '~', broker.config.eventsMaxLen, '*', ...bullmqRemovedEvent(row.id, record.status));
    await viaBroker(broker.redis, () => announce.exec()).catch(() => {});
  }
}

/**
 * A position in the queue's event stream just past its last event: a row
 * written there is newer than every event appended so far (the `event_seq`
 * guard refuses equal positions, hence one past), and so than anything a
 * recorder may still write from them.
 */
export async function positionAfterNow(broker: Broker, queue: string): Promise<string> {
  const info = await viaBroker(broker.redis, () => broker.redis.xinfo('STREAM', broker.eventsKey(queue))).catch(() => null);
  if (Array.isArray(info)) {
    const at = info.indexOf('last-generated-id');
    if (at >= 0) {
      const [ms = '0', n = '0'] = String(info[at + 1]).split('-');
      return padStreamId(`${ms}-${Number(n) + 1}`);
    }
  }
  // No stream (nothing was ever recorded for the queue): Redis' clock.
  const [seconds, micros] = await viaBroker(broker.redis, () => broker.redis.time());
  return padStreamId(`${Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)}-0`);
}

/** Writes the job's tombstone, or turns its row into one; its position only moves forward. */
async function tombstone(store: JobStore, record: Pick<JobRecord, 'id' | 'task' | 'queue' | 'tenant' | 'keyId' | 'createdAt'>, seq: string): Promise<void> {
  const now = Date.now();
  await withTenantScope(store, ALL_TENANTS, (db) =>
    db
      .insertInto('jobs')
      .values({
        id: record.id,
        task: record.task,
        queue: record.queue,
        tenant: record.tenant,
        key_id: record.keyId,
        status: DELETED,
        attempts: 0,
        max_attempts: 1,
        input: null,
        result: null,
        error_type: null,
        error_message: null,
        error_stack: null,
        progress: null,
        created_at: record.createdAt,
        started_at: null,
        finished_at: now,
        attempt_history: null,
        updated_at: now,
        event_seq: seq,
      })
      .onConflict((oc) =>
        oc.column('id').doUpdateSet({
          status: DELETED,
          input: null,
          result: null,
          error_type: null,
          error_message: null,
          error_stack: null,
          progress: null,
          attempt_history: null,
          finished_at: now,
          updated_at: now,
          event_seq: sql<string>`case when jobs.event_seq > excluded.event_seq then jobs.event_seq else excluded.event_seq end`,
        }),
      )
      .execute(),
  );
}

/**
 * Runs a delayed job now (BullMQ's `job.promote`): one waiting out a delay
 * or a retry's backoff. Anything else throws JobNotDelayedError. Returns the
 * job's status afterwards (`queued`, or `retrying` after a failed attempt).
 */
export async function promoteJob(host: JobActionsHost, id: string, opts: { scope?: TenantScope } = {}): Promise<JobStatus> {
  const { broker } = host;
  const record = await host.getJob(id, { scope: opts.scope ?? ALL_TENANTS });
  if (!record) throw new JobNotFoundError(id);
  const job = await viaBroker(broker.redis, () => Job.fromId(broker.queue(record.queue), id));
  if (!job) throw new JobNotDelayedError(id, record.status);
  const state = await viaBroker(broker.redis, () => job.getState());
  if (state !== 'delayed') throw new JobNotDelayedError(id, record.status);
  try {
    await viaBroker(broker.redis, () => job.promote());
  } catch (err) {
    // It left the delayed set between the read and the promotion (its delay ended, or it was cancelled).
    const after = await viaBroker(broker.redis, () => job.getState());
    if (after !== 'delayed') throw new JobNotDelayedError(id, (await host.getJob(id))?.status ?? 'gone');
    throw err;
  }
  return job.attemptsMade > 0 ? 'retrying' : 'queued';
}

/**
 * The jobs that retry `id`, oldest first: those the history holds (by
 * `retry_of`), and the latest one from the retry guard, which the recorder
 * may not have written yet.
 */
export async function retriesOf(host: JobActionsHost, id: string, scope: TenantScope = ALL_TENANTS): Promise<string[]> {
  const store = await host.openStore();
  const [recorded, guard] = await Promise.all([
    store.retriesOf(id, scope),
    viaBroker(host.broker.redis, () => host.broker.redis.get(keys.retryGuard(host.broker.config.prefix, id))).catch(() => null),
  ]);
  const latest = guard?.split(' ')[0];
  // A retry has its original's tenant and task, so the guard names no job outside the caller's view (it may name one deleted since).
  return latest && !recorded.includes(latest) ? [...recorded, latest] : recorded;
}
