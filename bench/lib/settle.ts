/**
 * Waiting for the machine to go quiet before a scenario's run.
 *
 * A scenario that follows a heavy one (the 1,000,000-row seeds, pg-boss's
 * and Celery's processes) starts while PostgreSQL's autovacuum, its
 * checkpointer and the last children are still busy: in run 23, s7's
 * ratio to pg-boss was 1.34 run alone and 1.08 at the end of the whole
 * run. The load average cannot tell (it decays over a minute); the CPUs'
 * idle time over one second, from /proc/stat, can.
 */
import { readFileSync } from 'node:fs';
import { sleep } from './measure.ts';

/** The machine's idle and total CPU time so far (jiffies, all CPUs), or null off Linux. */
function cpuTimes(): { idle: number; total: number } | null {
  try {
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
    if (fields.length < 5 || fields.some((f) => !Number.isFinite(f))) return null;
    const idle = fields[3]! + fields[4]!; // idle + iowait
    return { idle, total: fields.reduce((a, b) => a + b, 0) };
  } catch {
    return null;
  }
}

/** The share of the CPUs left idle over the next `windowMs`, or null where /proc/stat cannot tell. */
export async function idleShare(windowMs = 1000): Promise<number | null> {
  const a = cpuTimes();
  await sleep(windowMs);
  const b = cpuTimes();
  if (!a || !b || b.total <= a.total) return null;
  return (b.idle - a.idle) / (b.total - a.total);
}

export interface Settled {
  /** Whether the machine reached the threshold before the deadline (true where it cannot be read). */
  settled: boolean;
  /** The last second's idle share, 0..1 (null off Linux). */
  idle: number | null;
  waitedMs: number;
}

/**
 * Waits until the CPUs are at least `threshold` idle over one second, for
 * at most `maxWaitMs`. Never throws: a machine that stays busy is the
 * caller's to note, not a failure.
 */
export async function waitForIdle({ threshold = 0.85, maxWaitMs = 60_000 } = {}): Promise<Settled> {
  const t0 = performance.now();
  for (;;) {
    const idle = await idleShare();
    const waitedMs = Math.round(performance.now() - t0);
    if (idle === null || idle >= threshold) return { settled: true, idle, waitedMs };
    if (waitedMs >= maxWaitMs) return { settled: false, idle, waitedMs };
  }
}
