/**
 * The bench process's garbage collections during a window, from Node's
 * `gc` performance entries: how often the young generation was scavenged
 * and how long each scavenge paused the process, and the full collections.
 * s2 reads it because a scavenge's pause lands on every job waiting in it
 * (docs/benchmarks.md, run 10: what outlived the young generation).
 */
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

export interface GcSummary {
  scavenges: number;
  scavenge_avg_ms: number;
  scavenge_max_ms: number;
  full: number;
  full_ms: number;
}

export class GcWatch {
  private readonly entries: { start: number; ms: number; minor: boolean }[] = [];
  private readonly observer: PerformanceObserver;

  constructor() {
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
        this.entries.push({ start: e.startTime, ms: e.duration, minor: e.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR });
      }
    });
    this.observer.observe({ entryTypes: ['gc'] });
  }

  /** The collections that started within [from, to] (performance.now() times). */
  summary(from: number, to: number): GcSummary {
    const within = this.entries.filter((e) => e.start >= from && e.start <= to);
    const minor = within.filter((e) => e.minor);
    const full = within.filter((e) => !e.minor);
    const total = (xs: typeof within) => xs.reduce((n, e) => n + e.ms, 0);
    return {
      scavenges: minor.length,
      scavenge_avg_ms: minor.length > 0 ? total(minor) / minor.length : 0,
      scavenge_max_ms: minor.reduce((m, e) => Math.max(m, e.ms), 0),
      full: full.length,
      full_ms: total(full),
    };
  }

  stop(): void {
    this.observer.disconnect();
  }
}
