import fastifyCors from '@fastify/cors';
import fastifyRateLimit, { normalizeIP, type RateLimitPluginOptions } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import type { App } from '../app.ts';
import { maybePrincipalOf, type RouteAuth } from '../auth/principal.ts';
import { createRedis, firstOutcome } from '../broker/connection.ts';
import { RateLimitedError } from '../errors.ts';
import { BatchedRedisStore } from './rate-limit-store.ts';
import { HTML_SECURITY_HEADERS, SECURITY_HEADERS } from './security-headers.ts';

type Budget = 'submit' | 'read';

/** Whose budget a request spends: `submit:key:<key id>`, `read:ip:<address>`... */
interface Subject {
  budget: Budget;
  key: string;
}

/** Methods and request headers browsers may use cross-origin; what they may read back. */
const CORS_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];
const CORS_ALLOWED_HEADERS = ['Authorization', 'Content-Type', 'Idempotency-Key', 'X-Request-Id', 'X-Tenant-Id'];
const CORS_EXPOSED_HEADERS = ['Location', 'Retry-After', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'X-Request-Id', 'Idempotent-Replayed'];
/** Seconds a browser may cache a preflight answer. */
const CORS_MAX_AGE = 600;

/**
 * A Redis that is up answers in well under a millisecond; one that hangs
 * must not hold every request for long, since the request goes on anyway.
 */
const LIMITER_COMMAND_TIMEOUT_MS = 500;
const LIMITER_CONNECT_TIMEOUT_MS = 2_000;

const SUBJECT = Symbol('celerity.rateLimitSubject');

/**
 * Abuse limits of the job API, for `celerityApi` to register in its context:
 * security headers on every answer (helmet's, chosen for JSON), CORS when
 * `CELERITY_CORS_ORIGINS` names origins, and per-key rate limits
 * (@fastify/rate-limit) counted in Redis, so that every API process spends
 * the same budget ({@link BatchedRedisStore} says how closely).
 *
 * Budgets, per window of `CELERITY_RATE_LIMIT_WINDOW` ms:
 * - submissions (`CELERITY_RATE_LIMIT_SUBMIT`): routes whose config says
 *   `celerity: { scope: 'jobs:submit' }`, POST routes of `jobs:retry`
 *   (a retry makes a job), `POST …/v1/uploads` and webhooks;
 * - reads (`CELERITY_RATE_LIMIT_READ`): every other route that takes a key.
 * A request is counted against its API key (`principal.keyId`), or its IP
 * address when there is none (authentication off). Open routes
 * (`celerity: { open: true }`) are not limited, except webhooks: the
 * sender's IP is all that is known before the handler checks the signature,
 * so they spend a submission budget per IP.
 *
 * The limiter runs in `preParsing`, after every `onRequest` hook: it sees
 * the principal whichever side of the authentication hook this is
 * registered, and a body is not read before its sender is known to be
 * within budget. The security headers and CORS run in `onRequest`, so
 * registering this before the authentication hook also puts their headers
 * on its 401s (and answers preflights before it runs).
 *
 * When Redis is unreachable requests go through unlimited (fail open), with
 * a warning in the log: refusing every request would turn a Redis outage into
 * an outage of routes that do not need Redis.
 */
export async function registerAbuseLimits(server: FastifyInstance, app: App): Promise<void> {
  const { config } = app;

  // Set as values computed once: @fastify/helmet rebuilds helmet's
  // middleware on every request, which cost a third of a status read's CPU.
  // Set first thing, so that every answer carries them, refusals included;
  // a handler may still replace one (reply.header) for its own answer.
  // A callback hook: an async one costs a promise on every request.
  server.addHook('onRequest', (request, reply, done) => {
    // The CSP of a JSON answer would block every script and style of a page.
    reply.headers(celerityConfig(request.routeOptions.config)?.html ? HTML_SECURITY_HEADERS : SECURITY_HEADERS);
    done();
  });

  const origins = config.corsOrigins ?? [];
  if (origins.length > 0) {
    // A preflight never carries the Authorization header: @fastify/cors's
    // OPTIONS route must be open to an authentication hook that runs first.
    server.addHook('onRoute', (route) => {
      if (route.method === 'OPTIONS' && route.url.endsWith('*')) {
        route.config = { ...route.config, celerity: { ...celerityConfig(route.config), open: true } } as RouteOptions['config'];
      }
    });
    const any = origins.includes('*');
    await server.register(fastifyCors, {
      origin: any ? '*' : origins,
      // Browsers refuse credentials with a wildcard origin anyway.
      credentials: !any,
      methods: CORS_METHODS,
      allowedHeaders: CORS_ALLOWED_HEADERS,
      exposedHeaders: CORS_EXPOSED_HEADERS,
      maxAge: CORS_MAX_AGE,
    });
  }

  await registerRateLimits(server, app);
}

async function registerRateLimits(server: FastifyInstance, app: App): Promise<void> {
  const { rateLimitSubmit, rateLimitRead, rateLimitWindow, prefix } = app.config;
  if (rateLimitSubmit === 0 && rateLimitRead === 0) return;
  if (server.hasDecorator('rateLimit')) {
    // @fastify/rate-limit decorates once per server; registered again below,
    // it would hand back the host's limiter, with the host's store and keys.
    throw new Error(
      'registerAbuseLimits: the server already has @fastify/rate-limit; register it in an encapsulated context of your own routes, or set CELERITY_RATE_LIMIT_SUBMIT=0 and CELERITY_RATE_LIMIT_READ=0 to leave rate limiting to it',
    );
  }
  const max: Record<Budget, number> = { submit: rateLimitSubmit, read: rateLimitRead };

  // A connection of its own: app.broker.redis carries BullMQ's ~50 scripts,
  // which ioredis copies into every auto-pipelined batch; this one has the
  // store's one, and auto-pipelining sends a flush of many keys in one write.
  // It fails fast rather than queueing while Redis is away.
  const redis = createRedis(app.config, 'producer', {
    autoPipelining: true,
    connectTimeout: LIMITER_CONNECT_TIMEOUT_MS,
    commandTimeout: LIMITER_COMMAND_TIMEOUT_MS,
    name: 'celerity:rate-limit',
  });
  let healthy: boolean | undefined;
  redis.on('ready', () => {
    if (healthy === false) server.log.info('rate limits: Redis is back; limits apply again');
    healthy = true;
  });
  redis.on('error', (err) => {
    if (healthy !== false) server.log.warn({ err }, 'rate limits: Redis is unreachable; requests go through unlimited until it is back');
    healthy = false;
  });
  const store = new BatchedRedisStore(redis, `${prefix}:celerity:rl:`, (err) => server.log.debug({ err }, 'rate limits: counts lost to a failed write'));
  // The first requests are counted once the connection is up (or has failed once).
  server.addHook('onReady', async () => {
    if (redis.status !== 'ready') await firstOutcome(redis, LIMITER_CONNECT_TIMEOUT_MS);
  });
  server.addHook('onClose', async () => {
    await store.close();
    redis.disconnect();
  });

  await server.register(fastifyRateLimit, {
    // Only the requests the hook below hands over.
    global: false,
    // Handed the store built above (the plugin constructs its store itself).
    store: function sharedStore() {
      return store;
    } as unknown as RateLimitPluginOptions['store'],
    timeWindow: rateLimitWindow,
    keyGenerator: (request) => subjectOf(request).key,
    max: (request) => max[subjectOf(request).budget],
    skipOnError: true,
    errorResponseBuilder: (request, context) => new RateLimitedError(subjectOf(request).budget, context.max, rateLimitWindow, Math.ceil(context.ttl / 1000)),
  });
  server.decorateRequest(SUBJECT, null);
  const limit = server.rateLimit();

  server.addHook('preParsing', async function (request, reply, payload) {
    const subject = rateLimitSubject(request);
    if (subject === null || max[subject.budget] === 0) return payload;
    // A command would fail at once (no offline queue): skip it, the warning is logged.
    if (redis.status !== 'ready') return payload;
    (request as unknown as Record<symbol, Subject>)[SUBJECT] = subject;
    await limit.call(this, request, reply);
    return payload;
  });
}

function subjectOf(request: FastifyRequest): Subject {
  return (request as unknown as Record<symbol, Subject>)[SUBJECT] as Subject;
}

/**
 * The budget a request spends and whose it is, or null when it is not
 * limited (an open route other than a webhook).
 */
function rateLimitSubject(request: FastifyRequest): Subject | null {
  // A getter that builds a new object on each read.
  const route = request.routeOptions;
  const celerity = celerityConfig(route.config);
  const url = route.url;
  const webhook = request.method === 'POST' && url !== undefined && url.endsWith('/v1/hooks/:task');
  // A retry makes a job as a submission does (POST /v1/jobs/:id/retry, a bulk retry's request).
  const submits =
    webhook || celerity?.scope === 'jobs:submit' || (request.method === 'POST' && celerity?.scope === 'jobs:retry') || (request.method === 'POST' && url !== undefined && url.endsWith('/v1/uploads'));
  const budget: Budget = submits ? 'submit' : 'read';
  if (celerity?.open) return submits ? { budget, key: `${budget}:ip:${ipOf(request)}` } : null;
  const keyId = maybePrincipalOf(request)?.keyId;
  return { budget, key: keyId ? `${budget}:key:${keyId}` : `${budget}:ip:${ipOf(request)}` };
}

/** IPv6 addresses count per /64, which one host usually holds whole: walking through it must not multiply the budget. */
function ipOf(request: FastifyRequest): string {
  return request.ip ? normalizeIP(request.ip) : 'unknown';
}

function celerityConfig(config: unknown): RouteAuth | undefined {
  return (config as { celerity?: RouteAuth } | undefined)?.celerity;
}
