import type { FastifyRateLimitStore } from '@fastify/rate-limit';
import type { RedisClient } from '../broker/connection.ts';

/** How often a process adds the requests it counted since to the shared counts in Redis. */
export const FLUSH_INTERVAL_MS = 50;
/**
 * How old the shared count a process knows may be for it to count a request
 * by itself; an older one (a key quiet here, busy elsewhere) is asked again.
 * A busy key's flushes answer every FLUSH_INTERVAL_MS and keep it fresh.
 */
export const FRESH_MS = 2 * FLUSH_INTERVAL_MS;
/** Keys a process counts locally at most; past that, each request of a new key is counted in Redis directly. */
const MAX_LOCAL_KEYS = 100_000;
/** How often ended windows are dropped from memory, at most. */
const SWEEP_INTERVAL_MS = 10_000;

/**
 * Adds `ARGV[1]` to a window's count, starting the window (`ARGV[2]` ms) when
 * the key is new; answers the count and the ms left. A key without an expiry
 * (left by hand) is given one rather than counting for ever.
 */
const ADD_SCRIPT = `
local current = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = -1
if current ~= tonumber(ARGV[1]) then ttl = redis.call('PTTL', KEYS[1]) end
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {current, ttl}
`;

type AddReply = [current: number, ttlMs: number];
type RateLimitRedis = RedisClient & { celerityRateLimitAdd(key: string, amount: number, windowMs: number): Promise<AddReply> };

/** One key's window as this process knows it. */
interface Window {
  /** Date.now() at which the window ends. */
  end: number;
  windowMs: number;
  /** The shared count as Redis last answered it, this process's additions included. */
  shared: number;
  /** Date.now() of that answer. */
  seenAt: number;
  /** Counted here since, not yet sent. */
  pending: number;
  /** Sent, not yet answered. */
  sending: number;
}

type IncrCallback = Parameters<FastifyRateLimitStore['incr']>[1];

/**
 * A store for @fastify/rate-limit whose counts are shared through Redis
 * without a round trip per request. A request is counted in Redis before it
 * is answered when this process has no fresh word of its key's shared count
 * (the key's first request here, or none answered in the last
 * {@link FRESH_MS} ms); that answer says what every process has spent and
 * when the window ends. The key's next requests are counted here and added
 * to Redis every {@link FLUSH_INTERVAL_MS} ms, every key in one write, and
 * each answer brings the shared count back.
 *
 * A process's own requests are counted exactly. Other processes' show up
 * within FRESH_MS (and a round trip): near the end of a budget, a key served
 * by several processes may get what they let through in that time, e.g. up
 * to 100 more for a key sending 1,000 requests a second in all. That is the
 * price of taking the Redis round trip off busy keys' requests: per request,
 * it cost about a quarter of the CPU of a job status read, measured.
 */
export class BatchedRedisStore implements FastifyRateLimitStore {
  private readonly redis: RateLimitRedis;
  private readonly namespace: string;
  private readonly onError: (err: unknown) => void;
  private readonly windows = new Map<string, Window>();
  /** Keys with counts not yet sent. */
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private lastSweep = Date.now();

  /** `namespace` prefixes every key in Redis; `onError` hears of counts lost to a failed flush. */
  constructor(redis: RedisClient, namespace: string, onError: (err: unknown) => void = () => {}) {
    if (!('celerityRateLimitAdd' in redis)) redis.defineCommand('celerityRateLimitAdd', { numberOfKeys: 1, lua: ADD_SCRIPT });
    this.redis = redis as RateLimitRedis;
    this.namespace = namespace;
    this.onError = onError;
  }

  incr(key: string, callback: IncrCallback, timeWindow: number): void {
    const now = Date.now();
    const known = this.windows.get(key);
    if (known !== undefined && now < known.end && now - known.seenAt < FRESH_MS) {
      known.pending++;
      this.dirty.add(key);
      this.schedule();
      callback(null, { current: known.shared + known.sending + known.pending, ttl: known.end - now });
      return;
    }
    this.redis.celerityRateLimitAdd(this.namespace + key, 1, timeWindow).then(
      ([current, ttl]) => {
        this.remember(key, current, ttl, timeWindow);
        callback(null, { current, ttl });
      },
      (err: Error) => callback(err),
    );
  }

  /** One store serves every route: budgets are per caller, not per route. */
  child(): FastifyRateLimitStore {
    return this;
  }

  /** Sends what was counted and not yet sent; resolves when Redis has answered (or failed). */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = Date.now();
    const sends: Promise<void>[] = [];
    for (const key of this.dirty) {
      const w = this.windows.get(key);
      if (w === undefined || w.pending === 0) continue;
      const amount = w.pending;
      w.pending = 0;
      // Counted in a window that has ended since: that window is over.
      if (now >= w.end) continue;
      w.sending += amount;
      sends.push(
        this.redis.celerityRateLimitAdd(this.namespace + key, amount, w.windowMs).then(
          ([current, ttl]) => {
            // Answers come in the order of the commands: `current` holds every
            // earlier addition of this process, and none of the later ones.
            const at = Date.now();
            w.sending -= amount;
            w.shared = current;
            w.seenAt = at;
            w.end = at + ttl;
          },
          (err: unknown) => {
            // Lost, as any count is while Redis is away: the limits fail open.
            w.sending -= amount;
            this.onError(err);
          },
        ),
      );
    }
    this.dirty.clear();
    this.flushing = Promise.all(sends).then(() => {});
    return this.flushing;
  }

  /** Sends the last counts; for the server's close. */
  async close(): Promise<void> {
    await this.flushing;
    await this.flush();
  }

  private remember(key: string, current: number, ttl: number, windowMs: number): void {
    const now = Date.now();
    const known = this.windows.get(key);
    if (known !== undefined) {
      // The window this process knew has ended; requests it counted there and never sent are that window's.
      if (now >= known.end) known.pending = 0;
      // Answers come in order: this one is the latest (concurrent first requests of a key).
      known.shared = current;
      known.seenAt = now;
      known.end = now + ttl;
      known.windowMs = windowMs;
      return;
    }
    // Ended windows are dropped in a sweep now and then rather than by a timer per key.
    if (now - this.lastSweep >= SWEEP_INTERVAL_MS) {
      this.lastSweep = now;
      for (const [k, w] of this.windows) if (now >= w.end && w.sending === 0) this.windows.delete(k);
    }
    if (this.windows.size >= MAX_LOCAL_KEYS) return;
    this.windows.set(key, { end: now + ttl, windowMs, shared: current, seenAt: now, pending: 0, sending: 0 });
  }

  private schedule(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => void this.flush(), FLUSH_INTERVAL_MS);
    // Pending counts never hold a process open; close() sends them.
    this.timer.unref();
  }
}
