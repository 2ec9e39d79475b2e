import { NonRetryableError } from '../errors.ts';

/**
 * An attempt that ran past its hard time limit, and the parent class of
 * {@link SoftTimeLimitExceeded}. Whether it is retried follows the task's
 * retry policy, like any other error.
 */
export class TimeLimitExceeded extends Error {
  readonly code: string = 'time_limit_exceeded';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TimeLimitExceeded';
  }
}

/**
 * The reason `ctx.signal` carries when a task's soft time limit passes. The
 * handler may catch it and clean up; the hard limit still applies. An attempt
 * that fails after it fired is recorded as `SoftTimeLimitExceeded`.
 *
 * It extends {@link TimeLimitExceeded} so that `retryOn: [TimeLimitExceeded]`
 * (written when soft-limit failures were reported as that class) still
 * retries them; test for this class first to tell the two apart.
 */
export class SoftTimeLimitExceeded extends TimeLimitExceeded {
  override readonly code: string = 'soft_time_limit_exceeded';
  /** The soft limit that passed, in ms. */
  readonly limitMs: number;
  constructor(limitMs: number, options?: ErrorOptions) {
    super(`soft time limit of ${limitMs} ms exceeded`, options);
    this.name = 'SoftTimeLimitExceeded';
    this.limitMs = limitMs;
  }
}

/** True for the hard limit's error, not the soft one's (its subclass). */
export function isHardTimeLimit(error: unknown): error is TimeLimitExceeded {
  return error instanceof TimeLimitExceeded && !(error instanceof SoftTimeLimitExceeded);
}

/** A job cancelled while queued or running. Never retried. */
export class JobCancelled extends NonRetryableError {
  override readonly code = 'job_cancelled';
  constructor(message = 'job cancelled') {
    super(message);
    this.name = 'JobCancelled';
  }
}

/** Milliseconds; unset means no limit. */
export interface TimeLimits {
  soft?: number | undefined;
  hard?: number | undefined;
}

/** Per-call limits win over the task's, which win over the configured defaults. */
export function effectiveLimits(...layers: (TimeLimits | undefined)[]): TimeLimits {
  const out: TimeLimits = {};
  for (const layer of layers) {
    if (!layer) continue;
    if (layer.soft !== undefined) out.soft = layer.soft;
    if (layer.hard !== undefined) out.hard = layer.hard;
  }
  // A soft limit at or past the hard one could never fire.
  if (out.soft !== undefined && out.hard !== undefined && out.soft >= out.hard) delete out.soft;
  return out;
}

/** Checks soft < hard, both positive; returns a message or null. */
export function limitsProblem(limits: TimeLimits): string | null {
  for (const key of ['soft', 'hard'] as const) {
    const v = limits[key];
    if (v !== undefined && (!Number.isInteger(v) || v <= 0)) return `${key} time limit must be a positive integer of milliseconds`;
  }
  if (limits.soft !== undefined && limits.hard !== undefined && limits.soft >= limits.hard) {
    return 'the soft time limit must be lower than the hard one';
  }
  return null;
}
