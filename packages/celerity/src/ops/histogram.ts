/**
 * Fixed log-scale latency buckets, shared by every recorder and both stores,
 * so that histograms written by different processes add up column by column
 * and an hour is exactly the sum of its minutes.
 *
 * Durations are whole milliseconds. Bucket 0 holds 0 ms; bucket k (1..52)
 * holds [2^((k-1)/2), 2^(k/2)) ms, two buckets per doubling; bucket 53 holds
 * everything from 2^26 ms (about 18.6 h) up. Since durations are integers,
 * bucket k is the integers from `ceil(2^((k-1)/2))` to `ceil(2^(k/2)) - 1`;
 * a few small buckets are empty (there is no integer in [1.41, 2)).
 *
 * A percentile read from the buckets is the geometric middle of the integers
 * of the bucket that holds the true (nearest-rank) percentile, so it is
 * within 19% (2^(1/4) - 1) of the true value, and exact below 4 ms. Past the
 * last bound (18.6 h) it is the bound itself: a lower bound.
 */
export const BUCKET_COUNT = 54;

/** `LOWER[k]`: the smallest whole number of ms in bucket k. */
export const BUCKET_LOWER: readonly number[] = Array.from({ length: BUCKET_COUNT }, (_, k) => (k === 0 ? 0 : Math.ceil(2 ** ((k - 1) / 2))));

/** The bucket of a duration in ms (negative counts as 0, fractions are floored). */
export function bucketOf(ms: number): number {
  const v = Math.max(0, Math.floor(ms));
  for (let k = BUCKET_COUNT - 1; k > 0; k--) if (v >= BUCKET_LOWER[k]!) return k;
  return 0;
}

/** The value a percentile falling in bucket k is reported as (see the module's note on error). */
export function bucketEstimate(k: number): number {
  const lower = BUCKET_LOWER[k]!;
  if (k === 0) return 0;
  if (k === BUCKET_COUNT - 1) return lower;
  const upper = BUCKET_LOWER[k + 1]! - 1;
  // Two decimals: rounding to whole ms would add up to 0.5 ms of error to the small buckets.
  return Math.round(Math.sqrt(lower * upper) * 100) / 100;
}

/**
 * The p-th percentile (0 < p <= 1, nearest rank) of a histogram given as
 * its bucket counts; null when it is empty.
 */
export function percentile(counts: readonly number[], p: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(p * total));
  let seen = 0;
  for (let k = 0; k < counts.length; k++) {
    seen += counts[k]!;
    if (seen >= rank) return bucketEstimate(k);
  }
  return bucketEstimate(counts.length - 1);
}
