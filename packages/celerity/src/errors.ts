/**
 * Typed errors with stable codes. The code is part of the public contract:
 * the HTTP API puts it in `{"error": {"code"}}` and callers may switch on it.
 */

/** One field that failed validation, addressed by its path in the input. */
export interface FieldIssue {
  /** Dotted path of the field, e.g. `input.items.2.qty`; empty for the root. */
  path: string;
  message: string;
}

export abstract class CelerityError extends Error {
  /** Stable, machine-readable code. */
  abstract readonly code: string;
  /** HTTP status the API answers with when this error escapes a route. */
  readonly httpStatus: number = 500;
  readonly details: unknown;

  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.details = details;
  }
}

/** Input failed the task's schema. Nothing was enqueued. */
export class InvalidInputError extends CelerityError {
  readonly code = 'invalid_input';
  override readonly httpStatus = 422;
  declare readonly details: { task: string; issues: FieldIssue[] };

  constructor(task: string, issues: FieldIssue[]) {
    const list = issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ');
    super(`Invalid input for task "${task}": ${list}`, { task, issues });
  }
}

/** No task of that name is registered in the app. */
export class UnknownTaskError extends CelerityError {
  readonly code = 'unknown_task';
  // 422, not 404: the route exists, the request names a task that does not.
  override readonly httpStatus = 422;

  /** `path` addresses the task in a bulk call, e.g. `items.3.task`. */
  constructor(task: string, known: string[], path?: string) {
    super(`Unknown task "${task}"${path ? ` (${path})` : ''}`, path ? { task, known, path } : { task, known });
  }
}

export class JobNotFoundError extends CelerityError {
  readonly code = 'job_not_found';
  override readonly httpStatus = 404;

  constructor(jobId: string) {
    super(`No job with id "${jobId}"`, { job_id: jobId });
  }
}

/** Redis could not be reached; the operation did not happen. */
export class BrokerUnavailableError extends CelerityError {
  readonly code = 'broker_unavailable';
  override readonly httpStatus = 503;

  constructor(cause: unknown) {
    super(`The broker (Redis) is unreachable: ${errorMessage(cause)}`, undefined, { cause });
  }
}

/** The SQL job store could not be reached. */
export class StoreUnavailableError extends CelerityError {
  readonly code = 'store_unavailable';
  override readonly httpStatus = 503;

  constructor(cause: unknown) {
    super(`The job store (SQL) is unreachable: ${errorMessage(cause)}`, undefined, { cause });
  }
}

/**
 * The database refused a value of the request (PostgreSQL's invalid byte
 * sequence, untranslatable character, invalid text representation, out of
 * range...): the client's input, not an outage. The API validates values
 * before they reach SQL; this is the net behind that.
 */
export class InvalidQueryValueError extends CelerityError {
  readonly code = 'invalid_request';
  override readonly httpStatus = 400;

  constructor(cause: unknown) {
    super(`A value of the request cannot be used in a query: ${errorMessage(cause)}`, null, { cause });
  }
}

/** A JSON document nests deeper than the API takes. Nothing was enqueued. */
export class RequestTooDeepError extends CelerityError {
  readonly code = 'invalid_request';
  override readonly httpStatus = 400;
  declare readonly details: { issues: FieldIssue[] };

  /** `path` is the dotted path of the field at fault, e.g. `body.input.tree`. */
  constructor(path: string, maxDepth: number) {
    const message = `nests deeper than ${maxDepth} levels`;
    super(`Invalid request: ${path} ${message}`, { issues: [{ path, message }] });
  }
}

/** A configuration value is invalid. Start-up stops with one line naming it. */
export class ConfigError extends CelerityError {
  readonly code = 'invalid_config';

  constructor(option: string, message: string) {
    super(`Invalid configuration ${option}: ${message}`, { option });
  }
}

/**
 * The store cannot start: the database is missing or unreachable, the
 * credentials are refused, a table clashes, or a driver is missing. The
 * message is one line naming the setting and the fix; the CLI prints it and
 * exits non-zero.
 */
export class StoreSetupError extends CelerityError {
  readonly code = 'store_setup';
  override readonly httpStatus = 503;
  /** `clash`: a table of the same name exists (a race looks alike, so it is retried first). */
  declare readonly details: { setting: string; fix: string; clash: boolean };

  constructor(setting: string, problem: string, fix: string, options?: ErrorOptions, clash = false) {
    super(`${setting}: ${problem}; ${fix}`, { setting, fix, clash }, options);
  }
}

/** A task definition or option is malformed (a programming error). */
export class TaskDefinitionError extends CelerityError {
  readonly code = 'invalid_task_definition';
}

/**
 * Throw from a handler to fail the job at once, without the remaining retries.
 * Invalid input fails this way too.
 */
export class NonRetryableError extends Error {
  readonly code: string = 'non_retryable';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * What `ctx.retry()` throws to end the attempt and ask for another one (like
 * Celery's `Retry`). Handlers should let it propagate: catching it cancels
 * the retry. It spends one attempt, is retried whatever the task's `retryOn`
 * says, and is recorded in the attempt history with the reason as message.
 */
export class Retry extends Error {
  readonly code = 'retry';
  /** Ms before the next attempt; undefined: the task's backoff decides. */
  readonly delay: number | undefined;
  readonly reason: string;

  constructor(reason: string, delay?: number) {
    super(reason);
    this.name = 'Retry';
    this.reason = reason;
    this.delay = delay;
  }
}

/**
 * Thrown by `ctx.rateLimited(ms)`: an upstream answered 429. The worker
 * pauses the task's rate-limit key (its tenant's, for a per-tenant limit) for
 * `ms` on every worker and puts the job back to wait that long; the attempt
 * is not spent. Let it propagate.
 */
export class UpstreamRateLimit extends Error {
  readonly code = 'upstream_rate_limit';
  /** Ms to pause the key and hold the job. */
  readonly ms: number;

  constructor(ms: number) {
    super(`upstream rate limit: paused for ${ms} ms`);
    this.name = 'UpstreamRateLimit';
    this.ms = ms;
  }
}

/**
 * `ctx.retry()` was called on the last attempt: the job fails with this
 * error, whose message carries the retry's reason.
 */
export class MaxRetriesExceededError extends NonRetryableError {
  override readonly code = 'max_retries_exceeded';
  readonly reason: string;

  constructor(reason: string, attempts: number, options?: ErrorOptions) {
    super(`retries exhausted after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${reason}`, options);
    this.reason = reason;
  }
}

/**
 * `ctx.retry()` got a bad delay (not an integer of ms in [0, 2^31)) or
 * reason. A programming error: the job fails at once, since every attempt
 * would make it again.
 */
export class InvalidRetryError extends NonRetryableError {
  override readonly code = 'invalid_retry';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Enqueue options are malformed (bad delay, priority, job id...). Nothing was enqueued. */
export class InvalidOptionsError extends CelerityError {
  readonly code = 'invalid_options';
  override readonly httpStatus = 422;
  declare readonly details: { issues: FieldIssue[] };

  constructor(issues: FieldIssue[]) {
    super(`Invalid options: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { issues });
  }
}

/** The job already finished (completed or failed); it cannot be cancelled. */
export class JobFinishedError extends CelerityError {
  readonly code = 'job_finished';
  override readonly httpStatus = 409;

  constructor(jobId: string, status: string) {
    super(`Job "${jobId}" already ${status}; only queued or running jobs can be cancelled`, { job_id: jobId, status });
  }
}

/** An idempotency key was reused with another task or input within its TTL. Nothing was enqueued. */
export class IdempotencyConflictError extends CelerityError {
  readonly code = 'idempotency_conflict';
  override readonly httpStatus = 409;

  constructor(key: string, jobId: string) {
    super(`Idempotency key "${key}" was already used for job "${jobId}" with a different task or input`, { idempotency_key: key, job_id: jobId });
  }
}

/** What a 429 counted: an API key's submissions or reads, or an address's failed authentications (api/auth-failure-limit.ts). */
export type RateBudget = 'submit' | 'read' | 'auth_failures';

/**
 * A caller (an API key, or an IP address when there is none) used up its
 * budget of requests for the current window, or an address failed to
 * authenticate too often (`auth_failures`). Nothing was done; the answer's
 * `Retry-After` says when the window ends.
 */
export class RateLimitedError extends CelerityError {
  readonly code = 'rate_limited';
  override readonly httpStatus = 429;
  declare readonly details: { budget: RateBudget; limit: number; window_ms: number; retry_after_s: number };

  constructor(budget: RateBudget, limit: number, windowMs: number, retryAfterS: number) {
    const within = `per ${windowMs / 1000} s; retry in ${retryAfterS} s`;
    const message =
      budget === 'auth_failures'
        ? `Too many failed authentications from this address: at most ${limit} ${within}`
        : `Rate limit exceeded: at most ${limit} ${budget === 'submit' ? 'submissions' : 'requests'} ${within}`;
    super(message, {
      budget,
      limit,
      window_ms: windowMs,
      retry_after_s: retryAfterS,
    });
  }
}

/**
 * A webhook names no task that takes webhooks: the app does not define it,
 * or the task has no `webhook` option. Both answer alike (404), so that an
 * unauthenticated caller cannot tell which tasks exist.
 */
export class UnknownHookError extends CelerityError {
  readonly code = 'unknown_hook';
  override readonly httpStatus = 404;

  constructor(task: string) {
    super(`No task named "${task}" takes webhooks here`, { task });
  }
}

/**
 * The request carries no valid API key (missing, malformed, unknown or
 * revoked; the answer does not say which of the last two). The API adds
 * `WWW-Authenticate: Bearer`.
 */
export class UnauthorizedError extends CelerityError {
  readonly code = 'unauthorized';
  override readonly httpStatus = 401;

  constructor(message: string) {
    super(message, null);
  }
}

/**
 * The API key is valid but may not do this: it lacks the route's scope, the
 * task is outside its task patterns, or the request names another tenant
 * than the key's. Nothing was enqueued or changed.
 */
export class ForbiddenError extends CelerityError {
  readonly code = 'forbidden';
  override readonly httpStatus = 403;

  constructor(message: string, details: { scope?: string; task?: string; field?: string }) {
    super(message, details);
  }
}

/** Why a webhook's signature was refused. */
export type SignatureProblem = 'missing' | 'malformed' | 'expired' | 'mismatch';

const SIGNATURE_PROBLEMS: Record<SignatureProblem, string> = {
  missing: 'the Celerity-Signature header is missing',
  malformed: 'the Celerity-Signature header is malformed (expected t=<unix seconds>,v1=<hex HMAC-SHA256>)',
  expired: "the signature's timestamp is outside the tolerance (a replay, or a clock off by too much)",
  mismatch: 'no v1 signature matches the body and timestamp',
};

/**
 * A webhook's signature is missing, malformed, too old or wrong. Nothing was
 * enqueued. The message says which, never what the signature should be.
 */
export class InvalidSignatureError extends CelerityError {
  readonly code = 'invalid_signature';
  override readonly httpStatus = 401;
  declare readonly details: { reason: SignatureProblem };
  readonly reason: SignatureProblem;

  constructor(reason: SignatureProblem) {
    super(`Invalid webhook signature: ${SIGNATURE_PROBLEMS[reason]}`, { reason });
    this.reason = reason;
  }
}

/** A request header is missing or not allowed (`header` in lower case, as in the schema's paths). Nothing was enqueued. */
export class InvalidHeaderError extends CelerityError {
  readonly code = 'invalid_request';
  override readonly httpStatus = 400;
  declare readonly details: { issues: FieldIssue[] };

  constructor(header: string, message: string) {
    const path = `headers.${header}`;
    super(`Invalid request: ${path} ${message}`, { issues: [{ path, message }] });
  }
}
