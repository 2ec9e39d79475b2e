import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { ProgressUpdate } from '../task.ts';

/**
 * Merges progress updates into one snapshot and writes it to the job's hash
 * (BullMQ `updateProgress`, which also emits a `progress` event for the
 * recorder). While a write is in flight further updates only merge, so a
 * handler reporting in a tight loop costs one write per round trip.
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
    return this.inflight;
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
