import { Redis, type RedisOptions } from 'ioredis';
import { BrokerUnavailableError } from '../errors.ts';

/**
 * Two kinds of Redis connection:
 * - `producer` fails fast while Redis is away (no offline queue, one retry),
 *   so that an enqueue answers 503 at once instead of hanging, and nothing is
 *   half-done behind the caller's back;
 * - `worker` waits and reconnects forever, as BullMQ requires for workers
 *   (`maxRetriesPerRequest: null`).
 *
 * Auto-pipelining sends the commands issued in one tick in one socket write,
 * but ioredis builds a Pipeline for each such write and copies every command
 * BullMQ defined on the connection (its ~50 scripts) into it. That pays off
 * only when a tick carries many commands (a recorder batch's reads); the
 * API's few commands per request are cheaper sent as they come.
 */
export function createRedis(url: string, role: 'producer' | 'worker', opts: { autoPipelining?: boolean } = {}): Redis {
  const options: RedisOptions =
    role === 'producer'
      ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 2_000, enableAutoPipelining: opts.autoPipelining ?? false }
      : { maxRetriesPerRequest: null, enableReadyCheck: true, connectTimeout: 5_000 };
  const redis = new Redis(url, {
    ...options,
    // Reconnect with a capped backoff; never give up, Redis may come back.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
    lazyConnect: false,
  });
  // ioredis re-emits connection errors on the instance; unhandled they would
  // crash the process. Callers observe state through `status` instead.
  redis.on('error', () => settled.add(redis));
  redis.once('ready', () => settled.add(redis));
  return redis;
}

/** Connections that have connected or failed at least once. */
const settled = new WeakSet<Redis>();

/** Resolves when a new connection is ready or has failed, or after `timeoutMs`. */
export function firstOutcome(redis: Redis, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      redis.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    redis.once('ready', done);
    redis.once('error', done);
  });
}

/** Resolves once the connection is ready, or rejects after `timeoutMs`. */
export function waitReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new BrokerUnavailableError(new Error(`not ready after ${timeoutMs} ms (status ${redis.status})`)));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off('ready', onReady);
    };
    redis.on('ready', onReady);
  });
}

/** The first-outcome wait of a connection still opening, shared by the calls made meanwhile. */
const opening = new WeakMap<Redis, Promise<void>>();

/** Runs a Redis operation, turning connection failures into {@link BrokerUnavailableError}. */
export async function viaBroker<T>(redis: Redis, op: () => Promise<T>): Promise<T> {
  // A connection still opening for the first time is waited for, briefly, so
  // that the first enqueue of a process does not fail; once a connection has
  // been up or has failed, a lost one fails fast.
  if (!settled.has(redis) && redis.status !== 'ready' && redis.status !== 'end') {
    // One wait per connection, shared: a burst of calls right after start-up
    // would otherwise add a listener pair each (and Node's leak warning past ten).
    let pending = opening.get(redis);
    if (!pending) {
      pending = firstOutcome(redis, 2_000).finally(() => opening.delete(redis));
      opening.set(redis, pending);
    }
    await pending;
  }
  if (redis.status !== 'ready') throw new BrokerUnavailableError(new Error(`connection ${redis.status}`));
  try {
    return await op();
  } catch (err) {
    if (redis.status !== 'ready' || isConnectionError(err)) throw new BrokerUnavailableError(err);
    throw err;
  }
}

function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT' ||
    /Connection is closed|Stream isn't writeable|enableOfflineQueue/i.test(err.message)
  );
}

/**
 * Runs `op` with the connection's socket corked until the commands it issues
 * (in this tick and its promise continuations) are queued, so that they leave
 * in one write. Without auto-pipelining each command is its own socket
 * write, the largest cost of a status read in profiles.
 */
export function inOneWrite<T>(redis: Redis, op: () => Promise<T>): Promise<T> {
  const stream = redis.stream;
  if (!stream || redis.status !== 'ready') return op();
  stream.cork();
  // setImmediate, not nextTick: BullMQ issues some commands after awaiting
  // its client, a promise continuation that runs after nextTick callbacks.
  setImmediate(() => stream.uncork());
  return op();
}
