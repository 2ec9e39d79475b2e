/**
 * Every route of the job API the page uses, in one place, typed as the
 * routes' response schemas (src/api/routes/) say.
 */
import { request, type Query } from './http.ts';

export type Scope = 'jobs:submit' | 'jobs:read' | 'jobs:cancel' | 'jobs:retry' | 'jobs:delete' | 'ops:read' | 'admin';

export interface SessionView {
  auth: 'keys' | 'off';
  key_id: string | null;
  name: string;
  tenant: string | null;
  scopes: Scope[];
  tasks: string[] | null;
  csrf_token: string | null;
  expires_at: string | null;
}

export const JOB_STATUSES = ['queued', 'started', 'retrying', 'completed', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled']);

export interface JobErrorView {
  type: string;
  message: string;
  stack?: string | null;
}

export interface AttemptView {
  attempt: number;
  status: 'running' | 'completed' | 'failed' | 'interrupted';
  started_at: string | null;
  finished_at: string | null;
  error: JobErrorView | null;
}

export interface StepView {
  step: number;
  job_id: string;
  task: string;
  stage: string | null;
  status: string;
  progress?: unknown;
  error: JobErrorView | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface JobView {
  job_id: string;
  task: string;
  queue: string;
  tenant: string | null;
  key_id: string | null;
  status: string;
  progress?: Record<string, unknown> | null;
  /** Not in the API's job view (src/api/job-view.ts) yet; shown when it carries it. */
  input?: unknown;
  result?: unknown;
  error?: JobErrorView | null;
  attempts: number;
  max_attempts?: number;
  created_at: string;
  started_at?: string | null;
  finished_at?: string | null;
  attempt_history?: AttemptView[];
  steps?: StepView[];
  /** The job this one retries (the retry API sets it). */
  retry_of?: string | null;
  /** Why a queued job waits: the rate limit or tenant cap that last held it back. */
  waiting?: WaitingView | null;
  /** The jobs that retry this one, oldest first (a failed or cancelled job's read only). */
  retried_by?: string[];
  /** When a delayed job is due; null for any other: only such a job can be promoted ("Run now"). */
  run_at?: string | null;
}

/** One line of GET /v1/jobs/:id/logs. */
export interface LogLineView {
  time: string;
  level: 'info' | 'warn' | 'error' | 'fatal';
  attempt: number;
  message: string;
  data?: Record<string, unknown>;
  truncated?: boolean;
}

export interface LogsPage {
  job_id: string;
  lines: LogLineView[];
  total: number;
  next_offset: number | null;
}

export interface WaitingView {
  reason: 'rate_limit' | 'rate_limit_pause' | 'tenant_cap';
  key: string;
  until: string;
}

export interface QueueView {
  name: string;
  counts: Record<string, number>;
  paused: boolean;
  oldest_waiting_age_ms: number | null;
  throughput: { completed: { m1: number; m5: number; m15: number }; failed: { m1: number; m5: number; m15: number } };
}

/** One tenant of GET /v1/queues/:name/tenants. */
export interface TenantView {
  tenant: string | null;
  backlog: number;
  running: number;
  wait_p95_ms: number | null;
  throughput_per_min: number;
  weight: number;
}

export interface TenantsView {
  queue: string;
  fair: boolean;
  sampled: number;
  sample_span_ms: number;
  truncated: boolean;
  tenants: TenantView[];
}

export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  queues: string[];
  concurrency: number;
  active_jobs: { id: string; task: string; queue: string }[];
  started_at: string;
  last_beat_at: string;
  age_ms: number;
}

export interface StatsPoint {
  t: string;
  completed: number;
  failed: number;
  cancelled: number;
  retries: number;
  wait_p50: number | null;
  wait_p95: number | null;
  run_p50: number | null;
  run_p95: number | null;
}

export interface StatsView {
  granularity: 'minute' | 'hour';
  by: 'task' | 'queue' | 'all';
  from: string;
  to: string;
  series: { queue: string | null; task: string | null; points: StatsPoint[] }[];
}

export interface ScheduleView {
  id: string;
  task: string;
  queue: string;
  every_ms: number | null;
  cron: string | null;
  tz: string | null;
  next_run_at: string | null;
  iterations: number | null;
  last_run: { job_id: string; status: string; started_at: string | null; finished_at: string | null } | null;
}

export type BulkAction = 'retry' | 'cancel' | 'delete';

/** The filter of `POST /v1/bulk`: a subset of `GET /v1/jobs`' (no queue, no search). */
/** The filter of POST /v1/bulk: the filters of GET /v1/jobs, `where` as an array of conditions. */
export type BulkFilter = Partial<Record<(typeof JOB_FILTERS)[number], string | string[]>>;

export interface OperationView {
  operation_id: string;
  action: BulkAction;
  filter: BulkFilter;
  status: 'queued' | 'running' | 'stopping' | 'completed' | 'stopped' | 'failed';
  matched: number;
  done: number;
  failed: number;
  errors?: { job_id: string; code: string; message: string }[];
  key_id?: string | null;
  key_name: string;
  tenant?: string | null;
  all_tenants?: boolean;
  created_at: string;
  started_at?: string | null;
  finished_at?: string | null;
}

export const OPERATION_DONE: ReadonlySet<string> = new Set(['completed', 'stopped', 'failed']);

/** The scope each action needs, as the routes declare it; the buttons of a session without it are not shown (the API refuses anyway). */
export const ACTION_SCOPES = {
  cancel: 'jobs:cancel',
  retry: 'jobs:retry',
  delete: 'jobs:delete',
  // POST /v1/jobs/:id/promote: "changes when a job runs, not what it does".
  promote: 'jobs:retry',
  bulk: { retry: 'jobs:retry', cancel: 'jobs:cancel', delete: 'jobs:delete' },
  // POST /v1/bulk/:id/stop.
  stopBulk: 'jobs:cancel',
} as const satisfies Record<string, Scope | Record<BulkAction, Scope>>;

/** The query parameters of `GET /v1/jobs` (docs/search.md) the filter form offers, each a field; `where` is repeatable, one condition a line. */
export const JOB_FILTERS = ['status', 'task', 'queue', 'tenant', 'key_id', 'id_prefix', 'error', 'created_after', 'created_before', 'finished_after', 'finished_before', 'where'] as const;

export interface JobsPage {
  jobs: JobView[];
  next_cursor: string | null;
  /** The search ran out of time: `jobs` is what it found, `next_cursor` continues the scan. */
  partial: boolean;
}

const path = encodeURIComponent;

export const endpoints = {
  session: () => request<SessionView>('GET', '/session', { under: 'dashboard' }),
  login: (key: string) => request<SessionView>('POST', '/login', { under: 'dashboard', body: { key } }),
  logout: () => request<void>('POST', '/logout', { under: 'dashboard' }),

  queues: () => request<{ queues: QueueView[] }>('GET', '/v1/queues'),
  pauseQueue: (name: string) => request<{ queue: string; paused: boolean }>('POST', `/v1/queues/${path(name)}/pause`),
  resumeQueue: (name: string) => request<{ queue: string; paused: boolean }>('POST', `/v1/queues/${path(name)}/resume`),
  drainQueue: (name: string) => request<{ queue: string; removed: number }>('POST', `/v1/queues/${path(name)}/drain`),
  /** Admin keys only (it names every tenant). */
  tenants: (queue: string) => request<TenantsView>('GET', `/v1/queues/${path(queue)}/tenants`),
  workers: () => request<{ workers: WorkerView[] }>('GET', '/v1/workers'),
  schedules: () => request<{ schedules: ScheduleView[] }>('GET', '/v1/schedules'),
  stats: (query: Query) => request<StatsView>('GET', '/v1/stats', { query }),

  jobs: (query: Query, signal?: AbortSignal) => request<JobsPage>('GET', '/v1/jobs', { query, signal }),
  /** `stacks`: whole stacks of the error and each attempt (admin sessions only: the API refuses others). */
  job: (id: string, signal?: AbortSignal, stacks = false) => request<JobView>('GET', `/v1/jobs/${path(id)}`, { signal, ...(stacks ? { query: { stacks: true } } : {}) }),
  cancel: (id: string) => request<{ job_id: string; status: string }>('POST', `/v1/jobs/${path(id)}/cancel`),
  /** A new job whose `retry_of` is this one; with `input`, "retry with edited input". */
  retry: (id: string, input?: unknown) => request<{ job_id: string; retry_of: string; status: string }>('POST', `/v1/jobs/${path(id)}/retry`, input === undefined ? {} : { body: { input } }),
  remove: (id: string) => request<{ job_id: string; deleted: boolean }>('DELETE', `/v1/jobs/${path(id)}`),
  promote: (id: string) => request<{ job_id: string; status: string }>('POST', `/v1/jobs/${path(id)}/promote`),
  logs: (id: string, offset: number, signal?: AbortSignal) => request<LogsPage>('GET', `/v1/jobs/${path(id)}/logs`, { query: { offset, limit: 200 }, signal }),

  bulkCount: (action: BulkAction, filter: BulkFilter) => request<{ count: number }>('POST', '/v1/bulk', { body: { action, filter, dry_run: true } }),
  bulkStart: (action: BulkAction, filter: BulkFilter) => request<OperationView>('POST', '/v1/bulk', { body: { action, filter, dry_run: false } }),
  bulkStatus: (id: string) => request<OperationView>('GET', `/v1/bulk/${path(id)}`),
  bulkStop: (id: string) => request<OperationView>('POST', `/v1/bulk/${path(id)}/stop`),
  audit: (cursor: string | null) => request<{ operations: OperationView[]; next_cursor: string | null }>('GET', '/v1/audit', { query: { limit: 50, cursor } }),
};
