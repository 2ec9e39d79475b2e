import type { App } from '../app.ts';

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

/** The 503 message naming what is down, e.g. `redis is down` or `redis and store are down`. */
export function notReadyMessage(down: string[]): string {
  return down.length === 1 ? `${down[0]} is down` : `${down.slice(0, -1).join(', ')} and ${down.at(-1)} are down`;
}
