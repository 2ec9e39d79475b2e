import type { JobRecord } from '../job-record.ts';
import { JOB_STATUSES } from '../job-record.ts';

/** What a view may show beyond the defaults. */
export interface JobViewOptions {
  /** Whole stacks (the job's error and each attempt's): they reveal the server's paths, so only admins may ask (`?stacks=true`). */
  stacks?: boolean;
}

/** The job as the API shows it: snake_case, ISO-8601 times. */
export function jobView(r: JobRecord, opts: JobViewOptions = {}) {
  const stacks = opts.stacks === true;
  return {
    job_id: r.id,
    task: r.task,
    queue: r.queue,
    tenant: r.tenant,
    // A record from before key ids (a cancel marker written by an older version) has none.
    key_id: r.keyId ?? null,
    retry_of: r.retryOf ?? null,
    ...(r.retriedBy ? { retried_by: r.retriedBy } : {}),
    status: r.status,
    run_at: iso(r.runAt ?? null),
    input: inputView(r.input),
    progress: r.progress,
    result: r.result,
    error: r.error && { ...r.error, stack: stacks ? r.error.stack : withoutFrames(r.error.stack) },
    attempts: r.attempts,
    max_attempts: r.maxAttempts,
    waiting: r.waiting ? { reason: r.waiting.reason, key: r.waiting.key, until: iso(r.waiting.until) } : null,
    created_at: iso(r.createdAt),
    started_at: iso(r.startedAt),
    finished_at: iso(r.finishedAt),
    attempt_history: (r.attemptHistory ?? []).map((a) => ({
      attempt: a.attempt,
      status: a.status,
      started_at: iso(a.startedAt),
      finished_at: iso(a.finishedAt),
      error: a.error && { type: a.error.type, message: a.error.message, ...(stacks ? { stack: a.error.stack ?? null } : {}) },
    })),
    ...(r.steps
      ? {
          steps: r.steps.map((s, i) => ({
            step: i + 1,
            job_id: s.id,
            task: s.task,
            stage: s.stage,
            status: s.status,
            progress: s.progress,
            error: s.error && { ...s.error, stack: withoutFrames(s.error.stack) },
            started_at: iso(s.startedAt),
            finished_at: iso(s.finishedAt),
          })),
        }
      : {}),
  };
}

/**
 * The input as submitted, but an upload handle (`POST /v1/uploads` puts one
 * in `file`) without its `path`: where the API and the workers store files
 * is the server's, not the client's; the id, name, type and size say which
 * file it was.
 */
function inputView(input: unknown): unknown {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return input ?? null;
  const file = (input as { file?: unknown }).file;
  if (file === null || typeof file !== 'object' || !('upload_id' in file) || !('path' in file)) return input;
  const { path: _path, ...handle } = file as Record<string, unknown>;
  return { ...input, file: handle };
}

/**
 * A stack's header (type and message) without its frames: frames show the
 * server's paths to every API client. They stay in the SQL history, and in
 * the worker's log line of the failed attempt.
 */
function withoutFrames(stack: string | null | undefined): string | null {
  if (stack === null || stack === undefined) return null;
  const frame = stack.search(/\n\s+at /);
  return frame === -1 ? stack : stack.slice(0, frame);
}

function iso(ms: number | null): string | null {
  return ms === null || ms === undefined ? null : new Date(ms).toISOString();
}

const nullableTime = { type: ['string', 'null'], format: 'date-time' } as const;

/** A job's or an attempt's error (null when none); `stack` says which stack it carries. */
const errorSchema = (stack: string) =>
  ({
    anyOf: [
      { type: 'null' },
      {
        type: 'object',
        properties: { type: { type: 'string' }, message: { type: 'string' }, stack: { type: ['string', 'null'], description: stack } },
      },
    ],
  }) as const;

export const jobViewSchema = {
  $id: 'Job',
  type: 'object',
  properties: {
    job_id: { type: 'string' },
    task: { type: 'string' },
    queue: { type: 'string' },
    tenant: { type: ['string', 'null'] },
    key_id: { type: ['string', 'null'], description: 'Public id of the API key that submitted the job; null when none did.' },
    retry_of: { type: ['string', 'null'], description: 'The job this one retries (POST /v1/jobs/{id}/retry); null for a job submitted as such.' },
    retried_by: {
      type: 'array',
      items: { type: 'string' },
      description: 'The jobs that retry this one, oldest first (at most 50). Only in GET /v1/jobs/{id}.',
    },
    status: { type: 'string', enum: [...JOB_STATUSES] },
    run_at: {
      ...nullableTime,
      description: 'When a delayed job (a `delay`, or a retry waiting out its backoff) is due; null for any other job, and once Redis no longer holds it. Such a job can be promoted.',
    },
    input: { description: "The task's input as submitted (an uploaded file's handle without its server path)." },
    progress: { description: 'Latest progress snapshot: percent, stage and any counters.' },
    result: { description: 'What the handler returned, once completed.' },
    error: errorSchema("The error's first lines, without the frames; the whole stack with `?stacks=true`, for `admin` keys only (frames reveal the server's paths)."),
    attempts: { type: 'integer', description: 'Attempts started so far.' },
    max_attempts: { type: 'integer' },
    waiting: {
      description:
        "Why a queued job waits: the limit that last held it back (`rate_limit`: a rate limit's window is full; `rate_limit_pause`: `ctx.rateLimited` paused it; `tenant_cap`: its tenant runs its cap of jobs), its label, and when the hold ends. Null otherwise, and in reads from the history.",
      anyOf: [
        { type: 'null' },
        {
          type: 'object',
          properties: { reason: { type: 'string', enum: ['rate_limit', 'rate_limit_pause', 'tenant_cap'] }, key: { type: 'string' }, until: { type: 'string', format: 'date-time' } },
          required: ['reason', 'key', 'until'],
        },
      ],
    },
    created_at: { type: 'string', format: 'date-time' },
    started_at: nullableTime,
    finished_at: nullableTime,
    attempt_history: {
      type: 'array',
      description: 'Every attempt: `interrupted` means its worker died or handed it back before it ended.',
      items: {
        type: 'object',
        properties: {
          attempt: { type: 'integer' },
          status: { type: 'string', enum: ['running', 'completed', 'failed', 'interrupted'] },
          started_at: nullableTime,
          finished_at: nullableTime,
          error: errorSchema("This attempt's stack (at most 4 KB), only with `?stacks=true` (admin keys); null for attempts from before stacks were kept."),
        },
      },
    },
    steps: {
      type: 'array',
      description: "A workflow's steps in the order they can run (only on a workflow's root job).",
      items: {
        type: 'object',
        properties: {
          step: { type: 'integer' },
          job_id: { type: 'string' },
          task: { type: 'string' },
          stage: { type: ['string', 'null'] },
          status: { type: 'string', enum: [...JOB_STATUSES, 'unknown'] },
          progress: {},
          error: { anyOf: [{ type: 'null' }, { type: 'object', properties: { type: { type: 'string' }, message: { type: 'string' }, stack: { type: ['string', 'null'] } } }] },
          started_at: nullableTime,
          finished_at: nullableTime,
        },
      },
    },
  },
  required: ['job_id', 'task', 'queue', 'status', 'attempts', 'created_at'],
} as const;
