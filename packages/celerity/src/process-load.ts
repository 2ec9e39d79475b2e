import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/**
 * Jobs this process has added or started, counted for {@link busyProbe}.
 * Process-wide, as the event loop it speaks for.
 */
let jobsTouched = 0;

/** Counts a job added or started by this process. */
export function touchJobs(n = 1): void {
  jobsTouched += n;
}

/**
 * A probe of whether this process's event loop is busy with jobs of its
 * own (adding them, or running them): busy when, since the probe's last
 * call, the loop was at least `threshold` utilised and the process added or
 * started a job. A process that only records (a `celerity recorder`, or an
 * API process serving reads) is never busy by this measure, however hard it
 * works.
 */
export function busyProbe(threshold = 0.7): () => boolean {
  let last: EventLoopUtilization = performance.eventLoopUtilization();
  let touched = jobsTouched;
  return () => {
    const now = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(now, last).utilization;
    last = now;
    const active = jobsTouched !== touched;
    touched = jobsTouched;
    return active && utilization >= threshold;
  };
}
