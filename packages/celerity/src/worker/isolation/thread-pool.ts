import { Worker as Thread } from 'node:worker_threads';
import type { Logger } from 'pino';
import { NonRetryableError, Retry, UpstreamRateLimit } from '../../errors.ts';
import type { ProgressUpdate } from '../../task.ts';
import type { LoggedLine } from '../job-log.ts';
import type { FromThread, ToThread, WireError } from './protocol.ts';

export interface ThreadPoolOptions {
  /** file: URL of the app module each thread imports. */
  appModule: string;
  /** Replace a thread after it ran this many jobs (Celery's max_tasks_per_child). */
  maxTasksPerChild?: number | undefined;
  /** Replace a thread whose heap exceeds this many MB after a job (Celery's max_memory_per_child). */
  maxMemoryPerChild?: number | undefined;
  logger: Logger;
}

export type RunRequest = Omit<Extract<ToThread, { type: 'run' }>, 'type'>;

/** One job running in a thread. */
export interface ThreadRun {
  result: Promise<unknown>;
  /** Aborts the job's `ctx.signal` inside the thread. */
  abort(reason: Error): void;
  /** Stops the thread at once, even in a loop that never yields; `result` rejects with `reason`. */
  terminate(reason: Error): Promise<void>;
}

interface Member {
  thread: Thread;
  ready: Promise<void>;
  jobs: number;
  busy: boolean;
  onMessage?: (msg: FromThread) => void;
  onExit?: (err: Error) => void;
}

// Threads load the app through the same TypeScript loader as the CLI.
const THREAD_ENTRY = new URL('./thread-entry.mjs', import.meta.url);

/**
 * Runs isolated tasks in worker threads, one job per thread at a time.
 *
 * Why threads: `Worker.terminate()` stops a thread even inside `while (true)`
 * (V8 terminates the isolate), so a hard time limit or a cancellation really
 * ends the code, at a fraction of a child process's start-up time and memory.
 * BullMQ's sandboxed processors were the alternative, but they are per queue
 * (one processor file) rather than per task, and their time limits would
 * still be ours to write.
 */
export class ThreadPool {
  private readonly idle: Member[] = [];
  private readonly all = new Set<Member>();
  private readonly opts: ThreadPoolOptions;
  private closed = false;

  constructor(opts: ThreadPoolOptions) {
    this.opts = opts;
  }

  get size(): number {
    return this.all.size;
  }

  run(request: RunRequest, onProgress: (update: ProgressUpdate) => void, onLog: (line: LoggedLine) => void = () => {}): ThreadRun {
    const member = this.idle.pop() ?? this.spawn();
    member.busy = true;
    let settle!: { resolve: (v: unknown) => void; reject: (e: Error) => void };
    const result = new Promise<unknown>((resolve, reject) => (settle = { resolve, reject }));
    let finished = false;
    const finish = (fn: () => void) => {
      if (finished) return;
      finished = true;
      member.onMessage = undefined;
      member.onExit = undefined;
      fn();
    };
    member.onMessage = (msg) => {
      if (msg.type === 'progress') return onProgress(msg.update);
      if (msg.type === 'log') return onLog(msg.line);
      if (msg.type === 'done' || msg.type === 'failed') {
        finish(() => {
          this.release(member, msg.heapUsed);
          if (msg.type === 'done') settle.resolve(msg.result);
          else settle.reject(fromWire(msg.error));
        });
      }
    };
    member.onExit = (err) => finish(() => settle.reject(err));
    member.ready.then(
      () => member.thread.postMessage({ type: 'run', ...request } satisfies ToThread),
      (err: Error) => finish(() => settle.reject(err)),
    );
    return {
      result,
      abort: (reason) => {
        if (!finished) member.thread.postMessage({ type: 'abort', reason: toWire(reason) } satisfies ToThread);
      },
      terminate: async (reason) => {
        finish(() => settle.reject(reason));
        await this.destroy(member);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.all].map((m) => this.destroy(m)));
  }

  private spawn(): Member {
    const thread = new Thread(THREAD_ENTRY, { workerData: { appModule: this.opts.appModule } });
    const member: Member = { thread, jobs: 0, busy: false, ready: Promise.resolve() };
    member.ready = new Promise<void>((resolve, reject) => {
      const onReady = (msg: FromThread) => {
        if (msg.type === 'ready') {
          thread.off('message', onReady);
          resolve();
        }
      };
      thread.on('message', onReady);
      thread.once('exit', () => reject(new Error('isolation thread exited before it was ready')));
    });
    member.ready.catch(() => {});
    thread.on('message', (msg: FromThread) => member.onMessage?.(msg));
    thread.on('error', (err) => {
      this.opts.logger.error({ err }, 'isolation thread crashed');
      member.onExit?.(err);
    });
    thread.on('exit', (code) => {
      this.forget(member);
      member.onExit?.(new Error(`isolation thread exited with code ${code}`));
    });
    this.all.add(member);
    return member;
  }

  private release(member: Member, heapUsed: number): void {
    member.busy = false;
    member.jobs++;
    const { maxTasksPerChild, maxMemoryPerChild } = this.opts;
    const tooMany = maxTasksPerChild !== undefined && member.jobs >= maxTasksPerChild;
    const tooBig = maxMemoryPerChild !== undefined && heapUsed > maxMemoryPerChild * 1024 * 1024;
    if (this.closed || tooMany || tooBig) {
      if (tooMany || tooBig) this.opts.logger.debug({ jobs: member.jobs, heap_mb: Math.round(heapUsed / 1048576) }, 'recycling isolation thread');
      void this.destroy(member);
      return;
    }
    this.idle.push(member);
  }

  private forget(member: Member): void {
    this.all.delete(member);
    const i = this.idle.indexOf(member);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private async destroy(member: Member): Promise<void> {
    this.forget(member);
    await member.thread.terminate();
  }
}

function toWire(err: Error): WireError {
  return { name: err.name, message: err.message, stack: err.stack, nonRetryable: err instanceof NonRetryableError };
}

/** Rebuilds a thread's error; non-retryable ones stay non-retryable, a retry stays a Retry (with its delay), a rate-limit pause an UpstreamRateLimit. */
function fromWire(w: WireError): Error {
  const e: Error = w.rateLimited
    ? new UpstreamRateLimit(w.rateLimited.ms)
    : w.retry
      ? new Retry(w.retry.reason, w.retry.delay)
      : w.nonRetryable
        ? new NonRetryableError(w.message)
        : new Error(w.message);
  e.name = w.name;
  if (w.stack) e.stack = w.stack;
  return e;
}
