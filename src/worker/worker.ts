import { Worker as BullWorker, type Job, type MinimalJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { createRedis } from '../broker/connection.ts';
import { backoffDelay, type Task } from '../task.ts';
import { runJob } from './run-job.ts';

export interface WorkerOptions {
  brokerUrl: string;
  prefix: string;
  /** Routing queues to consume. */
  queues: string[];
  /** Jobs run at once, per queue. */
  concurrency: number;
  tasks: ReadonlyMap<string, Task>;
  logger: Logger;
}

/**
 * Consumes the given queues with one BullMQ worker each. BullMQ owns the
 * fetch/lock/ack protocol; Celerity adds input validation, the task context
 * and its backoff policy.
 */
export class Worker {
  private readonly workers: BullWorker[] = [];
  private readonly connection: Redis;

  private readonly opts: WorkerOptions;

  constructor(opts: WorkerOptions) {
    this.opts = opts;
    this.connection = createRedis(opts.brokerUrl, 'worker');
  }

  start(): void {
    const { tasks, logger } = this.opts;
    for (const queue of this.opts.queues) {
      const worker = new BullWorker(
        queue,
        (job: Job, _token?: string, signal?: AbortSignal) =>
          runJob(job, tasks.get(job.name), queue, logger, signal ?? new AbortController().signal),
        {
          connection: this.connection,
          prefix: this.opts.prefix,
          concurrency: this.opts.concurrency,
          autorun: false,
          settings: {
            // Jobs carry `backoff: {type: 'celerity'}`; the policy itself is
            // the task's, so a redeployed worker applies the current one.
            backoffStrategy: (attemptsMade: number, _type?: string, _err?: Error, job?: MinimalJob) => {
              const task = job ? tasks.get(job.name) : undefined;
              return task ? backoffDelay(task.backoff, attemptsMade) : 0;
            },
          },
        },
      );
      worker.on('error', (err) => logger.error({ err, queue }, 'worker error'));
      worker.on('failed', (job, err) => {
        if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
          logger.warn({ job_id: job.id, task: job.name, queue, error: { type: err.name, message: err.message } }, 'job failed');
        }
      });
      void worker.run().catch((err) => logger.error({ err, queue }, 'worker stopped'));
      this.workers.push(worker);
    }
    logger.info({ queues: this.opts.queues, concurrency: this.opts.concurrency }, 'worker started');
  }

  /** Resolves when every BullMQ worker is connected and fetching. */
  async ready(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
  }

  /** Stops fetching and waits for running jobs to finish (`force` abandons them). */
  async close(force = false): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close(force)));
    this.connection.disconnect();
  }
}
