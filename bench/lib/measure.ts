/** Timing helpers. Every time is performance.now() (monotonic, ms). */
import { performance } from 'node:perf_hooks';

export const now = (): number => performance.now();

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Calls `fn(i)` for i in [0, n) with at most `inFlight` calls pending at
 * once (each of `inFlight` lanes awaits its call, then takes the next index).
 * Returns the elapsed ms from the first call to the last completion.
 */
export async function runPool(n: number, inFlight: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = now();
  const lane = async () => {
    while (next < n) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
  return now() - start;
}

/**
 * Polls `probe` every `intervalMs` until it returns true; resolves with the
 * time (performance.now()) of the first true answer. Throws after
 * `timeoutMs`, with `describe()` in the message.
 */
export async function pollUntil(probe: () => Promise<boolean>, opts: { intervalMs: number; timeoutMs: number; what: string; describe?: () => Promise<string> }): Promise<number> {
  const deadline = now() + opts.timeoutMs;
  for (;;) {
    if (await probe()) return now();
    if (now() > deadline) {
      const state = opts.describe ? await opts.describe().catch((e: Error) => e.message) : '';
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${state ? ` (${state})` : ''}`);
    }
    await sleep(opts.intervalMs);
  }
}

/** Jobs (or requests) per second. */
export function perSecond(count: number, ms: number): number {
  return ms > 0 ? (count * 1000) / ms : 0;
}

/** Nearest-rank percentile of ascending-sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function ratio(celerity: number, bullmq: number): number {
  return bullmq > 0 ? celerity / bullmq : NaN;
}

/** Rounds for the JSON: 3 significant decimals for small numbers, integers for large ones. */
export function round(x: number): number {
  if (!Number.isFinite(x)) return x;
  const abs = Math.abs(x);
  if (abs >= 100) return Math.round(x);
  if (abs >= 1) return Math.round(x * 100) / 100;
  return Math.round(x * 1000) / 1000;
}
