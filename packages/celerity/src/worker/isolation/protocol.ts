import type { ProgressUpdate } from '../../task.ts';
import type { LoggedLine } from '../job-log.ts';

/** An error crossing the thread boundary. */
export interface WireError {
  name: string;
  message: string;
  stack?: string | undefined;
  nonRetryable: boolean;
  /** Set for a `ctx.retry()`: the parent rebuilds the Retry, whose delay BullMQ's backoff reads. */
  retry?: { reason: string; delay: number | undefined } | undefined;
  /** Set for a `ctx.rateLimited(ms)`: the parent rebuilds the UpstreamRateLimit, which pauses the limit and holds the job. */
  rateLimited?: { ms: number } | undefined;
}

/** Parent → thread. */
export type ToThread =
  | {
      type: 'run';
      jobId: string;
      task: string;
      queue: string;
      tenant: string | null;
      attempt: number;
      maxAttempts: number;
      input: unknown;
    }
  | { type: 'abort'; reason: WireError };

/** Thread → parent. */
export type FromThread =
  | { type: 'ready' }
  | { type: 'progress'; update: ProgressUpdate }
  /** A line the handler logged through `ctx.log` (info and above): the parent keeps it in the job's log. */
  | { type: 'log'; line: LoggedLine }
  | { type: 'done'; result: unknown; heapUsed: number }
  | { type: 'failed'; error: WireError; heapUsed: number };
