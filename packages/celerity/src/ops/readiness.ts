import type { App } from '../app.ts';
import { historyLagMs } from '../store/history-lag.ts';

/** `up` or `down`, as `/healthz` and `/readyz` report a dependency. */
export type DependencyState = 'up' | 'down';

/**
 * How long a readiness check waits for Redis or SQL. Kubernetes probes time
 * out after 1 s by default; answering 503 before that tells the operator
 * which dependency is slow, where a probe timeout says nothing.
 */
export const PROBE_TIMEOUT_MS = 800;

/**
 * Resolves with `op`'s value, or rejects after `ms`. The operation itself is
 * not cancelled: callers only use this for idempotent reads.
 */
export function withTimeout<T>(op: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([op, timeout]).finally(() => clearTimeout(timer));
}

/**
 * A PING round trip on the app's producer connection. The connection's
 * status alone is not enough: a half-open socket (Redis paused, a network
 * partition) stays `ready` until TCP gives up, minutes later.
 */
export async function probeRedis(app: App, timeoutMs = PROBE_TIMEOUT_MS): Promise<DependencyState> {
  try {
    // The producer connection fails fast (no offline queue), so a PING while
    // it reconnects is refused at once instead of waiting for the timeout.
    const broker = app.broker;
    const roundTrip = async () => {
      // A connection opening (the process's first probe) is worth waiting for.
      if (broker.redis.status === 'wait' || broker.redis.status === 'connecting') await broker.ready(timeoutMs);
      await broker.redis.ping();
    };
    await withTimeout(roundTrip(), timeoutMs, 'Redis');
    return 'up';
  } catch {
    return 'down';
  }
}

/** A `select 1` on the job store, bounded: an unreachable PostgreSQL host can otherwise hang for the OS's connect timeout. */
export async function probeStore(app: App, timeoutMs = PROBE_TIMEOUT_MS): Promise<DependencyState> {
  try {
    await withTimeout(app.store.ping(), timeoutMs, 'the job store');
    return 'up';
  } catch {
    return 'down';
  }
}

/** Redis and the job store, probed together; `down` names those that did not answer, for {@link notReadyMessage}. */
export async function probeDependencies(app: App, timeoutMs = PROBE_TIMEOUT_MS): Promise<{ redis: DependencyState; store: DependencyState; down: string[] }> {
  const [redis, store] = await Promise.all([probeRedis(app, timeoutMs), probeStore(app, timeoutMs)]);
  return { redis, store, down: [...(redis === 'down' ? ['redis'] : []), ...(store === 'down' ? ['store'] : [])] };
}

/** The 503 message naming what is down, e.g. `redis is down` or `redis and store are down`. */
export function notReadyMessage(down: string[]): string {
  return down.length === 1 ? `${down[0]} is down` : `${down.slice(0, -1).join(', ')} and ${down.at(-1)} are down`;
}

/**
 * How far the SQL history trails each of the app's queues (ms; see
 * {@link historyLagMs}), read from Redis. Queues without a recorders' group
 * (no recorder ever ran) and queues that did not answer in time are left out:
 * Redis being down is {@link probeRedis}'s to report.
 */
export async function measureHistoryLag(app: App, timeoutMs = PROBE_TIMEOUT_MS): Promise<Map<string, number>> {
  const queues = new Set([...app.queueNames(), ...(app.config.queues ?? [])]);
  const broker = app.broker;
  const lags = new Map<string, number>();
  await Promise.all(
    [...queues].map(async (queue) => {
      try {
        const lag = await withTimeout(historyLagMs(broker.redis, broker.eventsKey(queue)), timeoutMs, 'Redis');
        if (lag !== null) lags.set(queue, lag);
      } catch {
        // Unknown for now; see above.
      }
    }),
  );
  return lags;
}

/** The history's readiness: `lagging` once it trails by more than `CELERITY_RECORDER_MAX_LAG` (0: never). */
export interface HistoryProbe {
  state: 'up' | 'lagging';
  /** The largest lag over the app's queues, in ms; null when unknown or not checked. */
  lagMs: number | null;
}

export async function probeHistory(app: App, timeoutMs = PROBE_TIMEOUT_MS): Promise<HistoryProbe> {
  const maxLag = app.config.recorderMaxLag;
  if (maxLag === 0) return { state: 'up', lagMs: null };
  const lags = [...(await measureHistoryLag(app, timeoutMs)).values()];
  const lagMs = lags.length > 0 ? Math.max(...lags) : null;
  return { state: lagMs !== null && lagMs > maxLag ? 'lagging' : 'up', lagMs };
}

/** The 503 message of a lagging history. */
export function laggingMessage(probe: HistoryProbe, maxLagMs: number): string {
  return `the job history trails the queues by ${Math.round((probe.lagMs ?? 0) / 1000)} s (more than CELERITY_RECORDER_MAX_LAG, ${maxLagMs} ms): a recorder is stuck, or none runs`;
}
