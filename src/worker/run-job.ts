import { UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { InvalidInputError, NonRetryableError } from '../errors.ts';
import type { JobEnvelope } from '../job-record.ts';
import { parseInput, type Task, type TaskContext } from '../task.ts';
import { ProgressReporter } from './progress.ts';

/** Thrown when a worker receives a job whose task it does not know. */
export class UnknownTaskInWorkerError extends NonRetryableError {
  override readonly code = 'unknown_task';
}

/**
 * Runs one attempt of a job: validates the input, builds the context, calls
 * the handler and returns its result for BullMQ to store. Errors that must not
 * be retried are handed to BullMQ as `UnrecoverableError`, keeping the
 * original stack (whose first line names the original class) for the record.
 */
export async function runJob(
  job: Job,
  task: Task | undefined,
  queue: string,
  baseLog: Logger,
  signal: AbortSignal,
): Promise<unknown> {
  const attempt = (job.attemptsMade ?? 0) + 1;
  const log = baseLog.child({ job_id: job.id, task: job.name, attempt, queue });
  try {
    if (!task) throw new UnknownTaskInWorkerError(`No task named "${job.name}" is registered in this worker`);
    const envelope = (job.data ?? {}) as JobEnvelope;
    const input = parseInput(task, envelope.input);
    const progress = new ProgressReporter(job, log);
    const ctx: TaskContext = {
      jobId: job.id!,
      task: task.name,
      queue,
      tenant: envelope.tenant ?? null,
      attempt,
      maxAttempts: job.opts.attempts ?? 1,
      signal,
      progress: (update) => progress.update(update),
      log,
    };
    log.debug('job started');
    const result = await task.handler(input, ctx);
    // The final snapshot must land before the job is marked completed.
    await progress.settled();
    log.debug('job completed');
    return result === undefined ? null : result;
  } catch (err) {
    const error = err instanceof Error ? err : new Error(String(err));
    log.info({ error: { type: error.name, message: error.message } }, 'job attempt failed');
    if (error instanceof NonRetryableError || error instanceof InvalidInputError) {
      const unrecoverable = new UnrecoverableError(error.message);
      unrecoverable.stack = error.stack ?? `${error.name}: ${error.message}`;
      throw unrecoverable;
    }
    throw error;
  }
}
