import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { CelerityError, StoreUnavailableError } from '../errors.ts';
import type { JobStore } from '../store/job-store.ts';
import { findKey, parseToken, principalOfKey, secretMatches, touchKeys, type ApiKey } from './key-store.ts';
import type { Principal } from './principal.ts';

/** Why a request was not authenticated; the API answers each with 401. */
export type AuthFailure = 'missing' | 'malformed' | 'invalid';

export type AuthOutcome = { ok: true; principal: Principal } | { ok: false; failure: AuthFailure };

export interface AuthenticatorOptions {
  /**
   * Ms a key read from SQL is trusted before it is read again. A key revoked
   * in any process (they share the store) is refused everywhere within this
   * time; the API promises 1 s.
   */
  cacheMs?: number;
  /** Ms between writes of the keys' last use. */
  touchIntervalMs?: number;
  logger?: Pick<Logger, 'warn'>;
}

interface Cached {
  key: (ApiKey & { secretHash: string }) | undefined;
  /** The stored hash's bytes, decoded once per read of the key. */
  hashBytes: Buffer | undefined;
  /**
   * The secret last presented and found to match the hash, while this read of
   * the key lasts: a request presenting it again is checked by a
   * constant-time comparison with it rather than by a SHA-256, the largest
   * cost of authentication. A wrong secret still takes the hash.
   */
  verified?: Buffer | undefined;
  /** The key's principal, built once per read of the key rather than per request. */
  principal: Principal | undefined;
  at: number;
}

/** Unknown ids are cached too (a flood of made-up keys must not reach SQL each time), so the cache is bounded. */
const MAX_CACHED = 10_000;

/**
 * Turns an `Authorization: Bearer <key>` header into a {@link Principal}.
 * Keys are read from SQL and cached briefly by id; the secret is checked on
 * every request, in constant time. Concurrent requests for a key that is not
 * cached share one read. Last use is recorded in batches, off the request.
 */
export class KeyAuthenticator {
  private readonly cache = new Map<string, Cached>();
  private readonly reads = new Map<string, Promise<Cached>>();
  private readonly uses = new Map<string, number>();
  private readonly cacheMs: number;
  private readonly timer: NodeJS.Timeout;
  private flushing: Promise<void> | undefined;
  private readonly store: () => Promise<JobStore>;
  private readonly opts: AuthenticatorOptions;

  constructor(store: () => Promise<JobStore>, opts: AuthenticatorOptions = {}) {
    this.store = store;
    this.opts = opts;
    this.cacheMs = opts.cacheMs ?? 500;
    this.timer = setInterval(() => void this.flush(), opts.touchIntervalMs ?? 10_000);
    this.timer.unref();
  }

  async authenticate(authorization: string | undefined): Promise<AuthOutcome> {
    const parsed = parseAuthorization(authorization);
    if (typeof parsed === 'string') return { ok: false, failure: parsed };
    return this.check(parsed, this.fresh(parsed.id) ?? (await this.lookup(parsed.id)));
  }

  /**
   * The outcome for a key read less than `cacheMs` ago, or for a header that
   * holds no key at all, without a turn of the event loop: the hot path of
   * every request. Undefined when the key must be read first
   * ({@link authenticate}).
   */
  authenticateCached(authorization: string | undefined): AuthOutcome | undefined {
    const parsed = parseAuthorization(authorization);
    if (typeof parsed === 'string') return { ok: false, failure: parsed };
    const cached = this.fresh(parsed.id);
    return cached ? this.check(parsed, cached) : undefined;
  }

  private fresh(id: string): Cached | undefined {
    const cached = this.cache.get(id);
    return cached && Date.now() - cached.at < this.cacheMs ? cached : undefined;
  }

  private check(parsed: { secret: string }, cached: Cached): AuthOutcome {
    const { key, principal } = cached;
    // The secret is checked even when the key is revoked, so that timing says nothing of which.
    const matches = this.secretMatches(parsed.secret, cached);
    if (!key || !principal || !matches || key.revokedAt !== null) return { ok: false, failure: 'invalid' };
    this.uses.set(key.id, Date.now());
    return { ok: true, principal };
  }

  private secretMatches(secret: string, cached: Cached): boolean {
    if (cached.hashBytes === undefined) return false;
    // Secrets are 43 base64url characters (parseToken): one byte each, so the lengths always agree.
    const presented = Buffer.from(secret, 'latin1');
    const { verified } = cached;
    if (verified !== undefined && verified.length === presented.length && timingSafeEqual(presented, verified)) return true;
    if (!secretMatches(secret, cached.hashBytes)) return false;
    cached.verified = presented;
    return true;
  }

  /** Writes the last use of the keys used since the previous write. */
  async flush(): Promise<void> {
    if (this.flushing || this.uses.size === 0) return this.flushing;
    const uses = new Map(this.uses);
    this.uses.clear();
    this.flushing = (async () => {
      try {
        await touchKeys(await this.store(), uses);
      } catch (err) {
        // Last use is informative; an outage must not fail requests or stop the timer.
        this.opts.logger?.warn({ err }, 'could not record the last use of API keys');
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  private async lookup(id: string): Promise<Cached> {
    let read = this.reads.get(id);
    if (!read) {
      read = (async () => {
        const at = Date.now();
        let key: Cached['key'];
        try {
          key = await findKey(await this.store(), id);
        } catch (err) {
          // Unknown is not the same as unreachable: a 503, never a 401 that would read as "revoked".
          throw err instanceof CelerityError ? err : new StoreUnavailableError(err);
        }
        const entry: Cached = { key, hashBytes: key ? Buffer.from(key.secretHash, 'hex') : undefined, principal: key ? principalOfKey(key) : undefined, at };
        if (this.cache.size >= MAX_CACHED) this.cache.clear();
        this.cache.set(id, entry);
        return entry;
      })().finally(() => this.reads.delete(id));
      this.reads.set(id, read);
    }
    return read;
  }
}

/** The key of an Authorization header, or why there is none. */
function parseAuthorization(authorization: string | undefined): { id: string; secret: string } | 'missing' | 'malformed' {
  if (authorization === undefined || authorization === '') return 'missing';
  const token = bearerToken(authorization);
  return (token === undefined ? undefined : parseToken(token)) ?? 'malformed';
}

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, RFC 6750). */
export function bearerToken(authorization: string): string | undefined {
  const m = /^Bearer +([^\s]+) *$/i.exec(authorization);
  return m?.[1];
}

/** Constant-time equality of two secrets of any length (hashed first, so lengths leak nothing). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
