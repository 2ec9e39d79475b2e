import type { Logger } from 'pino';
import { z } from 'zod';
import type { TenantScope } from '../../auth/principal.ts';
import { CelerityError, JobFinishedError, JobNotFoundError } from '../../errors.ts';
import type { JobRecord } from '../../job-record.ts';
import { MAINTENANCE_QUEUE } from '../../schedules/maintenance.ts';
import type { JobStore } from '../../store/job-store.ts';
import { defineTask, type Task, type TaskContext } from '../../task.ts';
import {
  type BulkAction,
  type BulkActor,
  type BulkFilter,
  type BulkOperation,
  BulkOperationNotFoundError,
  BulkUnavailableError,
  confinedFilter,
  countMatching,
  FINISHED_BULK,
  inBulkReach,
  insertOperation,
  MAX_KEPT_ERRORS,
  markOperation,
  readOperation,
  saveOperation,
} from './operations.ts';

/** The internal task that runs bulk operations, on the maintenance queue. */
export const BULK_TASK = 'celerity.bulk';

/** Jobs handled between two saves of the operation's progress (and cursor). */
const PAGE = 50;

/** What bulk operations need of the app (the App class provides it). */
export interface BulkHost {
  readonly logger: Logger;
  readonly builtinTasks: ReadonlyMap<string, Task>;
  openStore(): Promise<JobStore>;
  retry(id: string, opts: { keyId?: string; scope?: TenantScope }): Promise<unknown>;
  cancel(id: string, opts: { scope?: TenantScope }): Promise<unknown>;
  deleteJob(id: string, opts: { scope?: TenantScope }): Promise<void>;
  enqueueByName(name: string, input: unknown, options: { jobId?: string; tenant?: string; keyId?: string }): Promise<unknown>;
}

/** A dry run: how many jobs the action would touch now. */
export async function countBulk(host: BulkHost, actor: BulkActor, filter: BulkFilter): Promise<number> {
  return countMatching(await host.openStore(), { filter, actor });
}

/**
 * Starts a bulk operation: writes its audit entry, then enqueues the
 * internal task that runs it (the operation's id is its job's id, so the
 * job's progress, cancellation and crash recovery are the operation's).
 */
export async function startBulk(host: BulkHost, actor: BulkActor, action: BulkAction, filter: BulkFilter, id: string): Promise<BulkOperation> {
  if (!host.builtinTasks.has(BULK_TASK)) throw new BulkUnavailableError();
  const store = await host.openStore();
  const op: BulkOperation = { id, action, filter, actor, status: 'queued', matched: 0, done: 0, failed: 0, errors: [], cursor: null, createdAt: Date.now(), startedAt: null, finishedAt: null };
  await insertOperation(store, op);
  try {
    await host.enqueueByName(
      BULK_TASK,
      { operation: id },
      {
        jobId: id,
        ...(!actor.scope.all && actor.scope.tenant !== null ? { tenant: actor.scope.tenant } : {}),
        ...(actor.keyId !== null ? { keyId: actor.keyId } : {}),
      },
    );
  } catch (err) {
    await markOperation(store, id, 'failed', Date.now());
    throw err;
  }
  return op;
}

/**
 * Stops an operation: cancels its job. One still queued is stopped at once;
 * a running one stops before its next job (`stopping`, then `stopped`). A
 * finished one is left as it is. Returns the operation as it now stands.
 */
export async function stopBulk(host: BulkHost, id: string): Promise<BulkOperation> {
  const store = await host.openStore();
  const op = await readOperation(store, id);
  if (!op) throw new BulkOperationNotFoundError(id);
  if (FINISHED_BULK.has(op.status)) return op;
  const outcome = await host.cancel(id, {}).catch((err: unknown) => {
    // Its job ended meanwhile, or Redis let it go: the row says how it ended.
    if (err instanceof JobFinishedError || err instanceof JobNotFoundError) return 'finished';
    throw err;
  });
  if (outcome === 'cancelled') await markOperation(store, id, 'stopped', Date.now());
  else if (outcome === 'cancelling') await markOperation(store, id, 'stopping');
  return (await readOperation(store, id)) ?? op;
}

/** What a run needs of its task context (a job's, or the CLI's own). */
export type BulkRunContext = Pick<TaskContext, 'signal' | 'attempt' | 'maxAttempts' | 'progress'>;

/**
 * Runs a bulk operation in this process, not as a job: for the CLI, which
 * must not depend on a worker of the maintenance queue. Same audit entry,
 * same run; aborting `signal` with an error named `JobCancelled` stops it
 * (`stopped`).
 */
export async function runBulkHere(host: BulkHost, actor: BulkActor, action: BulkAction, filter: BulkFilter, id: string, ctx: Pick<BulkRunContext, 'signal' | 'progress'>): Promise<BulkOperation> {
  const store = await host.openStore();
  const op: BulkOperation = { id, action, filter, actor, status: 'queued', matched: 0, done: 0, failed: 0, errors: [], cursor: null, createdAt: Date.now(), startedAt: null, finishedAt: null };
  await insertOperation(store, op);
  try {
    await runBulk(host, id, { ...ctx, attempt: 1, maxAttempts: 1 });
  } catch (err) {
    if ((err as Error)?.name !== 'JobCancelled') throw err;
  }
  return (await readOperation(store, id)) ?? op;
}

/** The task `celerity.bulk`, bound to the app. */
export function bulkTask(host: BulkHost): Task {
  return defineTask({
    name: BULK_TASK,
    queue: MAINTENANCE_QUEUE,
    // Each attempt resumes at the operation's saved cursor.
    retries: 3,
    backoff: { base: 1_000, max: 30_000 },
    description: 'Runs a bulk action (retry, cancel, delete) over the jobs a filter matches; see POST /v1/bulk.',
    input: z.object({ operation: z.string().min(1).max(200) }).strict(),
    handler: async ({ operation }, ctx) => runBulk(host, operation, ctx),
  });
}

/**
 * Pages through the history newest first, from the saved cursor, applying
 * the action job by job with the starting key's confinement; saves the
 * counts and the cursor after each page and reports them as the job's
 * progress. Jobs created after the operation (its own retries, say) are
 * left alone. A job the action refuses (finished, running, retried already)
 * counts as failed, its reason kept; an outage throws, and the next attempt
 * resumes at the cursor. Cancelling the job stops it before its next job.
 */
async function runBulk(host: BulkHost, id: string, ctx: BulkRunContext): Promise<{ matched: number; done: number; failed: number; status: string }> {
  const store = await host.openStore();
  const op = await readOperation(store, id);
  if (!op) throw new BulkOperationNotFoundError(id);
  if (FINISHED_BULK.has(op.status)) return { matched: op.matched, done: op.done, failed: op.failed, status: op.status };
  // Asked to stop, then its worker died before it could: a new run must not go on.
  if (op.status === 'stopping') {
    await markOperation(store, id, 'stopped', Date.now());
    return { matched: op.matched, done: op.done, failed: op.failed, status: 'stopped' };
  }
  op.status = 'running';
  op.startedAt ??= Date.now();
  if (op.cursor === null && op.done === 0 && op.failed === 0) op.matched = await countMatching(store, op);
  await saveOperation(store, op, { unlessFinished: true });
  try {
    for (;;) {
      const page = await store.list(confinedFilter(op, PAGE, op.cursor));
      for (const job of page.jobs) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (job.createdAt > op.createdAt || !inBulkReach(job)) continue;
        await applyOne(host, op, job);
      }
      op.cursor = page.nextCursor;
      if (!(await saveOperation(store, op, { unlessFinished: true }))) return { matched: op.matched, done: op.done, failed: op.failed, status: 'stopped' };
      const handled = op.done + op.failed;
      await ctx.progress({ percent: op.matched > 0 ? Math.min(100, Math.round((handled / op.matched) * 100)) : 100, matched: op.matched, done: op.done, failed: op.failed });
      if (page.nextCursor === null) break;
    }
    op.status = 'completed';
    op.finishedAt = Date.now();
    await saveOperation(store, op, { unlessFinished: true });
    host.logger.info({ operation_id: id, action: op.action, matched: op.matched, done: op.done, failed: op.failed, key_id: op.actor.keyId }, 'bulk operation completed');
    return { matched: op.matched, done: op.done, failed: op.failed, status: op.status };
  } catch (err) {
    const reason = err as Error;
    // Stopped on purpose; a worker shutdown (WorkerShutdown) hands the job back and the next run resumes.
    if (ctx.signal.aborted && reason?.name === 'JobCancelled') {
      op.status = 'stopped';
      op.finishedAt = Date.now();
      await saveOperation(store, op).catch(() => {});
    } else if (!ctx.signal.aborted && ctx.attempt >= ctx.maxAttempts) {
      op.status = 'failed';
      op.finishedAt = Date.now();
      await saveOperation(store, op).catch(() => {});
    }
    throw err;
  }
}

async function applyOne(host: BulkHost, op: BulkOperation, job: JobRecord): Promise<void> {
  const scope = op.actor.scope;
  try {
    if (op.action === 'retry') await host.retry(job.id, { scope, ...(op.actor.keyId !== null ? { keyId: op.actor.keyId } : {}) });
    else if (op.action === 'cancel') await host.cancel(job.id, { scope });
    else await host.deleteJob(job.id, { scope });
    op.done += 1;
  } catch (err) {
    // A refusal of this one job (4xx); anything else is an outage, for the task's retry.
    if (!(err instanceof CelerityError) || err.httpStatus >= 500) throw err;
    op.failed += 1;
    if (op.errors.length < MAX_KEPT_ERRORS) op.errors.push({ job_id: job.id, code: err.code, message: err.message });
  }
}
