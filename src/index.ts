export { App, createApp, type AppOptions, type JobHandle } from './app.ts';
export { defineTask, backoffDelay, type Task, type TaskContext, type TaskDefinition, type TaskInput, type TaskResult, type BackoffPolicy, type ProgressUpdate } from './task.ts';
export { loadConfig, OPTIONS, type CelerityConfig, type RawConfig } from './config.ts';
export type { EnqueueOptions } from './client/enqueue.ts';
export type { JobRecord, JobStatus, JobError } from './job-record.ts';
export * from './errors.ts';
export { Worker } from './worker/worker.ts';
export { Recorder } from './store/recorder.ts';

export { buildServer, type ServerOptions } from './api/server.ts';
export { chain, chord, defineWorkflow, group, step, type WorkflowDefinition, type WorkflowNode } from './workflows/workflow.ts';
export { uploadRefSchema, type UploadRef } from './uploads/upload-ref.ts';
export type { JobEventInfo, LifecycleEvent, LifecycleHook } from './worker/lifecycle.ts';
export { schedule, type Schedule, type When } from './schedules/schedule.ts';
export { MAINTENANCE_QUEUE, MAINTENANCE_TASKS, type StuckJob } from './schedules/maintenance.ts';
export type { ScheduleSync } from './schedules/sync.ts';
