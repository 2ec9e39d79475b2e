import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ProgressUpdate } from '../task.ts';

/**
 * Merges progress updates into one snapshot and writes it to the job's hash
 * (BullMQ `updateProgress`, which also emits a `progress` event for the
 * recorder). While a write is in flight further updates only merge, so a
 * handler reporting in a tight loop costs one write per round trip.
 *
 * `update` never waits for Redis: it resolves on the next turn of the event loop, whatever the write
 * does. The worker's connection queues commands while Redis is unreachable,
 * so a write in flight during an outage waits for Redis to come back; a
 * handler that awaited it would stand still for the whole outage while its
 * hard limit kept counting, and fail with `TimeLimitExceeded` for nothing.
 * Memory stays bounded meanwhile: one merged snapshot, one write in flight.
 * The worker awaits {@link settled} before it completes the job, so the last
 * snapshot lands before the completion (which needs Redis too).
 */
export class ProgressReporter {
  private snapshot: ProgressUpdate = {};
  private dirty = false;
  private inflight: Promise<void> | null = null;

  private readonly job: Job;
  private readonly log: () => Logger;

  constructor(job: Job, log: () => Logger) {
    this.job = job;
    this.log = log;
  }

  update(update: ProgressUpdate): Promise<void> {
    this.snapshot = { ...this.snapshot, ...update };
    this.dirty = true;
    this.inflight ??= this.flush();
    // Resolves on the next turn of the event loop, not at once: a handler
    // whose other awaits settle synchronously (SQLite writes, CPU-bound
    // loops) would otherwise never yield, and neither this write nor
    // anything else of the process (lock renewal, status reads) would run
    // until it returned.
    return new Promise((resolve) => setImmediate(resolve));
  }

  /** Resolves once the latest snapshot is written. */
  async settled(): Promise<void> {
    await this.inflight;
  }

  private async flush(): Promise<void> {
    try {
      while (this.dirty) {
        this.dirty = false;
        try {
          await this.job.updateProgress({ ...this.snapshot });
        } catch (err) {
          // Progress is advisory: losing one snapshot must not fail the job.
          this.log().warn({ err }, 'progress update not written');
        }
      }
    } finally {
      this.inflight = null;
    }
  }
}
