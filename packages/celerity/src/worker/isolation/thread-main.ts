/**
 * Entry point of an isolation thread: imports the app module, then runs one
 * job at a time as the parent asks. The parent may terminate this thread at
 * any moment (hard time limit, cancellation, recycling); nothing here needs
 * cleaning up when that happens, because all state that matters lives in the
 * parent and in Redis.
 */
import { getHeapStatistics } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { importApp } from '../../app-module.ts';
import { NonRetryableError, Retry, UpstreamRateLimit } from '../../errors.ts';
import { parseInput, requestRateLimitPause, requestRetry, type TaskContext } from '../../task.ts';
import { keepingLogger, type LoggedLine } from '../job-log.ts';
import type { FromThread, ToThread, WireError } from './protocol.ts';

const port = parentPort!;
const { appModule } = workerData as { appModule: string };
const app = await importApp(appModule);
let controller = new AbortController();

function send(msg: FromThread): void {
  port.postMessage(msg);
}

function toWire(err: unknown): WireError {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    name: e.name,
    message: e.message,
    stack: e.stack,
    nonRetryable: e instanceof NonRetryableError || ['non_retryable', 'invalid_input'].includes((e as { code?: string }).code ?? ''),
    ...(e instanceof Retry ? { retry: { reason: e.reason, delay: e.delay } } : {}),
    ...(e instanceof UpstreamRateLimit ? { rateLimited: { ms: e.ms } } : {}),
  };
}

function fromWire(w: WireError): Error {
  const e = new Error(w.message);
  e.name = w.name;
  if (w.stack) e.stack = w.stack;
  return e;
}

function sendLine(line: LoggedLine): void {
  try {
    send({ type: 'log', line });
  } catch {
    // Fields that cannot be cloned: the message alone.
    send({ type: 'log', line: { level: line.level, msg: line.msg } });
  }
}

port.on('message', async (msg: ToThread) => {
  if (msg.type === 'abort') {
    controller.abort(fromWire(msg.reason));
    return;
  }
  controller = new AbortController();
  // The parent keeps the job's log (its Redis connection, its caps); lines cross as messages.
  const log = keepingLogger(app.logger.child({ job_id: msg.jobId, task: msg.task, attempt: msg.attempt, queue: msg.queue, isolation: 'thread' }), (line) => sendLine(line));
  try {
    const task = app.task(msg.task);
    if (!task) throw new NonRetryableError(`No task named "${msg.task}" in ${appModule}`);
    const ctx: TaskContext = {
      jobId: msg.jobId,
      task: msg.task,
      queue: msg.queue,
      tenant: msg.tenant,
      attempt: msg.attempt,
      maxAttempts: msg.maxAttempts,
      signal: controller.signal,
      // The parent owns the Redis write and its coalescing.
      progress: async (update) => send({ type: 'progress', update }),
      retry: requestRetry,
      rateLimited: requestRateLimitPause,
      log,
    };
    const result = await task.handler(parseInput(task, msg.input), ctx);
    send({ type: 'done', result: result === undefined ? null : result, heapUsed: getHeapStatistics().used_heap_size });
  } catch (err) {
    send({ type: 'failed', error: toWire(err), heapUsed: getHeapStatistics().used_heap_size });
  }
});

send({ type: 'ready' });
