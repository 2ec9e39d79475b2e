import type { FastifyPluginAsync } from 'fastify';
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import { Broker } from './broker/broker.ts';
import { workerFairness } from './fairness/stage.ts';
import { enqueueJob, type Enqueued, type EnqueueOptions, type TaskRoute } from './client/enqueue.ts';
import { enqueueMany, type BulkJob } from './client/enqueue-many.ts';
import { readJob } from './client/status.ts';
import { cancelJob, type CancelOutcome } from './client/cancel.ts';
import { loadConfig, type CelerityConfig, type RawConfig } from './config.ts';
import { InvalidOptionsError, JobFinishedError, JobNotFoundError, TaskDefinitionError, UnknownTaskError } from './errors.ts';
import { TERMINAL_STATUSES, type JobRecord, type JobStatus } from './job-record.ts';
import { deleteJob, promoteJob, retryJob, type RetryJobOptions } from './client/job-actions.ts';
import { drainQueue, isQueuePaused, pauseQueue, resumeQueue } from './ops/queue-control.ts';
import { bulkTask, countBulk, startBulk, stopBulk } from './ops/bulk/run.ts';
import { readOperation, type BulkAction, type BulkActor, type BulkFilter, type BulkOperation } from './ops/bulk/operations.ts';
import { newJobId } from './ids.ts';
import { createLogger } from './logger.ts';
import { createRedis } from './broker/connection.ts';
import { newRecorderStats, Recorder, type RecorderStats } from './store/recorder.ts';
import { busyProbe } from './process-load.ts';
import { JobStore, type JobPage, type ListFilter } from './store/job-store.ts';
import { readStats, type StatsQuery, type StatsResult } from './store/job-metrics.ts';
import { appMetrics, type Metrics } from './ops/metrics.ts';
import { parseInput, type Task, type TaskInput, type TaskResult } from './task.ts';
import { Worker } from './worker/worker.ts';
import { Lifecycle, type LifecycleEvent, type LifecycleHook } from './worker/lifecycle.ts';
import { submitWorkflow, type WorkflowOptions } from './workflows/submit.ts';
import { withSteps } from './workflows/steps.ts';
import { resolveSchedules, type ResolvedSchedule, type Schedule } from './schedules/schedule.ts';
import { syncSchedules, type ScheduleSync } from './schedules/sync.ts';
import { maintenanceSchedules, maintenanceTasks } from './schedules/maintenance.ts';
import type { WorkflowDefinition, WorkflowNode } from './workflows/workflow.ts';
import type { TableHandle, TableSet } from './store/tables.ts';
import { ALL_TENANTS, inTenantScope, type TenantScope } from './auth/principal.ts';
import { resolveQueueLimits, type QueueLimits, type ResolvedQueueLimits } from './rate-limits/options.ts';

/**
 * Marks an App across copies of this package: an app module may import
 * another copy of `celerity` than the CLI that loads it (a linked checkout, a
 * nested install), where `instanceof App` would fail.
 */
const APP_BRAND = Symbol.for('celerity.app');

/** True for an app made by `createApp()` of any copy of Celerity. */
export function isApp(value: unknown): value is App {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[APP_BRAND] === 1;
}

/**
 * Routes an app adds to the job API (a Fastify plugin, given the app). They
 * are registered after Celerity's own, under the same prefix, error shape
 * and OpenAPI document.
 */
export type ApiRoutes = FastifyPluginAsync<{ app: App }>;

export interface AppOptions {
  tasks: Task<any, any>[];
  /** Workflow tasks (`defineWorkflow`): enqueued by name like tasks, run as workflows of the tasks above. */
  workflows?: WorkflowDefinition<any>[];
  /**
   * A validated config, or raw values layered over the environment. Read when
   * the app is first used (enqueue, worker, API), never at import. Default:
   * the environment. The CLI passes its flags with {@link App.configure}.
   */
  config?: CelerityConfig | RawConfig;
  logger?: Logger;
  /** PostgreSQL schema for the store, over `CELERITY_DB_SCHEMA` (tests isolate themselves with it). */
  dbSchema?: string;
  /** The app's own tables (`defineTables`), migrated after Celerity's; see {@link App.tables}. */
  tables?: TableSet[];
  /** Routes the app adds to the job API; see {@link ApiRoutes}. */
  routes?: ApiRoutes[];
  /**
   * URL of the module that creates this app (`import.meta.url`). Tasks with
   * `isolation: 'thread'` need it: their threads import it to find the
   * handler. The CLI sets it from `--app`.
   */
  module?: string;
  /**
   * Periodic tasks (`schedule(task, { every } | { cron, tz? }, input?)`).
   * Workers upsert them on start (`app.startSchedules()`); each tick runs once.
   */
  schedules?: Schedule[];
  /**
   * The built-in maintenance tasks and their schedules, on the queue
   * `celerity`: `celerity.purge` hourly, `celerity.uploads.sweep` hourly,
   * `celerity.stuck` every 5 minutes. Default true.
   */
  maintenance?: boolean;
  /**
   * Limits per routing queue, for the whole cluster: a rate limit of the
   * queue (BullMQ's limiter) and caps on each tenant's running jobs. A job
   * over a cap waits without spending an attempt. See
   * docs/semantics.md#rate-limits-and-tenant-caps.
   *
   * @example queueLimits: { llm: { tenantCap: 5, tenantCaps: { acme: 20 } } }
   */
  queueLimits?: Record<string, QueueLimits>;
}

/** A job as returned by enqueue: its id, plus helpers to read and await it. */
export interface JobHandle<R = unknown> {
  readonly id: string;
  readonly task: string;
  readonly queue: string;
  /** False when an idempotency key returned an earlier job instead of enqueueing. */
  readonly created: boolean;
  /** The current record, or null if the job is unknown. */
  status(): Promise<(JobRecord & { result: R | null }) | null>;
  /** Polls until the job is completed, failed or cancelled. */
  wait(opts?: { timeoutMs?: number; pollMs?: number }): Promise<JobRecord & { result: R | null }>;
}

/** One job of {@link App.enqueueMany}: a task (object or name), its input, and the options of `enqueue`. */
export interface EnqueueManyItem {
  task: Task<any, any> | string;
  input: unknown;
  /** As for `enqueue`, except `idempotencyKey`, which bulk calls refuse. */
  options?: EnqueueOptions;
}

/**
 * A Celerity application: the registry of tasks plus lazily opened
 * connections to Redis (broker) and SQL (store). The same app module serves
 * producers (`enqueue`), workers, and the API.
 */
export class App {
  readonly [APP_BRAND] = 1;
  readonly tasks: ReadonlyMap<string, Task>;
  readonly workflows: ReadonlyMap<string, WorkflowDefinition>;
  /** The app's table sets (see {@link AppOptions.tables}). */
  readonly tableSets: readonly TableSet[];
  /** The app's own API routes (see {@link AppOptions.routes}). */
  readonly routes: readonly ApiRoutes[];
  /** See {@link AppOptions.module}. */
  moduleUrl: string | undefined;
  /** Job hooks; see {@link App.on}. */
  readonly lifecycle: Lifecycle;
  /** The app's schedules, the maintenance ones included; see {@link App.startSchedules}. */
  readonly schedules: readonly ResolvedSchedule[];
  /** Built-in tasks (maintenance): run by workers, not listed with the app's tasks. */
  readonly builtinTasks: ReadonlyMap<string, Task>;
  /** What went wrong while recording, summed over this app's recorders (its metrics export them). */
  readonly recorderStats: RecorderStats = newRecorderStats();
  /** The checked {@link AppOptions.queueLimits}. */
  readonly queueLimits: ReadonlyMap<string, ResolvedQueueLimits>;
  private readonly dbSchema: string | undefined;
  private configSource: CelerityConfig | RawConfig | undefined;
  private configInstance: CelerityConfig | undefined;
  private loggerInstance: Logger | undefined;
  private readonly userLogger: boolean;
  private queues: string[] | undefined;
  private brokerInstance: Broker | undefined;
  private storeInstance: JobStore | undefined;
  private storeReady: Promise<void> | undefined;

  constructor(opts: AppOptions) {
    this.configSource = opts.config;
    this.loggerInstance = opts.logger;
    this.userLogger = opts.logger !== undefined;
    this.dbSchema = opts.dbSchema;
    this.tableSets = opts.tables ?? [];
    this.routes = opts.routes ?? [];
    this.lifecycle = new Lifecycle(() => this.logger);
    this.moduleUrl = opts.module;
    const tasks = new Map<string, Task>();
    for (const task of opts.tasks) {
      if (tasks.has(task.name)) throw new TaskDefinitionError(`Task "${task.name}" is defined twice`);
      tasks.set(task.name, task);
    }
    this.tasks = tasks;
    const workflows = new Map<string, WorkflowDefinition>();
    for (const wf of opts.workflows ?? []) {
      if (tasks.has(wf.name) || workflows.has(wf.name)) throw new TaskDefinitionError(`"${wf.name}" is defined twice`);
      workflows.set(wf.name, wf);
    }
    this.workflows = workflows;
    // Bulk actions run on the maintenance queue, with the maintenance tasks.
    const builtins = opts.maintenance === false ? [] : [...maintenanceTasks(this), bulkTask(this)];
    this.builtinTasks = new Map(builtins.map((t) => [t.name, t]));
    const runnable = new Map([...tasks, ...this.builtinTasks]);
    this.schedules = resolveSchedules([...(opts.schedules ?? []), ...(builtins.length > 0 ? maintenanceSchedules() : [])], runnable);
    this.queueLimits = resolveQueueLimits(opts.queueLimits);
    for (const queue of this.queueLimits.keys()) {
      if (!this.queueNames().includes(queue)) throw new TaskDefinitionError(`queueLimits.${queue}: no task of the app runs on queue "${queue}"`);
    }
  }

  /**
   * Runs `fn` on a job event in the worker process that runs the job, like
   * Celery's signals: `job:started` when an attempt starts, then one of
   * `job:completed`, `job:retrying` (another attempt will follow),
   * `job:failed` (no attempt left) or `job:cancelled`. A hook cannot fail or
   * delay the job: it runs after the fact, and what it throws is logged.
   * Returns a function that removes the hook.
   *
   * @example app.on('job:failed', ({ jobId, task, error }) => alerts.send(`${task} ${jobId}: ${error?.message}`));
   */
  on(event: LifecycleEvent, fn: LifecycleHook): () => void {
    return this.lifecycle.on(event, fn);
  }

  /**
   * The app's Prometheus metrics in this process (docs/metrics.md), made
   * and subscribed to the job hooks on the first call: call it before this
   * process's workers run jobs, so that none goes uncounted. For a service
   * that runs Celerity's workers itself instead of `celerity worker`:
   * `trackWorker(worker)` adds a worker's running jobs to
   * `celerity_worker_active_jobs`, and `render()` (with `contentType`) is
   * the exposition to serve on the service's own `/metrics`, or use
   * `startHealthServer` (a port of its own with `/healthz`, `/readyz` and
   * `/metrics`). The API's `/metrics` serves the same.
   */
  metrics(): Metrics {
    return appMetrics(this);
  }

  /**
   * The configuration, read (and validated) on first use: from the values
   * given to `createApp` or {@link App.configure}, over the environment.
   * Throws a ConfigError naming the setting when a value is bad.
   */
  get config(): CelerityConfig {
    if (!this.configInstance) {
      const source = this.configSource;
      this.configInstance = isConfig(source) ? source : loadConfig({ flags: source ?? {} });
    }
    return this.configInstance;
  }

  get logger(): Logger {
    return (this.loggerInstance ??= createLogger(this.config.logLevel));
  }

  /**
   * Sets configuration values before the app opens anything (the CLI passes
   * its flags this way): raw values are layered over those given to
   * `createApp` and the environment; a validated config replaces them. The
   * result is validated at once, so a bad value stops start-up here.
   */
  configure(config: CelerityConfig | RawConfig, opts: { logger?: Logger } = {}): this {
    if (this.brokerInstance || this.storeInstance) throw new TaskDefinitionError('configure() must be called before the app connects to Redis or SQL');
    const previous = this.configSource;
    this.configSource = isConfig(config) || isConfig(previous) ? config : { ...previous, ...config };
    this.configInstance = undefined;
    // A logger made from the old config is made again; one given by the user is kept.
    if (opts.logger) this.loggerInstance = opts.logger;
    else if (!this.userLogger) this.loggerInstance = undefined;
    void this.config;
    return this;
  }

  get broker(): Broker {
    return (this.brokerInstance ??= new Broker(this.config));
  }

  get store(): JobStore {
    return (this.storeInstance ??= new JobStore({
      databaseUrl: this.config.databaseUrl,
      sqlitePath: this.config.sqlitePath,
      schema: this.dbSchema ?? this.config.databaseSchema,
    }));
  }

  /**
   * Opens the store and runs its migrations, Celerity's then the app's table
   * sets (once per app; a failure is retried on the next call).
   */
  async openStore(): Promise<JobStore> {
    this.storeReady ??= (async () => {
      const newer = await this.store.migrate();
      if (newer.length > 0) {
        this.logger.warn(
          { migrations: newer },
          'the job store was migrated by a newer version of Celerity; this process runs on its schema as it is (finish the rollout, or migrate back before a rollback)',
        );
      }
      for (const set of this.tableSets) await this.store.tables(set);
      const paths = this.config.searchPaths ?? [];
      if (paths.length > 0) {
        for (const o of await this.store.ensureSearchIndexes(paths)) {
          if (o.state === 'created') this.logger.info({ path: o.key, index: o.index }, 'search index created');
          if (o.state === 'failed') this.logger.warn({ path: o.key, index: o.index, error: o.error }, 'search index not available: searches on this path read the history row by row');
        }
      }
    })().catch((err: unknown) => {
      this.storeReady = undefined;
      throw err;
    });
    await this.storeReady;
    return this.store;
  }

  /**
   * A handle on one of the app's table sets, migrated: Kysely over the set's
   * PostgreSQL schema, or the SQLite file.
   */
  async tables(set: TableSet): Promise<TableHandle> {
    if (!this.tableSets.includes(set)) throw new TaskDefinitionError(`Table set "${set.name}" is not one of this app's (createApp({ tables }))`);
    await this.openStore();
    return this.store.tables(set);
  }

  /** Every routing queue of the app's tasks and workflows (a copy: callers may change it). */
  queueNames(): string[] {
    // Fixed once the app is built, and read on every status poll.
    this.queues ??= [...new Set([...[...this.tasks.values(), ...this.builtinTasks.values()].map((t) => t.queue), ...[...this.workflows.values()].map((w) => w.queue)])].sort();
    return [...this.queues];
  }

  task(name: string): Task | undefined {
    return this.tasks.get(name);
  }

  /** Enqueues a task by object; input and result types follow the task. */
  async enqueue<T extends Task<any, any>>(task: T, input: TaskInput<T>, options?: EnqueueOptions): Promise<JobHandle<TaskResult<T>>> {
    const enqueued = await enqueueJob(this.broker, task, input, options);
    return this.handle(enqueued);
  }

  /**
   * Enqueues by task name, for code that does not import the handler (Celery's
   * `send_task`). A task this app defines is validated and routed as defined;
   * an unknown one needs `options.queue` and is validated by the worker.
   */
  async enqueueByName(name: string, input: unknown, options: EnqueueOptions = {}): Promise<JobHandle> {
    const wf = this.workflows.get(name);
    if (wf) return this.enqueueWorkflow(wf, input, options);
    return this.handle(await enqueueJob(this.broker, this.routeByName(name, options), input, options));
  }

  /**
   * Enqueues many jobs in one round trip, across queues, all or nothing
   * (Celery's `group(...).apply_async()` without the group): every item's
   * task, input and options are validated first, and one bad item throws
   * (InvalidInputError, InvalidOptionsError or UnknownTaskError, its paths
   * under `items.<index>`, e.g. `items.3.input.a`) with nothing enqueued. Then
   * one BullMQ MULTI adds every job, or none if Redis fails
   * (BrokerUnavailableError). Items name a task by object or by name, as
   * `enqueue` and `enqueueByName` do (not a workflow). Idempotency keys are
   * refused; a `jobId` may not repeat within a call. At most 1,000 items.
   * Returns one handle per item, in order.
   *
   * @example
   * const handles = await app.enqueueMany(rows.map((row) => ({ task: importRow, input: row })));
   */
  async enqueueMany(items: readonly EnqueueManyItem[]): Promise<JobHandle[]> {
    if (!Array.isArray(items)) throw new InvalidOptionsError([{ path: 'items', message: 'must be an array of { task, input, options? }' }]);
    const jobs: BulkJob[] = items.map((item: EnqueueManyItem | null | undefined, index) => {
      const at = `items.${index}`;
      if (item === null || typeof item !== 'object') throw new InvalidOptionsError([{ path: at, message: 'must be { task, input, options? }' }]);
      const { task, input, options } = item;
      if (typeof task === 'string') return { route: this.routeByName(task, options ?? {}, `${at}.task`), input, options };
      if (task && typeof task === 'object' && typeof task.name === 'string' && typeof task.queue === 'string') return { route: task, input, options };
      throw new InvalidOptionsError([{ path: `${at}.task`, message: 'must be a task or a task name' }]);
    });
    return (await enqueueMany(this.broker, jobs)).map((e) => this.handle(e));
  }

  /**
   * Where a task name routes: a task this app defines (validated and routed
   * as defined), else `options.queue` (the worker validates). `path`
   * addresses the item of a bulk call, where workflows (flows of their own)
   * are refused.
   */
  private routeByName(name: string, options: EnqueueOptions, path?: string): TaskRoute {
    if (path && this.workflows.has(name)) throw new InvalidOptionsError([{ path, message: `"${name}" is a workflow; enqueue it with enqueueByName` }]);
    const task = this.tasks.get(name) ?? this.builtinTasks.get(name);
    if (task) return task;
    if (!options.queue) {
      if (this.tasks.size > 0) throw new UnknownTaskError(name, [...this.tasks.keys()], path);
      throw new InvalidOptionsError([{ path: path ? path.replace(/task$/, 'options.queue') : 'options.queue', message: `task "${name}" is not defined here, so a queue is required` }]);
    }
    return { name, queue: options.queue, retries: undefined as unknown as number };
  }

  /**
   * Submits a workflow (`chain`, `group`, `chord` of this app's tasks) as one
   * atomic BullMQ flow. The handle is the workflow's root job: its status is
   * the workflow's, `getJob` shows its steps, its result is the last step's.
   */
  async workflow(node: WorkflowNode, options: WorkflowOptions = {}): Promise<JobHandle> {
    return this.handle(await submitWorkflow(this.broker, this.tasks, { node }, options));
  }

  private async enqueueWorkflow(wf: WorkflowDefinition, input: unknown, options: EnqueueOptions): Promise<JobHandle> {
    const unsupported = Object.keys(options).filter((k) => k !== 'tenant' && k !== 'keyId' && k !== 'traceId' && (options as Record<string, unknown>)[k] !== undefined);
    if (unsupported.length > 0) {
      throw new InvalidOptionsError(unsupported.map((k) => ({ path: `options.${k}`, message: `not supported for the workflow "${wf.name}"` })));
    }
    const parsed = parseInput({ name: wf.name, inputSchema: wf.inputSchema }, input);
    const node = wf.build(parsed);
    return this.handle(
      await submitWorkflow(
        this.broker,
        this.tasks,
        { node, name: wf.name, queue: wf.queue, input },
        {
          ...(options.tenant ? { tenant: options.tenant } : {}),
          ...(options.keyId ? { keyId: options.keyId } : {}),
          ...(options.traceId ? { traceId: options.traceId } : {}),
        },
      ),
    );
  }

  /**
   * The job's record: live from Redis, or from the SQL history; a workflow's
   * with its steps. With a `scope`, a job of a tenant outside it reads as
   * null, as a job that does not exist.
   */
  async getJob(id: string, opts: { scope?: TenantScope } = {}): Promise<JobRecord | null> {
    const scope = opts.scope ?? ALL_TENANTS;
    const record = await this.readWithSteps(this.queueNames(), id, scope);
    // Redis holds every tenant's jobs: the scope is checked here; SQL applies it in the query too.
    return record && inTenantScope(opts.scope ?? ALL_TENANTS, record.tenant) ? record : null;
  }

  /** Like getJob, also searching the queue a handle was routed to (enqueueByName to another app's queue). */
  private async readEnqueued(e: { id: string; queue: string }): Promise<JobRecord | null> {
    return this.readWithSteps([...new Set([...this.queueNames(), e.queue])], e.id);
  }

  private async readWithSteps(queues: string[], id: string, scope: TenantScope = ALL_TENANTS): Promise<JobRecord | null> {
    const store = await this.openStore();
    const record = await readJob(this.broker, store, queues, id, scope);
    if (!record || !inTenantScope(scope, record.tenant)) return null;
    if (record.workflow) {
      const steps = await Promise.all(record.workflow.steps.map((s) => readJob(this.broker, store, queues, s.id, scope)));
      return withSteps(record, record.workflow.steps, steps);
    }
    // Read from SQL (Redis has let go of it): a workflow's steps are found by id.
    if (record.task.startsWith('workflow.') || this.workflows.has(record.task)) {
      const steps = await store.workflowSteps(id, scope);
      if (steps.length > 0) return withSteps(record, undefined, steps);
    }
    return record;
  }

  /**
   * Cancels a job from any process: a queued or delayed job is removed at
   * once (`cancelled`); a running one is told to stop wherever it runs
   * (`cancelling`, then `cancelled`). Cancelling twice is harmless; a
   * finished job throws JobFinishedError. Cancelling a workflow's root
   * cancels its unfinished steps first (queued ones removed, running ones
   * stopped); the workflow then reads `cancelled`. With a `scope`, a job of
   * a tenant outside it throws JobNotFoundError.
   */
  async cancel(id: string, opts: { scope?: TenantScope } = {}): Promise<CancelOutcome> {
    const store = await this.openStore();
    const queues = this.queueNames();
    const root = await readJob(this.broker, store, queues, id);
    // Outside the scope is as unknown as missing (the API answers 404 for both).
    if (root && !inTenantScope(opts.scope ?? ALL_TENANTS, root.tenant)) throw new JobNotFoundError(id);
    if (root?.workflow && !TERMINAL_STATUSES.has(root.status)) {
      // Leaves first: a step removed before its parent would let the parent run.
      const steps = await Promise.all(root.workflow.steps.map((s) => readJob(this.broker, store, queues, s.id)));
      let running = false;
      for (const step of steps) {
        if (!step || TERMINAL_STATUSES.has(step.status)) continue;
        const outcome = await cancelJob(this.broker, store, queues, step.id).catch((err: unknown) => {
          // A step that finished meanwhile is not a failure of the cancel.
          if (err instanceof JobFinishedError || err instanceof JobNotFoundError) return 'cancelled' as const;
          throw err;
        });
        running ||= outcome === 'cancelling';
      }
      const own = await cancelJob(this.broker, store, queues, id).catch((err: unknown) => {
        if (err instanceof JobFinishedError) return 'cancelled' as const;
        throw err;
      });
      return running ? 'cancelling' : own;
    }
    return cancelJob(this.broker, store, queues, id);
  }

  /**
   * Retries a failed or cancelled job as a new job of the same task and
   * tenant, whose `retryOf` names the original (see
   * {@link retryJob}): with the original's input, or `opts.input` (an edited
   * input, validated by the task's schema like any submission). The original
   * keeps its history. Throws JobNotRetryableError (409) for a queued,
   * running or completed job, RetryInProgressError (409) while an earlier
   * retry of it has not finished, JobNotFoundError outside `opts.scope`.
   *
   * @example const again = await app.retry(failedId, { input: { ...fixed } });
   */
  async retry(id: string, opts: RetryJobOptions = {}): Promise<JobHandle> {
    return this.handle(await retryJob(this, id, opts));
  }

  /**
   * Deletes a job from Redis and from the SQL history (a workflow's root
   * with its steps). A running job throws JobActiveError (409): cancel it
   * first. See {@link deleteJob}.
   */
  async deleteJob(id: string, opts: { scope?: TenantScope } = {}): Promise<void> {
    await deleteJob(this, id, opts);
  }

  /** Runs a delayed job now (BullMQ's promote); anything else throws JobNotDelayedError (409). Returns its status. */
  async promote(id: string, opts: { scope?: TenantScope } = {}): Promise<JobStatus> {
    return promoteJob(this, id, opts);
  }

  /**
   * Pauses one of the app's queues for every worker, until
   * {@link App.resumeQueue}; the pause is kept in Redis, so workers started
   * later take nothing either. Running jobs finish. An unknown queue throws
   * UnknownQueueError (404).
   */
  async pauseQueue(name: string): Promise<void> {
    await pauseQueue(this, name);
  }

  /** Resumes a paused queue (harmless on a running one). */
  async resumeQueue(name: string): Promise<void> {
    await resumeQueue(this, name);
  }

  /** Whether one of the app's queues is paused. */
  async isQueuePaused(name: string): Promise<boolean> {
    return isQueuePaused(this, name);
  }

  /**
   * Removes every job of a queue that waits to run (waiting, delayed,
   * prioritized; not running ones); each reads `cancelled` afterwards, in
   * Redis and in the history. Returns how many. See {@link drainQueue}.
   */
  async drainQueue(name: string): Promise<{ removed: number }> {
    return drainQueue(this, name);
  }

  /**
   * Starts a bulk action (`retry`, `cancel` or `delete`) over the jobs of the
   * history that `filter` matches (the fields of `listJobs`), confined to
   * `actor`'s tenant scope and task patterns. It runs in the background as
   * the internal task `celerity.bulk` (a worker must consume the queue
   * `celerity`), saving its progress in the audit log
   * ({@link App.bulkOperation}); {@link App.stopBulk} stops it. Use
   * {@link App.countBulk} first for a dry run. `id` defaults to a new job id.
   */
  async startBulk(actor: BulkActor, action: BulkAction, filter: BulkFilter, id: string = newJobId()): Promise<BulkOperation> {
    return startBulk(this, actor, action, filter, id);
  }

  /** A bulk action's dry run: how many jobs `filter` matches for `actor` now. */
  async countBulk(actor: BulkActor, filter: BulkFilter): Promise<number> {
    return countBulk(this, actor, filter);
  }

  /** A bulk operation (audit entry and progress), or null. */
  async bulkOperation(id: string): Promise<BulkOperation | null> {
    return readOperation(await this.openStore(), id);
  }

  /** Stops a bulk operation before its next job; a finished one is returned as it is. */
  async stopBulk(id: string): Promise<BulkOperation> {
    return stopBulk(this, id);
  }

  async listJobs(filter: ListFilter): Promise<JobPage> {
    return (await this.openStore()).list(filter);
  }

  /**
   * Throughput, failures and wait and run percentiles per queue and task, by
   * minute or hour, for every tenant (see `GET /v1/stats`). Throws
   * InvalidOptionsError naming the field for a bad range.
   */
  async stats(query: StatsQuery = {}): Promise<StatsResult> {
    return readStats(await this.openStore(), query);
  }

  /** Starts a recorder for the app's queues on its own connection. */
  async startRecorder(queues: string[] = this.queueNames()): Promise<Recorder> {
    const store = await this.openStore();
    const redis = createRedis(this.config, 'worker');
    // Its own queues, on a connection of their own: a batch's hash reads
    // (one command per chunk) do not queue behind the API's commands. Not
    // auto-pipelined: ioredis's pipelines outlive the young generation
    // (src/broker/job-hashes.ts).
    const reads = new Broker(this.config);
    const recorder = new Recorder({
      redis,
      store,
      queues: queues.map((q) => reads.queue(q)),
      prefix: this.config.prefix,
      logger: this.logger,
      batchSize: this.config.recorderBatch,
      claimIdleMs: this.config.recorderClaimIdle,
      stats: this.recorderStats,
      // The probe is never busy in a process that adds and runs no jobs (`celerity recorder`); 0 turns the yield off.
      ...(this.config.recorderYield > 0 ? { busy: busyProbe(), yieldMs: this.config.recorderYield } : {}),
    });
    await recorder.start();
    // One recorder per process takes the producer's rows: the sink is one slot, kept by the first.
    const sink = (job: Job) => recorder.noteAdded(job);
    this.broker.addedSink ??= sink;
    const stop = recorder.stop.bind(recorder);
    recorder.stop = async () => {
      if (this.broker.addedSink === sink) this.broker.addedSink = undefined;
      await stop();
      redis.disconnect();
      await reads.close();
    };
    return recorder;
  }

  /** A worker for the given queues (default: all of the app's). Call `start()` on it. */
  createWorker(opts: { queues?: string[]; concurrency?: number } = {}): Worker {
    return new Worker({
      brokerUrl: this.config.brokerUrl,
      redisCluster: this.config.redisCluster,
      prefix: this.config.prefix,
      queues: opts.queues ?? this.config.queues ?? this.queueNames(),
      concurrency: opts.concurrency ?? this.config.concurrency,
      tasks: this.builtinTasks.size > 0 ? new Map([...this.tasks, ...this.builtinTasks]) : this.tasks,
      logger: this.logger,
      appModule: this.moduleUrl,
      defaultLimits: { soft: this.config.softTimeLimit, hard: this.config.hardTimeLimit },
      cancelGraceMs: this.config.cancelGrace,
      lockDuration: this.config.lockDuration,
      stalledInterval: this.config.stalledInterval,
      maxStalled: this.config.maxStalled,
      heartbeatMs: this.config.heartbeatInterval,
      maxTasksPerChild: this.config.maxTasksPerChild,
      maxMemoryPerChild: this.config.maxMemoryPerChild,
      uploadDir: this.config.uploadDir,
      lifecycle: this.lifecycle,
      queueLimits: this.queueLimits,
      capRecheckMs: this.config.capRecheck,
      fairness: workerFairness(this.broker, opts.queues ?? this.config.queues ?? this.queueNames(), this.logger),
    });
  }

  /**
   * Creates, updates or removes the app's job schedulers in Redis to match
   * its schedules (see {@link syncSchedules}). `celerity worker` and
   * `celerity dev` call it on start; any number of processes may.
   */
  async startSchedules(): Promise<ScheduleSync> {
    return syncSchedules(this.broker, this.schedules, this.queueNames(), this.logger);
  }

  async close(): Promise<void> {
    await this.brokerInstance?.close();
    await this.storeInstance?.close();
    this.brokerInstance = undefined;
    this.storeInstance = undefined;
    this.storeReady = undefined;
  }

  private handle<R>(enqueued: Enqueued): JobHandle<R> {
    return new EnqueuedJob<R>(enqueued, this.readHandle);
  }

  /** One reader for every handle this app returns: a handle holds no closures of its own. */
  private readonly readHandle = (e: Enqueued): Promise<JobRecord | null> => this.readEnqueued(e);
}

/**
 * What `enqueue` returns. A class, not an object literal with two closures:
 * built for every job enqueued, the literal cost a microsecond each.
 */
class EnqueuedJob<R> implements JobHandle<R> {
  readonly id: string;
  readonly task: string;
  readonly queue: string;
  readonly created: boolean;
  readonly #read: (e: Enqueued) => Promise<JobRecord | null>;

  constructor(enqueued: Enqueued, read: (e: Enqueued) => Promise<JobRecord | null>) {
    this.id = enqueued.id;
    this.task = enqueued.task;
    this.queue = enqueued.queue;
    this.created = enqueued.created;
    this.#read = read;
  }

  status(): Promise<(JobRecord & { result: R | null }) | null> {
    return this.#read(this) as Promise<(JobRecord & { result: R | null }) | null>;
  }

  async wait({ timeoutMs = 60_000, pollMs = 100 }: { timeoutMs?: number; pollMs?: number } = {}): Promise<JobRecord & { result: R | null }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const record = await this.#read(this);
      if (record && TERMINAL_STATUSES.has(record.status)) return record as JobRecord & { result: R | null };
      if (Date.now() > deadline) throw new Error(`Job ${this.id} not finished after ${timeoutMs} ms (status ${record?.status ?? 'unknown'})`);
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}

export function createApp(opts: AppOptions): App {
  return new App(opts);
}

function isConfig(c: AppOptions['config']): c is CelerityConfig {
  return Boolean(c && typeof (c as CelerityConfig).resultTtl === 'number' && typeof (c as CelerityConfig).brokerUrl === 'string');
}
