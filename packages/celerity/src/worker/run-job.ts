import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { InvalidInputError, MaxRetriesExceededError, NonRetryableError, Retry, UpstreamRateLimit } from '../errors.ts';
import { type AttemptLogRow, type JobEnvelope, MAX_ATTEMPT_STACK_BYTES, maxAttemptsOf } from '../job-record.ts';
import { JobLogWriter, keepingLogger } from './job-log.ts';
import { jobLogMarker } from '../broker/keys.ts';
import type { RedisClient } from '../broker/connection.ts';
import { parseInput, type Task } from '../task.ts';
import { AttemptContext } from './attempt-context.ts';
import type { ThreadPool, ThreadRun } from './isolation/thread-pool.ts';
import { effectiveLimits, isHardTimeLimit, JobCancelled, SoftTimeLimitExceeded, TimeLimitExceeded, type TimeLimits } from './limits.ts';
import { ProgressReporter } from './progress.ts';
import type { StopRequest } from './stop-request.ts';
import { pipedInput } from '../workflows/piped-input.ts';
import { assertUploadHandle } from '../uploads/store.ts';

/** Thrown when a worker receives a job whose task it does not know. */
export class UnknownTaskInWorkerError extends NonRetryableError {
  override readonly code = 'unknown_task';
}

export interface AttemptOptions {
  task: Task | undefined;
  queue: string;
  log: Logger;
  /** The worker's request to stop this job: a cancellation, or the end of a shutdown's grace. */
  stop: StopRequest;
  /** Configured default limits; the task's and the call's override them. */
  defaultLimits: TimeLimits;
  /** Ms a cancelled job may take to honour its signal before the attempt is ended. */
  cancelGraceMs: number;
  /** Runs `isolation: 'thread'` tasks; required when the app has any. */
  pool: ThreadPool | undefined;
  /** The worker's connection: marks a job that kept log lines for the recorder (`jobLogMarker`). */
  redis?: RedisClient | undefined;
  /** Where uploads live: an upload handle in the input must point inside it. */
  uploadDir: string | undefined;
  /**
   * Told, once the handler starts, how to get a promise that settles (never
   * rejects) when the handler has really stopped: an inline handler returned
   * or threw, a thread finished or was terminated. The attempt may end
   * before that (hard limit, cancellation grace); a shutdown must not hand
   * the job back until then. A function, so that only a shutdown pays for
   * the promise.
   */
  onHandler?: ((stopped: () => Promise<void>) => void) | undefined;
}

/**
 * Runs one attempt of a job: validates the input, builds the context, runs
 * the handler (inline or in a thread) under its time limits, and returns its
 * result for BullMQ to store.
 *
 * The attempt ends at the first of: the handler settles; the hard limit
 * passes (`TimeLimitExceeded`); a cancellation's grace period runs out
 * (`JobCancelled`). Returning or throwing is what releases BullMQ's slot, so
 * an inline handler that never yields still frees it, though its code keeps
 * running in the background; an isolated one is terminated with its thread.
 *
 * Errors that must not be retried reach BullMQ as `UnrecoverableError` with
 * the original stack, whose first line names the original class for the
 * record. A `ctx.retry()` reaches it as the `Retry` error, whose delay the
 * worker's backoff strategy returns: BullMQ spends the attempt and delays
 * the job as for any retried failure.
 */
export async function runJob(job: Job, opts: AttemptOptions): Promise<unknown> {
  const { task, queue } = opts;
  // attemptsStarted counts crashes too, so a re-run after a dead worker gets a new number.
  const attempt = Math.max(job.attemptsStarted ?? 0, (job.attemptsMade ?? 0) + 1);
  // The job-bound logger is made on first use: most jobs never log.
  let childLog: Logger | undefined;
  const log = () => (childLog ??= opts.log.child({ job_id: job.id, task: job.name, attempt, queue, trace_id: (job.data as JobEnvelope | undefined)?.trace ?? null }));
  // The handler's lines are also kept in the job's log; made on first use too, so a job that never logs writes nothing.
  let jobLog: JobLogWriter | undefined;
  const keptLog = () =>
    (jobLog ??= new JobLogWriter(
      job,
      attempt,
      (err) => log().warn({ err }, 'job log lines not kept'),
      async () => opts.redis?.eval(jobLogMarker.script, 1, `${job.queueQualifiedName}:${job.id}`, jobLogMarker.field),
    ));
  let handlerLog: Logger | undefined;
  const ctxLog = () => (handlerLog ??= keepingLogger(log(), (line) => keptLog().keep(line)));
  const info = opts.log.isLevelEnabled('info');
  const startedAt = job.processedOn ?? Date.now();
  // ctx.signal is made when the handler first reads it (most never do);
  // `aborted` holds its reason from the start, read or not.
  let controller: AbortController | undefined;
  let aborted: Error | undefined;
  const signal = () => {
    if (!controller) {
      controller = new AbortController();
      if (aborted) controller.abort(aborted);
    }
    return controller.signal;
  };
  const timers: NodeJS.Timeout[] = [];
  // Ends the attempt before the handler settles (hard limit, cancellation grace).
  let endedBy: Error | undefined;
  let ended: ((err: Error) => void) | undefined;
  let thread: ThreadRun | undefined;
  let terminating: Promise<void> | undefined;
  let progress: ProgressReporter | undefined;
  const reporter = () => (progress ??= new ProgressReporter(job, log));

  const abort = (reason: Error) => {
    if (aborted) return;
    aborted = reason;
    controller?.abort(reason);
    thread?.abort(reason);
  };
  const end = (reason: Error) => {
    endedBy ??= reason;
    ended?.(reason);
    if (thread) terminating ??= thread.terminate(reason);
  };

  try {
    const envelope = (job.data ?? {}) as JobEnvelope;
    let rawInput = envelope.input;
    if (envelope.flow) {
      rawInput = await pipedInput(job, envelope.flow, envelope.input);
      // A group's gather or a workflow's root: no handler, the result is what it collected.
      if (envelope.flow.collect) return rawInput ?? null;
    }
    if (!task) throw new UnknownTaskInWorkerError(`No task named "${job.name}" is registered in this worker`);
    assertUploadHandle(opts.uploadDir, rawInput);
    const input = parseInput(task, rawInput);
    const limits = effectiveLimits(opts.defaultLimits, task.timeLimits, envelope.limits);

    opts.stop.onRequest((reason) => {
      abort(reason);
      // A shutdown already waited its grace: the attempt ends now (a thread
      // is terminated at once). The worker still waits for an inline
      // handler to stop before it lets the job go.
      timers.push(setTimeout(() => end(reason), reason.name === 'WorkerShutdown' ? 0 : opts.cancelGraceMs));
    });
    if (limits.soft !== undefined) {
      timers.push(setTimeout(() => abort(new SoftTimeLimitExceeded(limits.soft!)), limits.soft));
    }
    if (limits.hard !== undefined) {
      timers.push(setTimeout(() => end(new TimeLimitExceeded(`hard time limit of ${limits.hard} ms exceeded`)), limits.hard));
    }

    let execution: Promise<unknown>;
    if (task.isolation === 'thread') {
      if (!opts.pool) throw new NonRetryableError(`Task "${task.name}" is isolated but this worker has no thread pool (the app's module is unknown)`);
      thread = opts.pool.run(
        { jobId: job.id!, task: task.name, queue, tenant: envelope.tenant ?? null, attempt, maxAttempts: maxAttemptsOf(job.opts), input: rawInput },
        (update) => void reporter().update(update),
        (line) => keptLog().keep(line),
      );
      if (aborted) thread.abort(aborted);
      execution = thread.result;
    } else {
      const ctx = new AttemptContext(
        { jobId: job.id!, task: task.name, queue, tenant: envelope.tenant ?? null, attempt, maxAttempts: maxAttemptsOf(job.opts) },
        { signal, log: ctxLog, progress: (update) => reporter().update(update) },
      );
      execution = Promise.resolve().then(() => task.handler(input, ctx));
    }
    const noop = () => {};
    // A terminated thread's result rejects before the thread is gone: wait for that too.
    opts.onHandler?.(() => execution.then(noop, noop).then(() => terminating?.catch(noop)));
    if (info) log().info('job started');
    // The handler's outcome, or the reason the attempt ended first.
    const result = await new Promise<unknown>((resolve, reject) => {
      if (endedBy) reject(endedBy);
      ended = reject;
      execution.then(resolve, reject);
    });
    // The final snapshot (and the log lines) must land before the job is marked completed.
    // (Awaited only when there is one: an await of nothing still costs a promise and a turn.)
    if (progress) await progress.settled();
    if (jobLog) await jobLog.settled();
    if (info) log().info({ ms: Date.now() - startedAt }, 'job completed');
    return result === undefined ? null : result;
  } catch (caught) {
    if (progress) await progress.settled();
    if (jobLog) await jobLog.settled();
    // ctx.rateLimited: not a failed attempt; the worker pauses the limit and
    // holds the job back (unless a cancellation or a time limit ended it first).
    if (caught instanceof UpstreamRateLimit && !aborted) throw caught;
    const { error, thrown } = classify(caught, aborted, task, job, log());
    // A shutdown that handed the job back already ended this attempt as
    // interrupted (the job is in its queue again, its attempt not spent):
    // it is not a failed attempt, so it leaves no failure row.
    const handedBack = aborted?.name === 'WorkerShutdown';
    if (!handedBack) await logFailedAttempt(job, attempt, startedAt, error, log());
    throw thrown;
  } finally {
    for (const t of timers) clearTimeout(t);
    opts.stop.clear();
  }
}

/**
 * Decides what an attempt's error means: a cancellation or a time limit wins
 * over whatever the handler threw while being stopped (an explicit
 * `ctx.retry` excepted: it may be the handler's answer to its soft limit);
 * then `ctx.retry`, retried whatever `retryOn` says; then the task's
 * `retryOn`; then the non-retryable classes.
 */
function classify(caught: unknown, reason: Error | undefined, task: Task | undefined, job: Job, log: Logger): { error: Error; thrown: Error } {
  let error = caught instanceof Error ? caught : new Error(String(caught));
  if (reason instanceof JobCancelled) error = reason;
  else if (reason instanceof SoftTimeLimitExceeded && !(error instanceof Retry) && !isHardTimeLimit(error) && error !== reason) {
    // The handler gave up after its soft limit: the soft limit ended it, and
    // the record says so (the handler's own error stays as the cause).
    error = new SoftTimeLimitExceeded(reason.limitMs, { cause: error });
  }
  if (error instanceof Retry && (job.attemptsMade ?? 0) + 1 >= maxAttemptsOf(job.opts)) {
    // BullMQ's own test (Job.shouldRetryJob): no attempt is left, so the job
    // fails. Saying so beats a bare "Retry" as the final error.
    error = new MaxRetriesExceededError(error.reason, maxAttemptsOf(job.opts), { cause: error });
  }
  log.info({ error: { type: error.name, message: error.message } }, 'job attempt failed');
  const retryable =
    error instanceof Retry || (!(error instanceof NonRetryableError) && !(error instanceof InvalidInputError) && !(error.name === 'JobCancelled') && (task?.retryOn ? task.retryOn(error) : true));
  // The Retry itself reaches BullMQ: the worker's backoff strategy reads its delay.
  if (retryable) return { error, thrown: error };
  const unrecoverable = new UnrecoverableError(error.message);
  unrecoverable.stack = error.stack ?? `${error.name}: ${error.message}`;
  return { error, thrown: unrecoverable };
}

/**
 * Keeps this attempt's error and times in the job's BullMQ log (the hash
 * keeps only the last error). Written before BullMQ records the failure, so
 * the row exists when the recorder sees the event. Costs one write, on the
 * failure path only; a failed write loses history, never the job.
 */
async function logFailedAttempt(job: Job, attempt: number, startedAt: number, error: Error, log: Logger): Promise<void> {
  const stack = boundedStack(error.stack);
  const row: AttemptLogRow = {
    celerity_attempt: attempt,
    started_at: startedAt,
    finished_at: Date.now(),
    error: { type: error.name, message: error.message, ...(stack ? { stack } : {}) },
  };
  try {
    await job.log(JSON.stringify(row));
  } catch (err) {
    log.warn({ err }, 'attempt history not written');
  }
}

/**
 * A stack within {@link MAX_ATTEMPT_STACK_BYTES}: whole frames, the first
 * ones (where the error was thrown), and a line saying how many were cut.
 */
export function boundedStack(stack: string | undefined): string | undefined {
  if (!stack) return undefined;
  if (Buffer.byteLength(stack) <= MAX_ATTEMPT_STACK_BYTES) return stack;
  const lines = stack.split('\n');
  const kept: string[] = [];
  let bytes = 40; // room for the note
  for (const line of lines) {
    const size = Buffer.byteLength(line) + 1;
    if (bytes + size > MAX_ATTEMPT_STACK_BYTES) break;
    kept.push(line);
    bytes += size;
  }
  // A first line longer than the bound (a huge message): cut by characters.
  if (kept.length === 0)
    return `${Buffer.from(stack)
      .subarray(0, MAX_ATTEMPT_STACK_BYTES - 40)
      .toString()
      .replace(/\uFFFD$/, '')}\n    … (cut)`;
  return `${kept.join('\n')}\n    … ${lines.length - kept.length} more lines`;
}
