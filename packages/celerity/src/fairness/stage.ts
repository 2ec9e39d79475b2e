import type { Logger } from 'pino';
import type { Broker } from '../broker/broker.ts';
import { FairDispatcher } from './dispatcher.ts';
import { isFairQueue } from './park.ts';
import { applyConfiguredWeights } from './weights.ts';

/** How often a worker's dispatchers dispatch and sweep without being asked (ms). */
export const FAIR_TICK_MS = 1_000;
/** Least time between a worker's dispatch passes (ms): see DispatcherOptions.minGapMs. */
export const WORKER_GAP_MS = 3;
/** A job taken from a backlog and not promoted within this long is promoted by the sweep (ms). */
export const FAIR_STALE_MS = 5_000;

const producerDispatchers = new WeakMap<Broker, Map<string, FairDispatcher>>();

/** The dispatcher a producer triggers after adding jobs to a fair queue; one per broker and queue. */
export function producerDispatcher(broker: Broker, queue: string): FairDispatcher {
  let byQueue = producerDispatchers.get(broker);
  if (!byQueue) {
    byQueue = new Map();
    producerDispatchers.set(broker, byQueue);
  }
  let d = byQueue.get(queue);
  if (!d) {
    d = new FairDispatcher({ redis: broker.redis, queue: broker.queue(queue), prefix: broker.config.prefix, window: broker.config.fairWindow });
    byQueue.set(queue, d);
  }
  return d;
}

/** What a worker does for the fair queues it consumes. */
export interface WorkerFairness {
  /** Writes the configured weights, starts the timers, dispatches once. */
  start(): void;
  /** A job of the queue ended (a slot is free): dispatch. */
  jobFinished(queue: string): void;
  stop(): Promise<void>;
}

/**
 * The fair stage of a worker: one dispatcher per fair queue it consumes,
 * triggered by each finished job and by a timer. Undefined when it consumes
 * no fair queue, so other queues pay nothing.
 */
export function workerFairness(broker: Broker, queues: readonly string[], logger: Logger): WorkerFairness | undefined {
  const fair = queues.filter((q) => isFairQueue(broker, q));
  if (fair.length === 0) return undefined;
  const dispatchers = new Map(
    fair.map((q) => [q, new FairDispatcher({ redis: broker.redis, queue: broker.queue(q), prefix: broker.config.prefix, window: broker.config.fairWindow, minGapMs: WORKER_GAP_MS, logger })]),
  );
  return {
    start() {
      for (const [queue, d] of dispatchers) {
        // The producer connection fails fast: wait for it before the first writes.
        broker
          .ready(30_000)
          .then(() => applyConfiguredWeights(broker.redis, broker.config.prefix, queue, broker.config.fairWeights ?? []))
          .catch((err: unknown) => logger.warn({ err, queue }, 'could not write the configured tenant weights'))
          .finally(() => d.trigger());
        d.startTimer(FAIR_TICK_MS, FAIR_STALE_MS);
      }
    },
    jobFinished(queue) {
      dispatchers.get(queue)?.trigger();
    },
    async stop() {
      await Promise.all([...dispatchers.values()].map((d) => d.stop()));
    },
  };
}
