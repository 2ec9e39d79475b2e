import type { Metrics, Queue } from 'bullmq';
import type { Broker } from '../broker/broker.ts';
import { PARK_DELAY_MS } from '../broker/fair-keys.ts';
import { viaBroker } from '../broker/connection.ts';

/**
 * The BullMQ states counted for each queue. No `paused`: since BullMQ 6 the
 * jobs of a paused queue stay in `waiting`, and the queue says it is paused.
 */
export const COUNTED_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'waiting-children', 'completed', 'failed'] as const;

export type CountedState = (typeof COUNTED_STATES)[number];

/** Finished jobs over the last 1, 5 and 15 minutes (see {@link throughputOf}). */
export interface Throughput {
  m1: number;
  m5: number;
  m15: number;
}

/** One queue's state, as `celerity inspect queues` and `GET /v1/queues` show it. */
export interface QueueStats {
  name: string;
  counts: Record<CountedState, number>;
  /** Paused with `Queue.pause()`: its jobs wait until it is resumed. */
  paused: boolean;
  /**
   * Ms since the oldest waiting job was enqueued (or its delay ended): the
   * tail of the wait list, or the next job of the prioritized set, whichever
   * is older. Null when nothing waits.
   */
  oldestWaitingAgeMs: number | null;
  throughput: { completed: Throughput; failed: Throughput };
}

const MINUTE = 60_000;

/**
 * Counts, oldest waiting job and throughput of each queue, from BullMQ:
 * `getJobCounts`, the oldest entry of the wait list and the first of the
 * prioritized set, and the per-minute metrics its workers keep (enabled by
 * Celerity's workers). Redis being away throws `BrokerUnavailableError`.
 */
export async function queueStats(broker: Broker, queues: readonly string[], now: () => number = Date.now): Promise<QueueStats[]> {
  return viaBroker(broker.redis, () => Promise.all(queues.map((name) => oneQueue(broker.queue(name), now))));
}

async function oneQueue(queue: Queue, now: () => number): Promise<QueueStats> {
  const [counts, paused, oldest, completed, failed] = await Promise.all([
    queue.getJobCounts(...COUNTED_STATES),
    queue.isPaused(),
    // One job per state: the wait list's tail (next to run, FIFO) and the
    // prioritized set's head. Older low-priority jobs may sit further in the
    // set; finding them would mean reading the whole set.
    queue.getJobs(['wait', 'prioritized'], 0, 0, true),
    // 15 points cover the current minute and the 14 before it (see throughputOf).
    queue.getMetrics('completed', 0, 14),
    queue.getMetrics('failed', 0, 14),
  ]);
  const at = now();
  // A parked job of a fair queue (src/fairness) carries a delay it never waited out: it has waited since its submission.
  const since = oldest.map((j) => j.timestamp + (j.opts.delay === PARK_DELAY_MS ? 0 : (j.opts.delay ?? 0)));
  return {
    name: queue.name,
    counts: Object.fromEntries(COUNTED_STATES.map((s) => [s, counts[s] ?? 0])) as Record<CountedState, number>,
    paused,
    oldestWaitingAgeMs: since.length > 0 ? Math.max(0, at - Math.min(...since)) : null,
    throughput: { completed: throughputOf(completed, at), failed: throughputOf(failed, at) },
  };
}

/**
 * Jobs finished in the current clock minute (`m1`), and in it and the 4
 * (`m5`) or 14 (`m15`) before it, from BullMQ's per-minute metrics.
 *
 * BullMQ keeps a running `count`, and on the first job of a new minute
 * pushes the previous minutes' totals (zeros for empty ones) onto a list,
 * newest first, and remembers that job's time as `prevTS`. So the minute of
 * `prevTS` holds `count - prevCount` jobs so far, and `data[i]` is the minute
 * `i + 1` before it. Minutes after `prevTS`, up to now, saw no job at all.
 */
export function throughputOf(metrics: Metrics, now: number): Throughput {
  const { count, prevTS, prevCount } = metrics.meta;
  if (!prevTS) return { m1: 0, m5: 0, m15: 0 };
  const nowMin = Math.floor(now / MINUTE);
  const lastMin = Math.floor(prevTS / MINUTE);
  const perMinute: [minute: number, jobs: number][] = [[lastMin, Math.max(0, count - prevCount)]];
  metrics.data.forEach((jobs, i) => perMinute.push([lastMin - 1 - i, jobs]));
  // A minute after nowMin (the worker's clock ahead of ours) counts as the current one.
  const within = (minutes: number) => perMinute.reduce((sum, [m, jobs]) => (m > nowMin - minutes ? sum + jobs : sum), 0);
  return { m1: within(1), m5: within(5), m15: within(15) };
}
