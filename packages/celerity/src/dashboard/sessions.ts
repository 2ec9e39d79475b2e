import { createHash, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import { findKey, principalOfKey } from '../auth/key-store.ts';
import type { Principal } from '../auth/principal.ts';
import { viaBroker } from '../broker/connection.ts';
import { CelerityError, StoreUnavailableError } from '../errors.ts';

/** The dashboard's session cookie: an opaque id, HttpOnly, SameSite=Strict. */
export const SESSION_COOKIE = 'celerity_session';
/** The header a cookie-authenticated request that changes state must carry (the session's CSRF token). */
export const CSRF_HEADER = 'x-csrf-token';
/** A session lives this long from its login, whatever its use: a stolen cookie is not good forever. */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/**
 * Ms a key read for a session is trusted, the same promise as the Bearer
 * path's: a revoked key ends its sessions within 1 s in every process.
 */
const KEY_CACHE_MS = 500;
const MAX_CACHED_KEYS = 10_000;
/** 32 random bytes, base64url: anything else is not an id this code made, and costs no Redis read. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/** A session as stored in Redis: the key it was opened with, never the key's secret. */
export interface StoredSession {
  keyId: string;
  csrf: string;
  createdAt: number;
}

export interface ResolvedSession {
  principal: Principal;
  csrf: string;
  createdAt: number;
}

interface CachedKey {
  principal: Principal | undefined;
  at: number;
}

/**
 * Dashboard sessions, in Redis so that every API process shares them.
 * Redis holds the SHA-256 of each session id, so a reader of Redis cannot
 * replay one, and the id of the API key it stands for: each request reads
 * the key again (cached {@link KEY_CACHE_MS}), so revoking the key ends
 * every session it opened.
 */
export class DashboardSessions {
  private readonly keys = new Map<string, CachedKey>();
  private readonly reads = new Map<string, Promise<CachedKey>>();

  private readonly app: App;

  constructor(app: App) {
    this.app = app;
  }

  async create(keyId: string, now = Date.now()): Promise<{ id: string; csrf: string }> {
    const id = randomBytes(32).toString('base64url');
    const csrf = randomBytes(32).toString('base64url');
    const stored: StoredSession = { keyId, csrf, createdAt: now };
    const redis = this.app.broker.redis;
    await viaBroker(redis, () => redis.set(this.redisKey(id), JSON.stringify(stored), 'PX', SESSION_TTL_MS));
    return { id, csrf };
  }

  async destroy(id: string): Promise<void> {
    if (!SESSION_ID.test(id)) return;
    const redis = this.app.broker.redis;
    await viaBroker(redis, () => redis.del(this.redisKey(id)));
  }

  /** The principal and CSRF token of a live session whose key is still valid; undefined otherwise. */
  async resolve(id: string): Promise<ResolvedSession | undefined> {
    if (!SESSION_ID.test(id)) return undefined;
    const redis = this.app.broker.redis;
    const raw = await viaBroker(redis, () => redis.get(this.redisKey(id)));
    const stored = raw === null ? undefined : parseStored(raw);
    if (!stored) return undefined;
    const { principal } = await this.key(stored.keyId);
    if (!principal) {
      // The key is revoked or gone: so is every session it opened.
      await this.destroy(id);
      return undefined;
    }
    return { principal, csrf: stored.csrf, createdAt: stored.createdAt };
  }

  private redisKey(id: string): string {
    return `${this.app.config.prefix}:celerity:session:${createHash('sha256').update(id).digest('hex')}`;
  }

  private async key(keyId: string): Promise<CachedKey> {
    const cached = this.keys.get(keyId);
    if (cached && Date.now() - cached.at < KEY_CACHE_MS) return cached;
    let read = this.reads.get(keyId);
    if (!read) {
      read = (async () => {
        const at = Date.now();
        let key: Awaited<ReturnType<typeof findKey>>;
        try {
          key = await findKey(await this.app.openStore(), keyId);
        } catch (err) {
          // Unreachable is not revoked: a 503, never a 401 that would log the user out.
          throw err instanceof CelerityError ? err : new StoreUnavailableError(err);
        }
        const entry: CachedKey = { principal: key && key.revokedAt === null ? principalOfKey(key) : undefined, at };
        if (this.keys.size >= MAX_CACHED_KEYS) this.keys.clear();
        this.keys.set(keyId, entry);
        return entry;
      })().finally(() => this.reads.delete(keyId));
      this.reads.set(keyId, read);
    }
    return read;
  }
}

function parseStored(raw: string): StoredSession | undefined {
  try {
    const v = JSON.parse(raw) as Partial<StoredSession>;
    return typeof v.keyId === 'string' && typeof v.csrf === 'string' && typeof v.createdAt === 'number' ? (v as StoredSession) : undefined;
  } catch {
    return undefined;
  }
}

// One per app, shared by the API's authentication hook and the dashboard's
// routes, which may sit in different Fastify contexts of one server.
const SESSIONS = new WeakMap<App, DashboardSessions>();

export function sessionsOf(app: App): DashboardSessions {
  let sessions = SESSIONS.get(app);
  if (!sessions) {
    sessions = new DashboardSessions(app);
    SESSIONS.set(app, sessions);
  }
  return sessions;
}

/** The session id of the request's cookie, if it sends one. */
export function sessionIdOf(request: FastifyRequest): string | undefined {
  const header = request.headers.cookie;
  if (header === undefined) return undefined;
  return cookieValue(header, SESSION_COOKIE);
}

/** One cookie's value from a `Cookie` header (RFC 6265 5.4: `name=value` pairs separated by `; `). */
export function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) {
      const value = part.slice(eq + 1).trim();
      return value.startsWith('"') && value.endsWith('"') && value.length >= 2 ? value.slice(1, -1) : value;
    }
  }
  return undefined;
}

/** The `Set-Cookie` value that opens a session; Secure when the request came over HTTPS (as Fastify sees it: trustProxy decides). */
export function sessionCookie(id: string, request: FastifyRequest): string {
  const secure = request.protocol === 'https' ? '; Secure' : '';
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(SESSION_TTL_MS / 1000)}${secure}`;
}

/** The `Set-Cookie` value that makes the browser forget the session. */
export function clearedSessionCookie(request: FastifyRequest): string {
  const secure = request.protocol === 'https' ? '; Secure' : '';
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${secure}`;
}
