import { Cluster, type ClusterNode, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { BrokerUnavailableError } from '../errors.ts';

/**
 * A connection to Redis: one server, or a Redis Cluster (`CELERITY_REDIS_CLUSTER=on`).
 * Both speak the same commands; what differs is how they reach the keys
 * (a Cluster routes each command to the node owning its slot).
 */
export type RedisClient = Redis | Cluster;

/** Where Redis is: the configuration's broker URL (in cluster mode, comma-separated seed nodes) and mode. */
export interface RedisTarget {
  brokerUrl: string;
  /** `on`: a Redis Cluster. Absent: one server. */
  redisCluster?: 'on' | 'off' | undefined;
}

/** Tuning a caller may ask of its connection, on top of its role. */
export interface ConnectionTuning {
  /** See {@link createRedis}; producers only. */
  autoPipelining?: boolean;
  connectTimeout?: number;
  /** Ms after which a command is failed (unset: none). */
  commandTimeout?: number;
  /** `CLIENT SETNAME` of the connection (every node's, on a cluster). */
  name?: string;
}

/**
 * Every Redis connection Celerity opens comes from here, with one of three roles:
 * - `producer` fails fast while Redis is away (no offline queue, one retry),
 *   so that an enqueue answers 503 at once instead of hanging, and nothing is
 *   half-done behind the caller's back;
 * - `worker` waits and reconnects forever, as BullMQ requires for workers
 *   (`maxRetriesPerRequest: null`);
 * - `probe` connects once when asked (`connect()`) and never reconnects: a
 *   question whether Redis answers, or a one-off command.
 *
 * Auto-pipelining sends the commands issued in one tick in one socket write,
 * but ioredis builds a Pipeline for each such write and copies every command
 * BullMQ defined on the connection (its ~50 scripts) into it. That pays off
 * only when a tick carries many commands (a recorder batch's reads); the
 * API's few commands per request are cheaper sent as they come.
 *
 * In cluster mode the same roles give an ioredis `Cluster`: the node options
 * (timeouts, retries per request, credentials from the URL) go to every node,
 * the queueing and reconnection policy to the cluster, which rediscovers the
 * slots and follows failovers itself.
 */
export function createRedis(target: RedisTarget, role: 'producer' | 'worker' | 'probe', tuning: ConnectionTuning = {}): RedisClient {
  // Reconnect with a capped backoff; never give up, Redis may come back.
  const backoff = role === 'probe' ? () => null : (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2_000);
  const queueing =
    role === 'worker' ? { enableOfflineQueue: true, enableAutoPipelining: false } : { enableOfflineQueue: false, enableAutoPipelining: role === 'producer' && (tuning.autoPipelining ?? false) };
  const node: RedisOptions = {
    maxRetriesPerRequest: role === 'worker' ? null : role === 'probe' ? 0 : 1,
    connectTimeout: tuning.connectTimeout ?? (role === 'worker' ? 5_000 : role === 'probe' ? 1_000 : 2_000),
    enableReadyCheck: true,
    ...(tuning.commandTimeout !== undefined ? { commandTimeout: tuning.commandTimeout } : {}),
    ...(tuning.name !== undefined ? { connectionName: tuning.name } : {}),
  };
  const lazyConnect = role === 'probe';
  const redis: RedisClient =
    target.redisCluster === 'on'
      ? new Cluster(clusterNodes(target.brokerUrl), {
          ...queueing,
          lazyConnect,
          enableReadyCheck: true,
          clusterRetryStrategy: backoff,
          redisOptions: { ...node, ...nodeCredentials(target.brokerUrl) },
        } satisfies ClusterOptions)
      : new Redis(target.brokerUrl, { ...node, ...queueing, retryStrategy: backoff, lazyConnect });
  // ioredis re-emits connection errors on the instance; unhandled they would
  // crash the process. Callers observe state through `status` instead.
  redis.on('error', () => settled.add(redis));
  redis.once('ready', () => settled.add(redis));
  return redis;
}

/** The seed nodes of a cluster: each URL of a comma-separated list. */
export function clusterNodes(brokerUrl: string): ClusterNode[] {
  return brokerUrl.split(',').map((text) => {
    const url = new URL(text.trim());
    return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || 6379) };
  });
}

/**
 * What every node of a cluster is connected with, from the first seed URL:
 * the user and password, and TLS for `rediss://`. (The nodes the cluster
 * announces are reached by address, so the seeds' other settings would not
 * follow them anyway.)
 */
function nodeCredentials(brokerUrl: string): RedisOptions {
  const url = new URL(brokerUrl.split(',')[0]!.trim());
  return {
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** Connections that have connected or failed at least once. */
const settled = new WeakSet<RedisClient>();

/** Resolves when a new connection is ready or has failed, or after `timeoutMs`. */
export function firstOutcome(redis: RedisClient, timeoutMs: number): Promise<void> {
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
export function waitReady(redis: RedisClient, timeoutMs: number): Promise<void> {
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
const opening = new WeakMap<RedisClient, Promise<void>>();

/** Runs a Redis operation, turning connection failures into {@link BrokerUnavailableError}. */
export async function viaBroker<T>(redis: RedisClient, op: () => Promise<T>): Promise<T> {
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

/**
 * A cluster between masters: while a replica takes over a dead master's
 * slots (about twice `cluster-node-timeout`), ioredis gives up on a command
 * after its redirections (`MOVED` to the dead node, or a closed connection)
 * and Redis may answer `CLUSTERDOWN` or `TRYAGAIN`. The cluster object stays
 * `ready` throughout, so these are told apart by their messages: the broker
 * is unavailable for a moment, and the caller should retry (a 503, not a
 * 500). Seen in a local failover: 3 masters, 3 replicas, one master killed.
 */
const CLUSTER_TRANSIENT = /Too many Cluster redirections|CLUSTERDOWN|TRYAGAIN|Failed to refresh slots cache|None of startup nodes is available/;

function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    err.name === 'ClusterAllFailedError' ||
    code === 'ECONNREFUSED' ||
    code === 'ECONNRESET' ||
    code === 'ETIMEDOUT' ||
    /Connection is closed|Stream isn't writeable|enableOfflineQueue/i.test(err.message) ||
    CLUSTER_TRANSIENT.test(err.message)
  );
}

/**
 * Runs `op` with the connection's socket corked until this turn of the event
 * loop has run its callbacks (`'turn'`, see {@link CorkUntil}), so that the
 * commands it issues, and those of every other call made meanwhile, leave in
 * one write. On a cluster, `op` simply runs.
 */
export function inOneWrite<T>(redis: RedisClient, op: () => Promise<T>): Promise<T> {
  writeTogether(redis, Number.POSITIVE_INFINITY, 'turn');
  return op();
}

/**
 * How long a cork holds: until the promise continuations that follow have
 * run (`'continuations'`), or until the turn of the event loop has run its
 * callbacks (`'turn'`).
 *
 * `'continuations'` sends the commands of a burst that one read of replies
 * resumed (a loop of adds, a worker's moves) as soon as those continuations
 * have issued them. `'turn'` also joins the commands of the turn's other
 * callbacks: an API process handles each request in a callback of its own,
 * so the adds of the requests read in one turn left in a write each, and
 * Redis read and answered each apart. Held to the turn's end (its check
 * phase, where `setImmediate` callbacks run), they leave in one write and
 * their replies come back in one read (docs/benchmarks.md, run 27). The
 * cost is the wait of an add issued early in a busy turn for the turn's
 * other callbacks; its reply could not be read before the next turn anyway.
 */
export type CorkUntil = 'continuations' | 'turn';

/**
 * Corks the connection's socket, if it is not already, until `until` (see
 * {@link CorkUntil}): the commands written meanwhile leave in one `writev`,
 * in the order they were issued, each with its own reply. A call that finds
 * the socket corked joins that cork, whatever its own `until`.
 *
 * Why: without auto-pipelining each command is its own socket write, the
 * largest cost of a status read in profiles and of a burst of enqueues (a
 * loop of `enqueue` calls resumed by one read of replies): one `write`
 * system call per job for the producer, and one `read` for Redis. Unlike
 * ioredis's auto-pipelining, nothing is built per write (see
 * {@link createRedis}).
 *
 * `most` bounds the calls whose commands share one write: past it, what the
 * cork holds leaves at once and a new write begins. A worker's moves to
 * completed, sent all together, drained a quarter to a third slower than
 * one by one (docs/benchmarks.md, runs 18 and 20): Redis waited for the
 * whole write while the worker ran the jobs, then the worker waited for
 * Redis. Nothing on a cluster (one socket per node, none of its own), or on
 * a connection that is not ready (its commands fail or wait as they would).
 */
export function writeTogether(redis: RedisClient, most = Number.POSITIVE_INFINITY, until: CorkUntil = 'continuations'): void {
  if (!(redis instanceof Redis)) return;
  const stream = redis.stream;
  if (!stream || redis.status !== 'ready') return;
  // One cork at a time, however many calls (nothing else corks these
  // sockets): a single uncork sends it all.
  if (stream.writableCorked > 0) {
    if (most === Number.POSITIVE_INFINITY) return;
    const joined = (callsJoined.get(stream) ?? 1) + 1;
    if (joined <= most) {
      callsJoined.set(stream, joined);
      return;
    }
    // The earlier calls' commands leave now; this one's starts the next write.
    stream.uncork();
    stream.cork();
    callsJoined.set(stream, 1);
    return;
  }
  stream.cork();
  callsJoined.set(stream, 1);
  const uncork = () => {
    callsJoined.delete(stream);
    stream.uncork();
  };
  // After the turn's I/O callbacks and their continuations; libuv's poll
  // does not block while an immediate is pending.
  if (until === 'turn') setImmediate(uncork);
  // A nextTick callback queued from a microtask runs once the microtask
  // queue is empty, after the continuations in which BullMQ writes its
  // commands (it awaits its client first); one queued now would run before
  // them.
  else queueMicrotask(() => process.nextTick(uncork));
}

/** Calls whose commands the current cork of a socket holds (for `writeTogether`'s `most`). */
const callsJoined = new WeakMap<object, number>();
