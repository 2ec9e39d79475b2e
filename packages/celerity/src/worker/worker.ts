import { DelayedError, MetricsTime, UnrecoverableError, WaitingError, Worker as BullWorker, type Job, type MinimalJob } from 'bullmq';
import { touchJobs } from '../process-load.ts';
import { ChurnMap } from '../churn-map.ts';
import type { Logger } from 'pino';
import { createRedis, writeTogether, type RedisClient, type RedisTarget } from '../broker/connection.ts';
import { Retry, UpstreamRateLimit } from '../errors.ts';
import { LimitGate, type Hold } from '../rate-limits/gate.ts';
import type { ResolvedQueueLimits } from '../rate-limits/options.ts';
import { backoffDelay, type Task } from '../task.ts';
import { releaseUpload, uploadIdOf } from '../uploads/store.ts';
import { useChurnTables } from './bullmq-tables.ts';
import { CancelWatcher } from './cancel-watcher.ts';
import { ThreadPool } from './isolation/thread-pool.ts';
import type { TimeLimits } from './limits.ts';
import { runJob } from './run-job.ts';
import { StopRequest } from './stop-request.ts';
import { WorkerRegistry, type ActiveJob } from './registry.ts';
import { errorTypeFromStack, maxAttemptsOf, type JobEnvelope } from '../job-record.ts';
import type { JobEventInfo, Lifecycle, LifecycleEvent } from './lifecycle.ts';
import type { WorkerFairness } from '../fairness/stage.ts';

export interface WorkerOptions extends RedisTarget {
  prefix: string;
  /** Routing queues to consume. */
  queues: string[];
  /** Jobs run at once, per queue. */
  concurrency: number;
  tasks: ReadonlyMap<string, Task>;
  logger: Logger;
  /** file: URL of the app module; needed for `isolation: 'thread'` tasks. */
  appModule?: string | undefined;
  defaultLimits?: TimeLimits;
  cancelGraceMs?: number;
  lockDuration?: number;
  stalledInterval?: number;
  maxStalled?: number;
  maxTasksPerChild?: number | undefined;
  maxMemoryPerChild?: number | undefined;
  /** Upload directory (`CELERITY_UPLOAD_DIR`): a job's uploaded file is removed from it when the job ends. */
  uploadDir?: string | undefined;
  /** The app's job hooks (`app.on`), told of each attempt's start and end. */
  lifecycle?: Lifecycle | undefined;
  /** Heartbeat interval of the worker registry in ms (`CELERITY_HEARTBEAT_INTERVAL`); default 5000. */
  heartbeatMs?: number;
  /** Per-queue rate limits (BullMQ's limiter) and tenant caps (`createApp({ queueLimits })`). */
  queueLimits?: ReadonlyMap<string, ResolvedQueueLimits> | undefined;
  /** Ms a job over its tenant's cap waits before it is tried again (`CELERITY_CAP_RECHECK`); default 1000. */
  capRecheckMs?: number;
  /** The fair stage of the fair queues among `queues` (src/fairness/stage.ts): dispatches as jobs end. */
  fairness?: WorkerFairness | undefined;
}

/**
 * Jobs whose moves to completed or failed share one socket write at most.
 * One write each took a quarter of a worker's CPU in a drain (the system
 * calls); all of a turn's moves in one write left Redis idle while the
 * worker ran the jobs, then the worker idle while Redis ran the moves. A
 * few to a write keeps both busy (docs/benchmarks.md, run 20).
 */
const MOVES_PER_WRITE = 8;

/** The reason handed to running handlers when a shutdown's grace period ends. */
export class WorkerShutdown extends Error {
  readonly code = 'worker_shutdown';

  constructor() {
    super('worker shutting down; job handed back to its queue once its handler has stopped');
    this.name = 'WorkerShutdown';
  }
}

function isShutdown(reason: Error | undefined): boolean {
  return reason?.name === 'WorkerShutdown';
}

interface Running {
  job: Job;
  token: string | undefined;
  abort: (reason: Error) => void;
}

/**
 * Consumes the given queues with one BullMQ worker each. BullMQ owns the
 * fetch/lock/ack protocol and stalled-job recovery; Celerity adds input
 * validation, the task context, time limits, isolation, cancellation, its
 * backoff policy and a shutdown that hands unfinished jobs back.
 */
export class Worker {
  private readonly workers: BullWorker[] = [];
  private readonly connection: RedisClient;
  private readonly opts: WorkerOptions;
  // A ChurnMap, not a Map: an entry per job (src/churn-map.ts).
  private readonly running = new ChurnMap<Running>();
  private readonly pool: ThreadPool | undefined;
  private readonly cancels: CancelWatcher;
  private registry: WorkerRegistry | undefined;
  private firstBeat: Promise<void> | undefined;
  private readonly gate: LimitGate;

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    this.connection = createRedis(opts, 'worker');
    this.gate = new LimitGate({
      redis: this.connection,
      prefix: opts.prefix,
      queueLimits: opts.queueLimits ?? new Map(),
      leaseMs: opts.lockDuration ?? 30_000,
      capRecheckMs: opts.capRecheckMs ?? 1_000,
    });
    const isolated = [...opts.tasks.values()].some((t) => t.isolation === 'thread' && opts.queues.includes(t.queue));
    this.pool =
      isolated && opts.appModule ? new ThreadPool({ appModule: opts.appModule, maxTasksPerChild: opts.maxTasksPerChild, maxMemoryPerChild: opts.maxMemoryPerChild, logger: opts.logger }) : undefined;
    if (isolated && !opts.appModule) {
      opts.logger.warn('this app has isolated tasks but no module URL (createApp({ module: import.meta.url })); they will fail');
    }
    this.cancels = new CancelWatcher({ target: opts, prefix: opts.prefix, redis: this.connection, logger: opts.logger });
  }

  start(): void {
    const { tasks, logger } = this.opts;
    void this.cancels.start();
    for (const queue of this.opts.queues) {
      const limiter = this.opts.queueLimits?.get(queue)?.rateLimit;
      const worker = new BullWorker(queue, (job: Job, token?: string) => this.process(queue, job, token), {
        connection: this.connection,
        // The queue's rate limit is BullMQ's own limiter, shared by every worker through Redis.
        ...(limiter ? { limiter: { max: limiter.max, duration: limiter.perMs } } : {}),
        prefix: this.opts.prefix,
        concurrency: this.opts.concurrency,
        autorun: false,
        lockDuration: this.opts.lockDuration ?? 30_000,
        stalledInterval: this.opts.stalledInterval ?? 30_000,
        maxStalledCount: this.opts.maxStalled ?? 5,
        // Per-minute completed/failed counts kept by BullMQ (a day of them): `inspect queues` and GET /v1/queues read them.
        metrics: { maxDataPoints: MetricsTime.ONE_HOUR * 24 },
        settings: {
          // Jobs carry `backoff: {type: 'celerity'}`; the policy itself is
          // the task's, so a redeployed worker applies the current one.
          backoffStrategy: (attemptsMade: number, _type?: string, err?: Error, job?: MinimalJob) => {
            // ctx.retry({ delay }): BullMQ has counted the attempt and calls
            // this only while attempts remain, so the override costs exactly
            // one attempt, like any retried failure.
            if (err instanceof Retry && err.delay !== undefined) return err.delay;
            const task = job ? tasks.get(job.name) : undefined;
            return task ? backoffDelay(task.backoff, attemptsMade) : 0;
          },
        },
      });
      // Before run(): its per-job Set and Map, as arrays and dictionaries (src/churn-map.ts).
      useChurnTables(worker);
      worker.on('error', (err) => logger.error({ err, queue }, 'worker error'));
      worker.on('failed', (job, err) => {
        // finishedOn is set only when BullMQ fails the job for good (no
        // attempts left, or UnrecoverableError); a retried attempt keeps it unset.
        if (job?.finishedOn) {
          const trace_id = (job.data as JobEnvelope | undefined)?.trace ?? null;
          logger.warn({ job_id: job.id, task: job.name, queue, trace_id, error: { type: errorTypeFromStack(err.stack), message: err.message } }, 'job failed');
          this.releaseUploadOf(job);
        }
        this.opts.fairness?.jobFinished(queue);
      });
      worker.on('completed', (job) => {
        this.releaseUploadOf(job);
        this.opts.fairness?.jobFinished(queue);
      });
      void worker.run().catch((err) => logger.error({ err, queue }, 'worker stopped'));
      this.workers.push(worker);
    }
    this.opts.fairness?.start();
    this.registry = new WorkerRegistry({
      redis: this.connection,
      prefix: this.opts.prefix,
      beatMs: this.opts.heartbeatMs ?? 5_000,
      logger,
      state: () => ({ queues: this.opts.queues, concurrency: this.opts.concurrency, active: this.activeJobs() }),
    });
    this.firstBeat = this.registry.start();
    logger.info({ queues: this.opts.queues, concurrency: this.opts.concurrency, worker_id: this.registry.id }, 'worker started');
  }

  /**
   * Removes the uploaded file of a job whose last attempt ended. A failure is
   * only logged: the API's janitor removes what is left after the upload TTL.
   */
  private releaseUploadOf(job: Job): void {
    const uploadId = this.opts.uploadDir ? uploadIdOf(this.opts.uploadDir, (job.data as { input?: unknown } | undefined)?.input) : undefined;
    if (!uploadId) return;
    releaseUpload(this.opts.uploadDir!, uploadId).catch((err: unknown) => this.opts.logger.warn({ err, job_id: job.id, upload_id: uploadId }, 'could not remove the upload of a finished job'));
  }

  private async process(queue: string, job: Job, token: string | undefined): Promise<unknown> {
    const task = this.opts.tasks.get(job.name);
    touchJobs();
    // Answered from memory: a job without limits pays no round trip.
    const limits = this.gate.limitsOf(queue, job, task);
    if (limits) {
      const hold = await this.gate.admit(queue, job, limits);
      if (hold) {
        await this.holdBack(job, token, hold);
        throw new DelayedError();
      }
    }
    const stop = new StopRequest();
    const abort = (reason: Error) => stop.request(reason);
    this.running.set(job.id!, { job, token, abort });
    const untrack = this.cancels.track(job.id!, abort);
    const lifecycle = this.opts.lifecycle;
    const event = lifecycle?.active ? eventInfo(job, queue) : undefined;
    if (event) lifecycle!.emit('job:started', event);
    let handlerStopped = (): Promise<void> => Promise.resolve();
    try {
      const result = await runJob(job, {
        task,
        queue,
        log: this.opts.logger,
        stop,
        defaultLimits: this.opts.defaultLimits ?? {},
        cancelGraceMs: this.opts.cancelGraceMs ?? 5_000,
        pool: this.pool,
        uploadDir: this.opts.uploadDir,
        redis: this.connection,
        onHandler: (stopped) => {
          handlerStopped = stopped;
        },
      });
      if (event) lifecycle!.emit('job:completed', { ...event, finishedAt: Date.now(), result });
      return result;
    } catch (err) {
      if (event) {
        const outcome = attemptOutcome(err as Error, event, stop.reason);
        if (outcome) lifecycle!.emit(outcome, { ...event, finishedAt: Date.now(), error: { type: errorTypeFromStack((err as Error).stack), message: (err as Error).message } });
      }
      if (isShutdown(stop.reason)) {
        await this.handBack(job, token, handlerStopped());
        // BullMQ's signal for "the processor moved the job itself": it
        // neither completes nor fails it, and does not touch it again.
        throw new WaitingError();
      }
      if (err instanceof UpstreamRateLimit) {
        await this.holdBack(job, token, await this.gate.pause(queue, job, task, err.ms));
        throw new DelayedError();
      }
      throw err;
    } finally {
      untrack();
      this.running.delete(job.id!);
      if (limits?.cap) await this.gate.release(limits, job.id!).catch((err: unknown) => this.opts.logger.warn({ err, job_id: job.id }, 'tenant cap slot not released; its lease will free it'));
      // BullMQ moves the job on (each move also fetches the next job) in the
      // continuations that follow; the moves of jobs that end together then
      // leave a few to a write instead of one write each.
      writeTogether(this.connection, MOVES_PER_WRITE);
    }
  }

  /**
   * Puts a job a limit held back into BullMQ's delayed set until its hold
   * ends, without spending an attempt (`moveToDelayed` skips the attempt
   * count; the gate's script already undid the count of its start).
   */
  private async holdBack(job: Job, token: string | undefined, hold: Hold): Promise<void> {
    if (this.opts.logger.isLevelEnabled('debug')) this.opts.logger.debug({ job_id: job.id, task: job.name, reason: hold.reason, key: hold.key, wait_ms: hold.waitMs }, 'job held back by a limit');
    try {
      if (token) await job.moveToDelayed(Date.now() + hold.waitMs, token);
    } catch (err) {
      // The lock is gone: the stalled check hands the job back instead.
      this.opts.logger.warn({ err, job_id: job.id }, 'could not hold job back');
    }
  }

  /** The jobs this process is running now, with their task and queue. */
  activeJobs(): ActiveJob[] {
    return [...this.running.entries()].map(([id, r]) => ({ id, task: r.job.name, queue: r.job.queueName }));
  }

  /** This worker's id in the registry (`<host>:<pid>:<random>`), once started. */
  get id(): string | undefined {
    return this.registry?.id;
  }

  /** How many jobs this process is running now. */
  get activeCount(): number {
    return this.running.size;
  }

  /** The queues this worker consumes and its concurrency per queue. */
  get queues(): readonly string[] {
    return this.opts.queues;
  }

  get concurrency(): number {
    return this.opts.concurrency;
  }

  /**
   * Whether this worker is taking jobs: every BullMQ worker running and not
   * closing, and the connection up. Readiness probes use it.
   */
  isFetching(): boolean {
    return this.workers.length > 0 && this.connection.status === 'ready' && this.workers.every((w) => w.isRunning() && !w.closing);
  }

  /** Resolves when every BullMQ worker is connected and fetching. */
  async ready(): Promise<void> {
    await Promise.all([...this.workers.map((w) => w.waitUntilReady()), this.firstBeat]);
  }

  /**
   * Hands a job whose attempt a shutdown ended back to its queue (BullMQ's
   * move from active to wait, which does not spend an attempt), once its
   * handler has really stopped.
   *
   * We MUST NOT hand the job back while its handler still runs: another
   * worker would take it at once and run it beside the handler. An inline
   * handler cannot be killed, so one that ignores its signal is waited for;
   * all that time this call keeps BullMQ's processor busy, so BullMQ keeps
   * the job tracked and its lock renewed. If the process exits first, the
   * handler dies with it, the lock expires, and the stalled check hands the
   * job back as after a crash. An isolated job's thread is terminated when
   * the shutdown ends the attempt, so it is handed back right after.
   */
  private async handBack(job: Job, token: string | undefined, handlerStopped: Promise<void>): Promise<void> {
    await handlerStopped;
    try {
      if (token) await job.moveToWait(token);
    } catch (err) {
      // The lock is gone (the job stalled): BullMQ's stalled check hands it
      // back instead. Nothing is lost either way.
      this.opts.logger.warn({ err, job_id: job.id }, 'could not hand job back');
    }
  }

  /**
   * Stops taking jobs and lets running ones finish for `graceMs`. Then the
   * handlers still running are aborted (`ctx.signal`, reason
   * `WorkerShutdown`), and each job is handed back to its queue once its
   * handler has stopped: an isolated one's thread is terminated after the
   * cancellation grace (`cancelGraceMs`). An inline handler that ignores its
   * signal cannot be stopped: its job is not handed back but stays locked,
   * its lock renewed, until the handler returns (then it is handed back) or
   * the process exits (then the stalled check recovers it as a crash's).
   * close() waits `stopWaitMs` more (default: the cancellation grace) for
   * handlers to honour their signal, then resolves with such jobs still
   * held; the rest of the closing goes on in the background.
   */
  async close(graceMs = Infinity, opts: { stopWaitMs?: number } = {}): Promise<void> {
    // Leaves the registry at once: a draining worker takes no new jobs.
    const unregistered = this.registry?.stop();
    await this.opts.fairness?.stop();
    const closing = Promise.all(this.workers.map((w) => w.close()));
    const within = (ms: number) => Promise.race([closing.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
    const finished = graceMs === Infinity ? await closing.then(() => true) : await within(graceMs);
    if (!finished) {
      const unfinished = [...this.running.values()];
      this.opts.logger.warn({ jobs: unfinished.map((r) => r.job.id) }, 'shutdown grace over: stopping unfinished jobs; each goes back to its queue once its handler has stopped');
      for (const { abort } of unfinished) abort(new WorkerShutdown());
      // Isolated handlers are terminated at once; inline ones get this long to honour their signal.
      if (!(await within(opts.stopWaitMs ?? this.opts.cancelGraceMs ?? 5_000))) {
        this.opts.logger.error(
          { jobs: [...this.running.values()].map((r) => r.job.id) },
          'handlers still running after the shutdown grace ignore their signal: their jobs stay locked, not handed back, until the handlers return or this process exits (then they are recovered as after a crash)',
        );
        void closing.then(() => this.release(unregistered)).catch((err: unknown) => this.opts.logger.warn({ err }, 'worker close failed'));
        return;
      }
    }
    await this.release(unregistered);
  }

  private async release(unregistered: Promise<void> | undefined): Promise<void> {
    await this.pool?.close();
    await this.cancels.close();
    await unregistered;
    this.connection.disconnect();
  }
}

/** The hook payload of a job's attempt; null for a workflow's internal collect jobs, which run no task. */
function eventInfo(job: Job, queue: string): JobEventInfo | undefined {
  const envelope = (job.data ?? {}) as JobEnvelope;
  if (envelope.flow?.collect) return undefined;
  return {
    jobId: job.id!,
    task: job.name,
    queue,
    tenant: envelope.tenant ?? null,
    attempt: Math.max(job.attemptsStarted ?? 0, (job.attemptsMade ?? 0) + 1),
    maxAttempts: maxAttemptsOf(job.opts),
    traceId: envelope.trace ?? null,
    enqueuedAt: job.timestamp,
    startedAt: job.processedOn ?? Date.now(),
  };
}

/** What an attempt's error means for hooks; null when a shutdown handed the job back (it will run again). */
function attemptOutcome(err: Error, event: JobEventInfo, stopReason: Error | undefined): LifecycleEvent | null {
  if (isShutdown(stopReason)) return null;
  // ctx.rateLimited: the job waits for its limit, the attempt is not spent.
  if (err instanceof UpstreamRateLimit) return null;
  if (errorTypeFromStack(err.stack) === 'JobCancelled') return 'job:cancelled';
  return err instanceof UnrecoverableError || event.attempt >= event.maxAttempts ? 'job:failed' : 'job:retrying';
}
