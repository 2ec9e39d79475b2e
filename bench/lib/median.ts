/**
 * Merges the results of repeated runs of a scenario: every number becomes
 * the median of its values across the runs (so a ratio is the median of the
 * per-run ratios, each taken from a pair measured side by side); anything
 * else is taken from the first run. The runs have the same shape.
 */
import { round } from './measure.ts';

export function median(runs: unknown[]): unknown {
  const first = runs[0];
  if (runs.length === 1) return first;
  if (typeof first === 'number') {
    const xs = (runs as number[]).filter((x) => typeof x === 'number' && !Number.isNaN(x)).sort((a, b) => a - b);
    if (xs.length === 0) return first;
    const mid = Math.floor(xs.length / 2);
    return xs.length % 2 === 1 ? xs[mid]! : round((xs[mid - 1]! + xs[mid]!) / 2);
  }
  if (Array.isArray(first)) return first.map((_, i) => median(runs.map((r) => (r as unknown[])[i])));
  if (first && typeof first === 'object') {
    return Object.fromEntries(Object.keys(first).map((k) => [k, median(runs.map((r) => (r as Record<string, unknown>)[k]))]));
  }
  return first;
}
