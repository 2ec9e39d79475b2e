import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import { bearerToken, KeyAuthenticator, sameSecret, type AuthFailure, type AuthOutcome } from '../auth/authenticator.ts';
import { hasScope, OPEN_PRINCIPAL, setPrincipal, type Principal, type RouteAuth } from '../auth/principal.ts';
import { CSRF_HEADER, sessionIdOf, sessionsOf } from '../dashboard/sessions.ts';
import { ForbiddenError, UnauthorizedError } from '../errors.ts';
import { useAuthFailureLimit } from './auth-failure-limit.ts';

export type AuthMode = 'keys' | 'off';

/** Who reads `/metrics` with `CELERITY_METRICS_TOKEN`: that route, nothing else. */
const METRICS_PRINCIPAL: Principal = Object.freeze({ keyId: null, name: 'metrics-token', tenant: null, scopes: new Set(['ops:read'] as const), tasks: null });

const FAILURES: Record<AuthFailure, string> = {
  missing: 'This route needs an API key: send Authorization: Bearer <key> (create one with `celerity keys create`)',
  malformed: 'The Authorization header is not Bearer <key> with a Celerity API key (cel_…)',
  invalid: 'The API key is not valid (unknown or revoked)',
};

/** What a route asks of its caller (its Fastify route `config.celerity`). */
export function routeAuthOf(request: FastifyRequest): RouteAuth {
  return (request.routeOptions.config as { celerity?: RouteAuth } | undefined)?.celerity ?? {};
}

/**
 * Authenticates every request of the API's context before its body is read:
 * the route's `config.celerity` says what it needs (see {@link RouteAuth});
 * a route that says nothing needs a valid key. The caller becomes the
 * request's principal (`principalOf(request)`). With `mode: 'off'` every
 * caller is the open principal (admin of every tenant).
 *
 * With keys, failed authentications (a key sent and refused) count against
 * the caller's IP address (api/auth-failure-limit.ts): past
 * `CELERITY_AUTH_FAILURE_LIMIT` in the window, its requests are refused
 * (429) before anything is looked up.
 */
export function registerAuth(server: FastifyInstance, app: App, mode: AuthMode): void {
  const metricsToken = app.config.metricsToken;
  const authenticator = mode === 'keys' ? new KeyAuthenticator(() => app.openStore(), { logger: server.log }) : undefined;
  if (!authenticator) server.log.warn('CELERITY_AUTH=off: the job API takes no API keys; every caller is an admin of every tenant');
  const sessions = sessionsOf(app);
  const failures = authenticator ? useAuthFailureLimit(server, app) : undefined;
  server.addHook('onClose', async () => {
    await authenticator?.close();
  });
  // A callback hook, not an async one: a cached key is checked and the
  // request goes on in the same tick, with no promise per request.
  server.addHook('onRequest', (request, reply, done) => {
    // No route: the 404 handler answers, and says nothing a key would protect.
    if (request.routeOptions.url === undefined) return done();
    const needs = routeAuthOf(request);
    if (needs.open) return done();
    if (!authenticator) {
      setPrincipal(request, OPEN_PRINCIPAL);
      return done();
    }
    // Before the metrics token, the session and the key: a blocked address gets nothing checked.
    const blocked = failures?.refusedHere(request, reply);
    if (blocked) return done(blocked);
    const header = request.headers.authorization;
    if (needs.metricsToken && metricsToken !== undefined && header !== undefined) {
      const token = bearerToken(header);
      if (token !== undefined && sameSecret(token, metricsToken)) {
        setPrincipal(request, METRICS_PRINCIPAL);
        return done();
      }
    }
    const finish = (check: () => void): void => {
      let refused: Error | undefined;
      try {
        check();
      } catch (err) {
        refused = err as Error;
      }
      // Outside the try: an error thrown by what done() runs next is not a refusal.
      // Only a key sent and refused counts: a request without one (a
      // browser, a probe, an expired dashboard session) guesses nothing and
      // costs no lookup, and one client of a shared address must not lock
      // out the others by it.
      if (refused instanceof UnauthorizedError && failures && header !== undefined) {
        const unauthorized = refused;
        // Answered once counted, so that the next request of the address sees the count.
        failures.failed(request, reply).then((limited) => done(limited ?? unauthorized), done);
      } else if (refused) done(refused);
      else done();
    };
    const lookUp = (): void => {
      authenticator.authenticate(header).then((outcome) => finish(() => admitted(request, reply, needs, outcome)), done);
    };
    const byKey = (): void => {
      const cached = authenticator.authenticateCached(header);
      if (cached) finish(() => admitted(request, reply, needs, cached));
      // A key that must be read from SQL: the address is checked in Redis first, which costs far less.
      else if (failures) failures.refused(request, reply).then((limited) => (limited ? done(limited) : lookUp()), done);
      else lookUp();
    };
    // The dashboard's session cookie, only when no key is sent: a request
    // with an Authorization header is judged by it alone (the fast path).
    const sessionId = header === undefined ? sessionIdOf(request) : undefined;
    if (sessionId === undefined) return byKey();
    sessions.resolve(sessionId).then((session) => {
      // No live session (expired, logged out, its key revoked): the 401 of a request without a key.
      if (!session) {
        byKey();
        return;
      }
      finish(() => {
        // A browser attaches the cookie to any request to this origin; the
        // token, which only the dashboard's own pages can read, proves the
        // request came from one of them (SameSite=Strict is the first guard).
        if (request.method !== 'GET' && request.method !== 'HEAD' && !csrfMatches(request.headers[CSRF_HEADER], session.csrf)) {
          throw new ForbiddenError(`A request with the dashboard's session cookie that changes state needs the session's ${CSRF_HEADER} header`, { field: CSRF_HEADER });
        }
        admitted(request, reply, needs, { ok: true, principal: session.principal });
      });
    }, done);
  });
}

/** Makes the outcome the request's principal, or throws the 401 or 403 that refuses it. */
function admitted(request: FastifyRequest, reply: FastifyReply, needs: RouteAuth, outcome: AuthOutcome): void {
  if (!outcome.ok) {
    reply.header('www-authenticate', outcome.failure === 'missing' ? 'Bearer realm="celerity"' : 'Bearer realm="celerity", error="invalid_token"');
    throw new UnauthorizedError(FAILURES[outcome.failure]);
  }
  if (needs.scope !== undefined && !hasScope(outcome.principal, needs.scope)) {
    throw new ForbiddenError(`The API key "${outcome.principal.name}" lacks the scope ${needs.scope}`, { scope: needs.scope });
  }
  setPrincipal(request, outcome.principal);
}

function csrfMatches(sent: string | string[] | undefined, expected: string): boolean {
  return typeof sent === 'string' && sent !== '' && sameSecret(sent, expected);
}
