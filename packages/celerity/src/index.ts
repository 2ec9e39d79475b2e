export { App, createApp, isApp, type ApiRoutes, type AppOptions, type JobHandle } from './app.ts';
export { defineTask, backoffDelay, type Task, type TaskContext, type TaskDefinition, type TaskInput, type TaskResult, type BackoffPolicy, type ProgressUpdate } from './task.ts';
export { loadConfig, OPTIONS, type CelerityConfig, type RawConfig } from './config.ts';
export type { EnqueueOptions } from './client/enqueue.ts';
export type { EnqueueManyItem } from './app.ts';
export { MAX_BULK_JOBS } from './client/enqueue-many.ts';
export type { JobRecord, JobStatus, JobError } from './job-record.ts';
export * from './errors.ts';
export { JobCancelled, SoftTimeLimitExceeded, TimeLimitExceeded, type TimeLimits } from './worker/limits.ts';
export type { RetryOptions } from './task.ts';
export { Worker } from './worker/worker.ts';
export { HealthServer, startHealthServer, type HealthServerOptions } from './worker/health-server.ts';
export type { Metrics } from './ops/metrics.ts';
export { Recorder } from './store/recorder.ts';
export { JobStore } from './store/job-store.ts';
export type { Dialect } from './store/db.ts';
export { defineTables, type TableHandle, type TableSet } from './store/tables.ts';
export type { SqliteDatabase, SqliteStatement } from './store/sqlite-driver.ts';

// Loaded on first use (api/lazy.ts): most processes never serve HTTP.
export { buildServer, celerityApi, celerityDashboard } from './api/lazy.ts';
export type { ServerOptions } from './api/server.ts';
export type { CelerityApiOptions } from './api/plugin.ts';
export type { CelerityDashboardOptions } from './dashboard/plugin.ts';
export { signWebhook, verifyWebhook, type VerifiedWebhook, type VerifyWebhookOptions } from './api/webhook-signature.ts';
export type { Webhook, WebhookOptions, WebhookSecret, WebhookSecretLookup } from './webhook.ts';
export { clientErrorHandler as celerityClientErrorHandler, frameworkErrorHandler as celerityFrameworkErrors } from './api/errors.ts';
export { MAX_PARAM_LENGTH } from './limits.ts';
export { chain, chord, defineWorkflow, group, step, type WorkflowDefinition, type WorkflowNode } from './workflows/workflow.ts';
export { uploadRefSchema, type UploadRef } from './uploads/upload-ref.ts';
export type { JobEventInfo, LifecycleEvent, LifecycleHook } from './worker/lifecycle.ts';
export { schedule, type Schedule, type When } from './schedules/schedule.ts';
export { MAINTENANCE_QUEUE, MAINTENANCE_TASKS, type StuckJob } from './schedules/maintenance.ts';
export { startSchedulesInBackground, type ScheduleSync } from './schedules/sync.ts';
export { seededRandom } from './seeded-random.ts';
export { pgJson } from './store/pg-json.ts';
export { withTenantScope } from './store/tenant-scope.ts';
export {
  ALL_TENANTS,
  SCOPES,
  hasScope,
  isAdmin,
  principalOf,
  taskAllowed,
  taskPatternMatches,
  tenantScopeOf,
  type Principal,
  type RouteAuth,
  type Scope,
  type TenantScope,
} from './auth/principal.ts';
export { createKey, listKeys, revokeKey, type ApiKey, type NewKey } from './auth/key-store.ts';
export { JobActiveError, JobNotDelayedError, JobNotRetryableError, RetryInProgressError, type RetryJobOptions } from './client/job-actions.ts';
export { UnknownQueueError } from './ops/queue-control.ts';
export {
  BULK_ACTIONS,
  BulkOperationNotFoundError,
  BulkUnavailableError,
  type BulkAction,
  type BulkActor,
  type BulkFailure,
  type BulkFilter,
  type BulkOperation,
  type BulkStatus,
} from './ops/bulk/operations.ts';
export { BULK_TASK } from './ops/bulk/run.ts';
export type { StatsGranularity, StatsGrouping, StatsPoint, StatsQuery, StatsResult, StatsSeries } from './store/job-metrics.ts';
export type { QueueLimits, RateLimit } from './rate-limits/options.ts';
export type { HoldReason } from './rate-limits/gate.ts';
export type { WaitReason } from './rate-limits/held.ts';
