import type { Logger } from 'pino';
import type { z } from 'zod';
import { InvalidInputError, InvalidRetryError, Retry, TaskDefinitionError, UpstreamRateLimit, type FieldIssue } from './errors.ts';
import { MAX_TIME_LIMIT_MS } from './limits.ts';
import { resolveRateLimit, type RateLimit, type ResolvedRateLimit } from './rate-limits/options.ts';
import { webhookOption, type Webhook, type WebhookOptions } from './webhook.ts';
import { limitsProblem, type TimeLimits } from './worker/limits.ts';

/** Where a task's handler runs: in the worker's event loop, or in a thread that can be terminated. */
export type Isolation = 'inline' | 'thread';

/** Error classes to retry, or a predicate; errors it rejects fail the job at once. */
export type RetryOn = (abstract new (...args: any[]) => Error)[] | ((error: Error) => boolean);

/** A progress snapshot: the well-known `percent` and `stage`, plus any counters. */
export interface ProgressUpdate {
  percent?: number;
  stage?: string;
  [counter: string]: unknown;
}

/** What a handler gets besides its input. */
export interface TaskContext {
  readonly jobId: string;
  readonly task: string;
  readonly queue: string;
  readonly tenant: string | null;
  /** 1 on the first run, 2 on the first retry, and so on. Use it to make a task idempotent. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Aborted when the job is cancelled, timed out or the worker is forced to stop. */
  readonly signal: AbortSignal;
  /**
   * Merges `update` into the job's progress snapshot in Redis. Calls are
   * coalesced: a burst of updates costs one write, and the latest wins.
   */
  progress(update: ProgressUpdate): Promise<void>;
  /** A pino logger bound to this job (job_id, task, attempt, queue). */
  readonly log: Logger;
  /**
   * Ends this attempt and schedules the next one, like Celery's
   * `self.retry(countdown=…)`: it throws a {@link Retry}, so code after it
   * does not run (let it propagate; catching it cancels the retry). The retry
   * spends one of the task's attempts, whatever `retryOn` says; on the last
   * attempt the job fails with `MaxRetriesExceededError` carrying the reason.
   * The attempt is recorded as failed with type `Retry` and the reason as its
   * message, and the job reads `retrying` until the next attempt starts.
   *
   * @param options.delay Ms before the next attempt, an integer in
   *   [0, 2^31); overrides the task's backoff for this retry only. Default:
   *   the task's backoff. A bad value throws `InvalidRetryError`, which fails
   *   the job.
   * @param options.reason Why; shown in the attempt history. Default `retry requested`.
   *
   * @example if (res.status === 429) ctx.retry({ delay: 30_000, reason: 'rate limited' });
   */
  retry(options?: RetryOptions): never;
  /**
   * Reports an upstream rate limit (an HTTP 429 and its `Retry-After`): the
   * task's `rateLimit` key (its tenant's, when `perTenant`) is paused for
   * `ms` on every worker, and this job goes back to wait as long without
   * spending an attempt. It throws, like {@link retry}: let it propagate. A
   * task without `rateLimit` has no key to pause: only this job waits.
   *
   * @param ms Ms to pause, an integer in [0, 2^31). A bad value throws
   *   `InvalidRetryError`, which fails the job.
   *
   * @example if (res.status === 429) ctx.rateLimited(Number(res.headers.get('retry-after') ?? 1) * 1000);
   */
  rateLimited(ms: number): never;
}

/** What {@link TaskContext.retry} takes. */
export interface RetryOptions {
  delay?: number;
  reason?: string;
}

/** BullMQ delays are setTimeout-bound: 2^31 ms and more would overflow. */
const MAX_RETRY_DELAY = 2 ** 31;

/**
 * The body of `ctx.retry`, shared by inline handlers and isolation threads:
 * validates the options and throws the {@link Retry} the worker turns into a
 * delayed retry.
 */
export function requestRetry(options: RetryOptions = {}): never {
  if (options === null || typeof options !== 'object') throw new InvalidRetryError('ctx.retry takes { delay?, reason? }');
  const { delay, reason = 'retry requested' } = options;
  if (delay !== undefined && !(Number.isInteger(delay) && delay >= 0 && delay < MAX_RETRY_DELAY)) {
    throw new InvalidRetryError(`ctx.retry: delay must be an integer of ms in [0, 2^31), got ${String(delay)}`);
  }
  if (typeof reason !== 'string') throw new InvalidRetryError('ctx.retry: reason must be a string');
  throw new Retry(reason, delay);
}

/** The body of `ctx.rateLimited`, shared by inline handlers and isolation threads. */
export function requestRateLimitPause(ms: number): never {
  if (!(Number.isInteger(ms) && ms >= 0 && ms < MAX_RETRY_DELAY)) {
    throw new InvalidRetryError(`ctx.rateLimited: ms must be an integer in [0, 2^31), got ${String(ms)}`);
  }
  throw new UpstreamRateLimit(ms);
}

/** Exponential backoff: `min(max, base * 2^(retry-1))`, optionally with full jitter. */
export interface BackoffPolicy {
  /** Milliseconds before the first retry (before jitter). */
  base: number;
  /** Longest wait in milliseconds. */
  max: number;
  /** `full` draws the wait uniformly in [0, computed]; `none` waits exactly the computed time. */
  jitter: 'full' | 'none';
}

export const DEFAULT_QUEUE = 'default';
export const DEFAULT_RETRIES = 3;
export const DEFAULT_BACKOFF: BackoffPolicy = { base: 2_000, max: 600_000, jitter: 'full' };

export interface TaskDefinition<S extends z.ZodType, R> {
  /** Unique name, used to enqueue by name and shown in the job record. */
  name: string;
  /** Zod schema of the input; checked before enqueue and again by the worker. */
  input: S;
  /** Routing queue (a BullMQ queue). Default `default`. */
  queue?: string;
  /** Retries after the first attempt. Default 3. */
  retries?: number;
  backoff?: Partial<BackoffPolicy>;
  /** Which errors are retried (default: all but `NonRetryableError` and invalid input). */
  retryOn?: RetryOn;
  /**
   * Time limits of one attempt, in ms. `soft` aborts `ctx.signal` with
   * `SoftTimeLimitExceeded`; `hard` ends the attempt with `TimeLimitExceeded`
   * (and terminates the thread of an isolated task). Default: configuration.
   */
  timeLimits?: TimeLimits;
  /**
   * `thread` runs the handler in a worker thread, which a hard time limit or a
   * cancellation can terminate even in a loop that never yields. The app must
   * know its module (`createApp({ module: import.meta.url })`, or `--app`).
   * `inline` (default) runs in the worker's event loop: cheaper, but code that
   * never yields cannot be stopped.
   */
  isolation?: Isolation;
  description?: string;
  /**
   * Content types this task accepts as an upload (`POST /v1/uploads`), e.g.
   * `['text/csv']`. The file is checked by its magic bytes as well as its
   * header. A task without `accepts` takes no uploads.
   */
  accepts?: string[];
  /**
   * Serve this task at `POST /v1/hooks/<name>`, where a third party's JSON
   * payload becomes its input, signed with `secret` (header
   * `Celerity-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`; see
   * docs/webhooks.md and `signWebhook`). A task without `webhook` takes no
   * webhooks: the route answers 404 as for an unknown task.
   *
   * @example webhook: { secret: process.env.TICKETS_WEBHOOK_SECRET! }
   */
  webhook?: WebhookOptions;
  /**
   * At most `max` starts of this task in any window of `per`, across every
   * worker of the cluster (Celery's `rate_limit`, but global); with
   * `perTenant: true`, per tenant. A job over the limit waits without
   * spending an attempt. See docs/semantics.md#rate-limits-and-tenant-caps.
   *
   * @example rateLimit: { max: 50, per: '1m' }
   */
  rateLimit?: RateLimit;
  handler: (input: z.output<S>, ctx: TaskContext) => Promise<R> | R;
}

/** A defined task. `I` is what callers pass, `R` what the handler returns. */
export interface Task<I = unknown, R = unknown> {
  readonly name: string;
  readonly queue: string;
  readonly retries: number;
  readonly backoff: BackoffPolicy;
  readonly retryOn: ((error: Error) => boolean) | undefined;
  readonly timeLimits: TimeLimits;
  readonly isolation: Isolation;
  readonly description: string | undefined;
  /** Content types accepted as an upload; empty when the task takes none. */
  readonly accepts: readonly string[];
  /** How the task takes signed webhooks; undefined when it takes none. */
  readonly webhook?: Webhook | undefined;
  /** The task's rate limit, its window in ms; undefined when it has none. */
  readonly rateLimit?: ResolvedRateLimit | undefined;
  readonly inputSchema: z.ZodType;
  readonly handler: (input: any, ctx: TaskContext) => Promise<R> | R;
  /** Type-only markers so the client can infer input and result types. */
  readonly __input?: I;
  readonly __result?: R;
}

export type TaskInput<T> = T extends Task<infer I, any> ? I : never;
export type TaskResult<T> = T extends Task<any, infer R> ? Awaited<R> : never;

const NAME = /^[A-Za-z0-9_.:-]{1,200}$/;
const QUEUE = /^[A-Za-z0-9_.-]{1,100}$/;

/** Checks a routing queue name; colons would split BullMQ's keys. */
export function assertQueueName(queue: string): void {
  if (!QUEUE.test(queue)) {
    throw new TaskDefinitionError(`Invalid queue name "${queue}": use letters, digits, '_', '.' or '-'`);
  }
}

/**
 * Defines a task: a name, a Zod schema for its input and a handler whose
 * return type becomes the job's result type.
 *
 * @example
 * const add = defineTask({
 *   name: 'math.add',
 *   input: z.object({ a: z.number(), b: z.number() }),
 *   handler: async ({ a, b }) => ({ sum: a + b }),
 * });
 */
export function defineTask<S extends z.ZodType, R>(def: TaskDefinition<S, R>): Task<z.input<S>, R> {
  if (!NAME.test(def.name)) {
    throw new TaskDefinitionError(`Invalid task name "${def.name}": use 1-200 letters, digits, '_', '.', ':' or '-'`);
  }
  const queue = def.queue ?? DEFAULT_QUEUE;
  assertQueueName(queue);
  const retries = def.retries ?? DEFAULT_RETRIES;
  if (!Number.isInteger(retries) || retries < 0) {
    throw new TaskDefinitionError(`Task "${def.name}": retries must be a non-negative integer`);
  }
  const backoff = { ...DEFAULT_BACKOFF, ...def.backoff };
  if (!(backoff.base >= 0) || !(backoff.max >= backoff.base)) {
    throw new TaskDefinitionError(`Task "${def.name}": backoff needs 0 <= base <= max`);
  }
  const timeLimits = def.timeLimits ?? {};
  const problem = limitsProblem(timeLimits);
  if (problem) throw new TaskDefinitionError(`Task "${def.name}": ${problem}`);
  // Node's timers overflow past 2^31 - 1 ms and fire at once: such a limit would end every attempt at its start.
  for (const key of ['soft', 'hard'] as const) {
    if ((timeLimits[key] ?? 0) > MAX_TIME_LIMIT_MS) {
      throw new TaskDefinitionError(`Task "${def.name}": ${key} time limit must be at most ${MAX_TIME_LIMIT_MS} ms (about 24.8 days)`);
    }
  }
  const isolation = def.isolation ?? 'inline';
  if (isolation !== 'inline' && isolation !== 'thread') {
    throw new TaskDefinitionError(`Task "${def.name}": isolation must be 'inline' or 'thread'`);
  }
  const accepts = def.accepts ?? [];
  if (!Array.isArray(accepts) || accepts.some((t) => typeof t !== 'string' || !/^[a-z]+\/[a-z0-9.+-]+$/.test(t))) {
    throw new TaskDefinitionError(`Task "${def.name}": accepts must list content types such as 'text/csv'`);
  }
  const webhook = webhookOption(`Task "${def.name}"`, def.webhook);
  const rateLimit = resolveRateLimit(`Task "${def.name}"`, def.rateLimit);
  if (typeof def.handler !== 'function') {
    throw new TaskDefinitionError(`Task "${def.name}": handler must be a function`);
  }
  return {
    name: def.name,
    queue,
    retries,
    backoff,
    retryOn: retryPredicate(def.retryOn),
    timeLimits,
    isolation,
    description: def.description,
    accepts,
    webhook,
    rateLimit,
    inputSchema: def.input,
    handler: def.handler,
  };
}

function retryPredicate(retryOn: RetryOn | undefined): ((error: Error) => boolean) | undefined {
  if (retryOn === undefined) return undefined;
  if (typeof retryOn === 'function') return retryOn;
  const classes = retryOn;
  // Errors from an isolation thread arrive as plain Errors with the original
  // name, so a class also matches by name.
  return (error: Error) => classes.some((cls) => error instanceof cls || (error as Error).name === cls.name);
}

/** Validates input against a task's schema, throwing {@link InvalidInputError} with every bad field. */
export function parseInput(task: Pick<Task, 'name' | 'inputSchema'>, input: unknown): unknown {
  const result = task.inputSchema.safeParse(input);
  if (result.success) return result.data;
  throw new InvalidInputError(task.name, zodIssues(result.error));
}

export function zodIssues(error: z.ZodError): FieldIssue[] {
  return error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message }));
}

/** The wait before retry number `retry` (1-based). */
export function backoffDelay(policy: BackoffPolicy, retry: number, random: () => number = Math.random): number {
  const computed = Math.min(policy.max, policy.base * 2 ** Math.max(0, retry - 1));
  return Math.round(policy.jitter === 'full' ? random() * computed : computed);
}
