/**
 * Every route of the job API the page uses, in one place. Some belong to
 * APIs being built beside the dashboard (retry, delete, bulk, stats, events,
 * the richer job search): when a server does not have one yet it answers a
 * route 404 (`ApiError.routeMissing`), and the page says so instead of
 * failing. Adjust here when their contracts settle.
 */
import { request, type Query } from './http.ts';

export type Scope = 'jobs:submit' | 'jobs:read' | 'jobs:cancel' | 'jobs:retry' | 'ops:read' | 'admin';

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
  /** Not in today's job view; shown when the API carries it. */
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
  /** Not in today's job view; shown when the API carries it. */
  logs?: string[];
}

export interface QueueView {
  name: string;
  counts: Record<string, number>;
  paused: boolean;
  oldest_waiting_age_ms: number | null;
  throughput: { completed: { m1: number; m5: number; m15: number }; failed: { m1: number; m5: number; m15: number } };
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
  t: string | number;
  completed: number;
  failed: number;
  wait_p50?: number | null;
  wait_p95?: number | null;
  run_p50?: number | null;
  run_p95?: number | null;
}

export type BulkAction = 'retry' | 'cancel' | 'delete';

/** The scope each action needs; the buttons of a session without it are not shown (the API refuses anyway). */
export const ACTION_SCOPES = {
  cancel: 'jobs:cancel',
  retry: 'jobs:retry',
  delete: 'jobs:retry',
  bulk: { retry: 'jobs:retry', cancel: 'jobs:cancel', delete: 'jobs:retry' },
} as const satisfies Record<string, Scope | Record<BulkAction, Scope>>;

/** The query parameters of `GET /v1/jobs` the filter form offers; anything else goes through its free filter box. */
export const JOB_FILTERS = ['status', 'task', 'queue', 'tenant', 'key_id', 'id_prefix', 'error', 'created_after', 'created_before'] as const;

const path = encodeURIComponent;

export const endpoints = {
  session: () => request<SessionView>('GET', '/session', { under: 'dashboard' }),
  login: (key: string) => request<SessionView>('POST', '/login', { under: 'dashboard', body: { key } }),
  logout: () => request<void>('POST', '/logout', { under: 'dashboard' }),

  queues: () => request<{ queues: QueueView[] }>('GET', '/v1/queues'),
  workers: () => request<{ workers: WorkerView[] }>('GET', '/v1/workers'),
  stats: (query: Query) => request<{ series: StatsPoint[] } | StatsPoint[]>('GET', '/v1/stats', { query }),

  jobs: (query: Query, signal?: AbortSignal) => request<{ jobs: JobView[]; next_cursor: string | null }>('GET', '/v1/jobs', { query, signal }),
  job: (id: string, signal?: AbortSignal) => request<JobView>('GET', `/v1/jobs/${path(id)}`, { signal }),
  cancel: (id: string) => request<{ job_id: string; status: string }>('POST', `/v1/jobs/${path(id)}/cancel`),
  /** A new job; with `input`, "retry with edited input". */
  retry: (id: string, input?: unknown) => request<{ job_id: string }>('POST', `/v1/jobs/${path(id)}/retry`, input === undefined ? {} : { body: { input } }),
  remove: (id: string) => request<unknown>('DELETE', `/v1/jobs/${path(id)}`),

  bulk: (action: BulkAction, filter: Record<string, string>, dryRun: boolean) => request<{ count?: number; id?: string }>('POST', '/v1/bulk', { body: { action, filter, dry_run: dryRun } }),
  bulkStatus: (id: string) => request<Record<string, unknown>>('GET', `/v1/bulk/${path(id)}`),
};
