import type { Logger } from 'pino';
import { requestRateLimitPause, requestRetry, type ProgressUpdate, type TaskContext } from '../task.ts';

/** What the attempt makes only when the handler asks for it. */
export interface AttemptLazies {
  /** `ctx.signal`: made on first read (most handlers never read it). */
  signal(): AbortSignal;
  /** `ctx.log`: the job-bound logger, made on first read. */
  log(): Logger;
  /** `ctx.progress`. */
  progress(update: ProgressUpdate): Promise<void>;
}

/** The attempt's own fields, as the handler reads them. */
export type AttemptFields = Pick<TaskContext, 'jobId' | 'task' | 'queue' | 'tenant' | 'attempt' | 'maxAttempts'>;

/**
 * The `ctx` an inline handler gets.
 *
 * A class, not an object literal with `get signal()` and `get log()`: V8
 * makes such a literal in dictionary mode, with its accessor pairs (which
 * hold the getter closures) in the old generation. A scavenge treats old
 * objects as alive, so those accessor pairs, dead as soon as the attempt
 * ended, kept each attempt's getters and through them the whole attempt
 * (the BullMQ job, its data, the worker's closures) alive until a full
 * collection: 3-6 KB promoted per no-op job, scavenges 2-3 times as long as
 * raw BullMQ's (docs/benchmarks.md, run 10). Here the getters live once on
 * the prototype, and the context is an ordinary fast-mode object.
 *
 * `progress`, `retry` and `rateLimited` are own properties, not methods, so
 * that a handler may destructure them (`const { progress } = ctx`).
 */
export class AttemptContext implements TaskContext {
  readonly jobId: string;
  readonly task: string;
  readonly queue: string;
  readonly tenant: string | null;
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly progress: (update: ProgressUpdate) => Promise<void>;
  readonly retry = requestRetry;
  readonly rateLimited = requestRateLimitPause;
  readonly #lazy: AttemptLazies;

  constructor(fields: AttemptFields, lazy: AttemptLazies) {
    this.jobId = fields.jobId;
    this.task = fields.task;
    this.queue = fields.queue;
    this.tenant = fields.tenant;
    this.attempt = fields.attempt;
    this.maxAttempts = fields.maxAttempts;
    this.progress = lazy.progress;
    this.#lazy = lazy;
  }

  get signal(): AbortSignal {
    return this.#lazy.signal();
  }

  get log(): Logger {
    return this.#lazy.log();
  }
}
