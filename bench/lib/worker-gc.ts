/**
 * A worker process's garbage collections during a drain, read from V8's
 * own trace (`node --trace-gc-nvp`, one line per collection on stdout):
 * how often the young generation was scavenged, how long each scavenge
 * paused the worker, and how much each promoted to the old generation,
 * which the full collections then have to mark and sweep. What a job
 * leaves reachable after it ends shows here first (docs/benchmarks.md,
 * run 32: the hash tables of a Map churned per job).
 */

/** The node flag that makes a process print the trace this module reads. */
export const GC_TRACE_FLAG = '--trace-gc-nvp';

export interface WorkerGc {
  scavenges: number;
  scavenge_avg_ms: number;
  /** KB moved to the old generation, per scavenge on average. */
  promoted_kb_per_scavenge: number;
  /** Mark-compact collections. */
  full: number;
}

// `[1234:0x5a1b2c3d]     3394 ms: pause=8.5 mutator=76.9 gc=s ... promoted=1151248 ...`
const PREFIX = /^\[\d+:0x[0-9a-f]+\]\s+\d+ ms: /;
const LINE = /^\[\d+:0x[0-9a-f]+\]\s+(\d+) ms: pause=([\d.]+) mutator=[\d.]+ gc=(\w+) .*? promoted=(\d+)/;

/** Whether a line of output is one of V8's GC trace lines (not the process's own output). */
export function isGcTraceLine(line: string): boolean {
  return PREFIX.test(line);
}

/** The collections a process traced from `sinceMs` to `untilMs` (its isolate's clock). */
export function workerGc(stdout: string, sinceMs: number, untilMs = Number.POSITIVE_INFINITY): WorkerGc {
  let scavenges = 0;
  let pauses = 0;
  let promoted = 0;
  let full = 0;
  for (const line of stdout.split('\n')) {
    const m = LINE.exec(line);
    if (!m || Number(m[1]) < sinceMs || Number(m[1]) > untilMs) continue;
    if (m[3] === 's') {
      scavenges++;
      pauses += Number(m[2]);
      promoted += Number(m[4]);
    } else if (m[3] === 'mc') {
      full++;
    }
  }
  return {
    scavenges,
    scavenge_avg_ms: scavenges > 0 ? pauses / scavenges : 0,
    promoted_kb_per_scavenge: scavenges > 0 ? promoted / scavenges / 1024 : 0,
    full,
  };
}
