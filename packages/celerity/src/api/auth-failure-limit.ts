import { normalizeIP } from '@fastify/rate-limit';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import { createRedis, firstOutcome, type RedisClient } from '../broker/connection.ts';
import { keys } from '../broker/keys.ts';
import { RateLimitedError } from '../errors.ts';
import { appMetrics } from '../ops/metrics.ts';

/** As the rate limiter's connection: a Redis that hangs must not hold requests long, since they go on anyway. */
const COMMAND_TIMEOUT_MS = 500;
const CONNECT_TIMEOUT_MS = 2_000;
/** While Redis is away every request would have a failure to tell; the log hears of it once in this long. */
const WARN_INTERVAL_MS = 60_000;
/** Blocked addresses this process remembers at most; past that it forgets them all and asks Redis again. */
const MAX_BLOCKED = 100_000;

/**
 * Adds a failure to the window of an address, starting the window (`ARGV[1]`
 * ms) with the first one; answers the count and the ms left. A fixed window:
 * failures while blocked do not make the block last longer.
 */
const FAIL_SCRIPT = `
local current = redis.call('INCR', KEYS[1])
local ttl = -1
if current ~= 1 then ttl = redis.call('PTTL', KEYS[1]) end
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {current, ttl}
`;

/** The count of an address's window and the ms left, without counting: {0, 0} when it has none. */
const READ_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if not current then return {0, 0} end
return {tonumber(current), redis.call('PTTL', KEYS[1])}
`;

type Reply = [count: number, ttlMs: number];
type LimitRedis = RedisClient & {
  celerityAuthFail(key: string, windowMs: number): Promise<Reply>;
  celerityAuthFailRead(key: string): Promise<Reply>;
};

/**
 * A per-IP limit on failed authentications, shared by every API process
 * through Redis: each key sent and refused (a 401) is counted there, under the app's
 * prefix; an address with `limit` failures in the window is refused (429)
 * before its key is looked up, so that a flood of made-up keys costs no SQL.
 *
 * Requests that authenticate are not counted and cost nothing here while
 * this process knows of no blocked address: the addresses it knows to be
 * blocked (from its own failures' counts, or from Redis) sit in memory, and
 * only a request whose key must be read from SQL anyway asks Redis first.
 * So a process learns of a block counted by the others at its next failure
 * or key read from that address; within the key cache's 500 ms, a valid
 * key's requests from there may still pass in a process that has not.
 *
 * Fails open: while Redis is unreachable nothing is counted or refused, and
 * the log says so at most once a minute.
 */
export class AuthFailureLimit {
  readonly limit: number;
  readonly windowMs: number;
  private readonly prefix: string;
  private readonly redis: LimitRedis;
  private readonly log: FastifyBaseLogger;
  private readonly refusals: { inc(): void };
  /** Address → Date.now() at which its block ends. */
  private readonly blocked = new Map<string, number>();
  private healthy: boolean | undefined;
  private lastWarning = 0;

  constructor(app: App, log: FastifyBaseLogger) {
    const { config } = app;
    this.limit = config.authFailureLimit;
    this.windowMs = config.rateLimitWindow;
    this.prefix = config.prefix;
    this.log = log;
    this.refusals = appMetrics(app).authRefusals;
    // A connection of its own, as the rate limiter's: it fails fast (no
    // offline queue, short timeouts) where the broker's would wait for Redis.
    const redis = createRedis(config, 'producer', {
      autoPipelining: true,
      connectTimeout: CONNECT_TIMEOUT_MS,
      commandTimeout: COMMAND_TIMEOUT_MS,
      name: 'celerity:auth-failures',
    });
    redis.defineCommand('celerityAuthFail', { numberOfKeys: 1, lua: FAIL_SCRIPT });
    redis.defineCommand('celerityAuthFailRead', { numberOfKeys: 1, lua: READ_SCRIPT });
    this.redis = redis as LimitRedis;
    redis.on('ready', () => {
      if (this.healthy === false) log.info('failed-authentication limit: Redis is back; failures are counted again');
      this.healthy = true;
    });
    redis.on('error', (err) => {
      this.healthy = false;
      this.warn(err);
    });
  }

  /** Resolves once the connection is up (or has failed once): the first requests are counted. */
  async ready(): Promise<void> {
    if (this.redis.status !== 'ready') await firstOutcome(this.redis, CONNECT_TIMEOUT_MS);
  }

  close(): void {
    this.redis.disconnect();
  }

  /**
   * The refusal of a request whose address this process knows to be
   * blocked, with its Retry-After set; undefined otherwise. No I/O: for the
   * path of every request.
   */
  refusedHere(request: FastifyRequest, reply: FastifyReply): RateLimitedError | undefined {
    if (this.blocked.size === 0) return undefined;
    const ip = ipOf(request);
    const until = this.blocked.get(ip);
    if (until === undefined) return undefined;
    const left = until - Date.now();
    if (left <= 0) {
      this.blocked.delete(ip);
      return undefined;
    }
    return this.refuse(reply, left);
  }

  /** As {@link refusedHere}, asking Redis when this process knows nothing: before a key is read from SQL. */
  async refused(request: FastifyRequest, reply: FastifyReply): Promise<RateLimitedError | undefined> {
    const here = this.refusedHere(request, reply);
    if (here !== undefined) return here;
    // A command would fail at once (no offline queue): fail open without one.
    if (this.redis.status !== 'ready') return undefined;
    const ip = ipOf(request);
    let count: number;
    let ttl: number;
    try {
      [count, ttl] = await this.redis.celerityAuthFailRead(keys.authFailures(this.prefix, ip));
    } catch (err) {
      this.warn(err);
      return undefined;
    }
    if (count < this.limit || ttl <= 0) return undefined;
    this.block(ip, ttl);
    return this.refuse(reply, ttl);
  }

  /**
   * Counts a failed authentication of the request's address. Answers the
   * refusal to send instead of the 401 when the address was blocked already
   * (a process that did not know it yet); undefined otherwise, the 401 goes.
   */
  async failed(request: FastifyRequest, reply: FastifyReply): Promise<RateLimitedError | undefined> {
    if (this.redis.status !== 'ready') return undefined;
    const ip = ipOf(request);
    let count: number;
    let ttl: number;
    try {
      [count, ttl] = await this.redis.celerityAuthFail(keys.authFailures(this.prefix, ip), this.windowMs);
    } catch (err) {
      this.warn(err);
      return undefined;
    }
    if (count < this.limit) return undefined;
    this.block(ip, ttl);
    // The limit-th failure itself is answered 401: the next request is the first refused.
    if (count === this.limit) return undefined;
    reply.removeHeader('www-authenticate');
    return this.refuse(reply, ttl);
  }

  private block(ip: string, ttlMs: number): void {
    const now = Date.now();
    if (this.blocked.size >= MAX_BLOCKED) {
      for (const [address, until] of this.blocked) if (until <= now) this.blocked.delete(address);
      if (this.blocked.size >= MAX_BLOCKED) this.blocked.clear();
    }
    this.blocked.set(ip, now + ttlMs);
  }

  private refuse(reply: FastifyReply, leftMs: number): RateLimitedError {
    const retryAfter = Math.max(1, Math.ceil(leftMs / 1000));
    reply.header('retry-after', String(retryAfter));
    this.refusals.inc();
    return new RateLimitedError('auth_failures', this.limit, this.windowMs, retryAfter);
  }

  private warn(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarning < WARN_INTERVAL_MS) return;
    this.lastWarning = now;
    this.log.warn({ err }, 'failed-authentication limit: Redis is unreachable; failed authentications are not counted or limited until it is back');
  }
}

/** IPv6 addresses count per /64, which one host usually holds whole: walking through it must not multiply the attempts. */
function ipOf(request: FastifyRequest): string {
  return request.ip ? normalizeIP(request.ip) : 'unknown';
}

interface Shared {
  limit: AuthFailureLimit;
  users: number;
}

// One per app, shared by the API's authentication hook and the dashboard's
// login, which may sit in different Fastify contexts (or servers): a block
// either one learns of applies to both at once.
const SHARED = new WeakMap<App, Shared>();

/**
 * The app's limit, or undefined when it is off (`CELERITY_AUTH_FAILURE_LIMIT=0`).
 * Registered with `server`: it waits for the connection on ready and lets go
 * of the limit on close (the connection closes with its last server).
 */
export function useAuthFailureLimit(server: FastifyInstance, app: App): AuthFailureLimit | undefined {
  if (app.config.authFailureLimit === 0) return undefined;
  let shared = SHARED.get(app);
  if (shared === undefined) {
    shared = { limit: new AuthFailureLimit(app, server.log), users: 0 };
    SHARED.set(app, shared);
  }
  const entry = shared;
  entry.users++;
  let released = false;
  server.addHook('onReady', async () => {
    await entry.limit.ready();
  });
  server.addHook('onClose', async () => {
    if (released) return;
    released = true;
    if (--entry.users > 0) return;
    entry.limit.close();
    if (SHARED.get(app) === entry) SHARED.delete(app);
  });
  return entry.limit;
}
