import type { Logger } from 'pino';

/** The moments of a job's life that hooks can observe (Celery's signals). */
export type LifecycleEvent = 'job:started' | 'job:completed' | 'job:failed' | 'job:retrying' | 'job:cancelled';

export const LIFECYCLE_EVENTS: readonly LifecycleEvent[] = ['job:started', 'job:completed', 'job:failed', 'job:retrying', 'job:cancelled'];

/** What a hook gets. Times are epoch ms. */
export interface JobEventInfo {
  jobId: string;
  task: string;
  queue: string;
  tenant: string | null;
  /** 1-based attempt that started or ended. */
  attempt: number;
  maxAttempts: number;
  /** Correlates the job's log lines with the request that submitted it. */
  traceId: string | null;
  /** When the job was enqueued. */
  enqueuedAt: number;
  /** When this attempt started. */
  startedAt: number;
  /** When this attempt ended (not on `job:started`). */
  finishedAt?: number;
  /** The handler's value (`job:completed`). */
  result?: unknown;
  /** Why the attempt ended (`job:failed`, `job:retrying`, `job:cancelled`). */
  error?: { type: string; message: string };
}

export type LifecycleHook = (info: JobEventInfo) => void | Promise<void>;

/**
 * Hooks on job events, run in the worker process that runs the job. A hook
 * never affects the job: it runs after the fact, and whatever it throws
 * (synchronously or by rejecting) is logged and dropped.
 */
export class Lifecycle {
  private readonly hooks = new Map<LifecycleEvent, LifecycleHook[]>();
  /** A getter: the app's logger exists only once its configuration is read. */
  private readonly logger: () => Logger;

  constructor(logger: Logger | (() => Logger)) {
    this.logger = typeof logger === 'function' ? logger : () => logger;
  }

  /** Registers `fn` for `event`; returns a function that removes it. */
  on(event: LifecycleEvent, fn: LifecycleHook): () => void {
    if (!LIFECYCLE_EVENTS.includes(event)) throw new TypeError(`Unknown job event "${event}" (one of ${LIFECYCLE_EVENTS.join(', ')})`);
    const list = this.hooks.get(event) ?? [];
    list.push(fn);
    this.hooks.set(event, list);
    return () => {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** True when any hook is registered: lets the worker skip building the payloads. */
  get active(): boolean {
    for (const list of this.hooks.values()) if (list.length > 0) return true;
    return false;
  }

  /** True when any hook listens to `event`. */
  has(event: LifecycleEvent): boolean {
    return (this.hooks.get(event)?.length ?? 0) > 0;
  }

  emit(event: LifecycleEvent, info: JobEventInfo): void {
    const list = this.hooks.get(event);
    if (!list) return;
    for (const fn of list) {
      try {
        const out = fn(info);
        if (out && typeof (out as Promise<void>).then === 'function') {
          (out as Promise<void>).then(undefined, (err: unknown) => this.failed(event, info, err));
        }
      } catch (err) {
        this.failed(event, info, err);
      }
    }
  }

  private failed(event: LifecycleEvent, info: JobEventInfo, err: unknown): void {
    this.logger().error({ err, hook: event, job_id: info.jobId, task: info.task, attempt: info.attempt, queue: info.queue, trace_id: info.traceId }, 'job hook threw; the job is not affected');
  }
}
