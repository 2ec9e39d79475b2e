import type { Job } from 'bullmq';
import type { ProgressUpdate } from './task.ts';
import type { FlowWiring, WorkflowInfo } from './workflows/compile.ts';
import type { WaitReason } from './rate-limits/held.ts';

/** The life of a job. `cancelled` arrives with the reliability work. */
export type JobStatus = 'queued' | 'started' | 'retrying' | 'completed' | 'failed' | 'cancelled';

export const JOB_STATUSES: readonly JobStatus[] = ['queued', 'started', 'retrying', 'completed', 'failed', 'cancelled'];
export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set(['completed', 'failed', 'cancelled']);

export interface JobError {
  type: string;
  message: string;
  stack: string | null;
}

/** One attempt of a job. `interrupted`: its worker died or gave it back before it ended. */
export interface AttemptRecord {
  attempt: number;
  status: 'running' | 'completed' | 'failed' | 'interrupted';
  startedAt: number | null;
  finishedAt: number | null;
  /** `stack`: the attempt's stack (at most {@link MAX_ATTEMPT_STACK_BYTES}), kept by workers since job logs; absent in older rows. */
  error: { type: string; message: string; stack?: string } | null;
}

/**
 * What a worker appends to the job's BullMQ log when an attempt fails: the
 * job hash keeps only the last error, the log keeps each one with its times.
 */
export interface AttemptLogRow {
  celerity_attempt: number;
  started_at: number;
  finished_at: number;
  error: { type: string; message: string; stack?: string };
}

/** The most of an attempt's stack its log row keeps (bytes of UTF-8, cut at a line end when one is near). */
export const MAX_ATTEMPT_STACK_BYTES = 4096;

/**
 * One line the handler logged through `ctx.log` (info and above), kept in
 * the same BullMQ job log as the attempt rows: `celerity_log` (the time, ms)
 * tells it from an {@link AttemptLogRow} (`celerity_attempt`).
 */
export interface JobLogRow {
  celerity_log: number;
  level: JobLogLevel;
  attempt: number;
  msg: string;
  /** The fields logged with the line (pino's merging object), when any and when they fit. */
  data?: Record<string, unknown>;
  /** Set when the line was cut to {@link MAX_JOB_LOG_LINE_BYTES}. */
  truncated?: true;
}

export type JobLogLevel = 'info' | 'warn' | 'error' | 'fatal';

/** The most log lines a job keeps (across its attempts); later lines are dropped, one line saying how many. */
export const MAX_JOB_LOG_LINES = 200;
/** The most bytes of one kept log line (its JSON row). */
export const MAX_JOB_LOG_LINE_BYTES = 2048;

/** The log lines among a job's log rows, oldest first; attempt rows and rows that are not Celerity's are skipped. */
export function jobLogLines(rows: readonly string[]): JobLogRow[] {
  const lines: JobLogRow[] = [];
  for (const raw of rows) {
    // Attempt rows are the only other kind: skip them without parsing.
    if (!raw.startsWith('{"celerity_log":')) continue;
    try {
      const row = JSON.parse(raw) as JobLogRow;
      if (typeof row.celerity_log === 'number' && typeof row.msg === 'string') lines.push(row);
    } catch {
      // Not one of ours.
    }
  }
  return lines;
}

/** One job as Celerity reports it, whether read from Redis or from SQL. Times are epoch ms. */
export interface JobRecord {
  id: string;
  task: string;
  queue: string;
  tenant: string | null;
  /** Public id of the API key that submitted the job; null when none did (the library, a schedule, authentication off). */
  keyId: string | null;
  /** Id of the failed or cancelled job this one retries (`app.retry`); absent for any other job. */
  retryOf?: string;
  status: JobStatus;
  /** Attempts started so far. */
  attempts: number;
  maxAttempts: number;
  input: unknown;
  result: unknown;
  error: JobError | null;
  progress: ProgressUpdate | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** When a delayed job (a delay, or a retry's backoff) is due: live reads of a delayed job only. */
  runAt?: number;
  /** Jobs that retry this one (`app.retry`), oldest first (filled by the API's single-job read). */
  retriedBy?: string[];
  /** Every attempt with its outcome, error and times (filled by single-job reads). */
  attemptHistory?: AttemptRecord[];
  /** A workflow root's steps, as read from its envelope (live reads only). */
  workflow?: WorkflowInfo;
  /** A workflow root's steps with their state (filled by single-job reads). */
  steps?: StepRecord[];
  /** Why a queued job waits: the rate limit or tenant cap that last held it back (live single-job reads only). */
  waiting?: WaitReason;
}

/** One step of a workflow as GET /v1/jobs/:id shows it. */
export interface StepRecord {
  id: string;
  task: string;
  stage: string | null;
  status: JobStatus | 'unknown';
  progress: ProgressUpdate | null;
  error: JobError | null;
  startedAt: number | null;
  finishedAt: number | null;
}

/** What Celerity puts in a BullMQ job's `data`. */
export interface JobEnvelope {
  input: unknown;
  tenant?: string | null;
  /** Public id of the API key that submitted the job. */
  keyId?: string;
  /** Id of the job this one retries (`app.retry`). */
  retryOf?: string;
  /** Per-call time limits (ms), over the task's. */
  limits?: { soft?: number; hard?: number };
  /** Digest of task and input when enqueued with an idempotency key. */
  digest?: string;
  /** Correlation id of the request that submitted the job (X-Request-Id); carried into the worker's logs. */
  trace?: string;
  /**
   * On a fair queue only, the job's priority: there it orders the tenant's
   * backlog and is kept out of BullMQ's options (src/fairness/park.ts), so
   * the envelope is where an operator's retry finds it.
   */
  priority?: number;
  /** A workflow job's wiring: where its input comes from (src/workflows). */
  flow?: FlowWiring;
  /** On a workflow's root only: its steps. */
  workflow?: WorkflowInfo;
}

/** Maps a BullMQ state to a Celerity status; null when the job is unknown to Redis. */
export function statusFromState(state: string, attemptsMade: number): JobStatus | null {
  switch (state) {
    case 'completed':
      return 'completed';
    case 'failed':
      return 'failed';
    case 'active':
      return 'started';
    case 'waiting':
    case 'prioritized':
    case 'delayed':
    case 'waiting-children':
      return attemptsMade > 0 ? 'retrying' : 'queued';
    default:
      return null;
  }
}

/**
 * The error class name from a stack's first line ("TypeError: boom"): BullMQ
 * keeps only the message and the stack, and the stack starts with the name.
 */
export function errorTypeFromStack(stack: string | null | undefined): string {
  const match = stack ? /^([A-Za-z_$][\w$]*)(?::|\s*$)/.exec(stack.split('\n', 1)[0]!.trim()) : null;
  return match ? match[1]! : 'Error';
}

/**
 * The fields of a BullMQ job a record is built from: a `Job`, or the same
 * fields read from its hash without building one (the recorder's
 * `readJobFactsAt`, src/broker/job-hashes.ts).
 */
export type JobFacts = Pick<
  Job,
  'id' | 'name' | 'data' | 'opts' | 'attemptsStarted' | 'attemptsMade' | 'returnvalue' | 'failedReason' | 'stacktrace' | 'progress' | 'timestamp' | 'processedOn' | 'finishedOn'
>;

export function errorFromJob(job: JobFacts): JobError | null {
  if (!job.failedReason) return null;
  const stack = job.stacktrace?.length ? job.stacktrace[job.stacktrace.length - 1]! : null;
  return { type: errorTypeFromStack(stack), message: job.failedReason, stack };
}

function progressFromJob(job: JobFacts): ProgressUpdate | null {
  const p = job.progress as unknown;
  return p && typeof p === 'object' ? (p as ProgressUpdate) : null;
}

/**
 * The attempts a job may make. BullMQ stores `attempts: 0` for a job added
 * without the option (raw BullMQ, another producer) and runs it once, as it
 * does a job of `attempts: 1` (`Job.shouldRetryJob`): both are one attempt.
 */
export function maxAttemptsOf(opts: { attempts?: number }): number {
  return Math.max(1, opts.attempts ?? 1);
}

/** Builds the record of a BullMQ job whose status is already known. */
export function recordFromJob(job: JobFacts, queue: string, status: JobStatus): JobRecord {
  const data = (job.data ?? {}) as JobEnvelope;
  // A running job that was cancelled ends in BullMQ's failed set with a
  // JobCancelled error: that is the `cancelled` status.
  if (status === 'failed' && errorTypeFromStack(job.stacktrace?.[job.stacktrace.length - 1]) === 'JobCancelled') status = 'cancelled';
  return {
    id: job.id!,
    task: job.name,
    queue,
    tenant: data.tenant ?? null,
    keyId: data.keyId ?? null,
    // Only on retries: records of other jobs stay as they were before retries existed.
    ...(data.retryOf ? { retryOf: data.retryOf } : {}),
    status,
    attempts: Math.max(job.attemptsStarted ?? 0, job.attemptsMade ?? 0),
    maxAttempts: maxAttemptsOf(job.opts),
    input: data.input ?? null,
    result: status === 'completed' ? (job.returnvalue ?? null) : null,
    error: status === 'completed' ? null : errorFromJob(job),
    progress: progressFromJob(job),
    createdAt: job.timestamp,
    startedAt: job.processedOn ?? null,
    finishedAt: TERMINAL_STATUSES.has(status) ? (job.finishedOn ?? null) : null,
    ...(data.workflow ? { workflow: data.workflow } : {}),
  };
}

/**
 * Rebuilds the attempts of a job from its failed-attempt log rows and its
 * current record: logged attempts failed; the last one is the current
 * outcome; any other attempt left no row because its worker died.
 */
export function attemptHistory(record: JobRecord, logRows: readonly string[]): AttemptRecord[] {
  const failed = new Map<number, AttemptLogRow>();
  for (const raw of logRows) {
    // Log lines (JobLogRow) share the list: skipped without parsing.
    if (raw.startsWith('{"celerity_log":')) continue;
    try {
      const row = JSON.parse(raw) as AttemptLogRow;
      if (typeof row.celerity_attempt === 'number') failed.set(row.celerity_attempt, row);
    } catch {
      // Not one of ours.
    }
  }
  const history: AttemptRecord[] = [];
  for (let attempt = 1; attempt <= record.attempts; attempt++) {
    const row = failed.get(attempt);
    if (row) {
      history.push({ attempt, status: 'failed', startedAt: row.started_at, finishedAt: row.finished_at, error: row.error });
    } else if (attempt === record.attempts) {
      const status = record.status === 'completed' ? 'completed' : record.status === 'started' ? 'running' : 'interrupted';
      history.push({ attempt, status, startedAt: record.startedAt, finishedAt: status === 'completed' ? record.finishedAt : null, error: null });
    } else {
      history.push({ attempt, status: 'interrupted', startedAt: null, finishedAt: null, error: null });
    }
  }
  return history;
}
