import type { Worker as BullWorker } from 'bullmq';
import { ChurnMap, ChurnSet } from '../churn-map.ts';

/**
 * Gives a BullMQ worker, before it runs, collections that do not keep
 * finished jobs alive after a full collection (src/churn-map.ts says how a
 * `Map` or `Set` does). BullMQ's worker adds and deletes an entry per job in
 * two of them:
 * - `lockManager.trackedJobs`, a `Map` of the jobs whose locks it renews,
 *   made in the worker's constructor (replaced here while empty);
 * - the main loop's `AsyncFifoQueue.pending`, a `Set` of the promises of
 *   the jobs being fetched or run, made when the loop starts (`run()`): the
 *   loop stores the queue in `mainLoopQueue` before adding anything to it,
 *   so an accessor on this worker swaps the set as the queue is stored.
 * Both are BullMQ internals, used only through `get`/`set`/`delete`/`size`/
 * iteration (`has`/`add` for the set), as BullMQ 6.7 (pinned) does;
 * test/bullmq-assumptions.test.ts checks that they are still there and
 * replaced. A BullMQ whose worker lacks them is left as it is: it runs,
 * only without the gain (run 32 of docs/benchmarks.md).
 *
 * Returns which of the two were replaced (the second one when the loop
 * starts).
 */
export function useChurnTables(worker: BullWorker): { trackedJobs: boolean; pending: () => boolean } {
  const internals = worker as unknown as { lockManager?: { trackedJobs?: unknown }; mainLoopQueue?: unknown };
  let trackedJobs = false;
  const lockManager = internals.lockManager;
  if (lockManager && lockManager.trackedJobs instanceof Map && lockManager.trackedJobs.size === 0) {
    lockManager.trackedJobs = new ChurnMap();
    trackedJobs = true;
  }

  let pending = false;
  const own = Object.getOwnPropertyDescriptor(worker, 'mainLoopQueue');
  // A data property set to null by the constructor (a class field, or an
  // assignment): anything else is a BullMQ this code does not know.
  if (own && 'value' in own && own.value === null && own.configurable) {
    let queue: unknown = null;
    Object.defineProperty(worker, 'mainLoopQueue', {
      configurable: true,
      enumerable: own.enumerable ?? true,
      get: () => queue,
      set: (value: unknown) => {
        const fifo = value as { pending?: unknown } | null;
        if (fifo && fifo.pending instanceof Set && fifo.pending.size === 0) {
          fifo.pending = new ChurnSet();
          pending = true;
        }
        queue = value;
      },
    });
  }
  return { trackedJobs, pending: () => pending };
}
