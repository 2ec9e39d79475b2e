import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import { bearerToken, KeyAuthenticator, sameSecret, type AuthFailure } from '../auth/authenticator.ts';
import { hasScope, OPEN_PRINCIPAL, setPrincipal, type Principal, type RouteAuth } from '../auth/principal.ts';
import { CSRF_HEADER, sessionIdOf, sessionsOf } from '../dashboard/sessions.ts';
import { ForbiddenError, UnauthorizedError } from '../errors.ts';

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
 */
export function registerAuth(server: FastifyInstance, app: App, mode: AuthMode): void {
  const metricsToken = app.config.metricsToken;
  const authenticator = mode === 'keys' ? new KeyAuthenticator(() => app.openStore(), { logger: server.log }) : undefined;
  if (!authenticator) server.log.warn('CELERITY_AUTH=off: the job API takes no API keys; every caller is an admin of every tenant');
  const sessions = sessionsOf(app);
  server.addHook('onClose', async () => {
    await authenticator?.close();
  });
  server.addHook('onRequest', async (request, reply) => {
    // No route: the 404 handler answers, and says nothing a key would protect.
    if (request.routeOptions.url === undefined) return;
    const needs = routeAuthOf(request);
    if (needs.open) return;
    if (!authenticator) {
      setPrincipal(request, OPEN_PRINCIPAL);
      return;
    }
    const header = request.headers.authorization;
    if (needs.metricsToken && metricsToken !== undefined && header !== undefined) {
      const token = bearerToken(header);
      if (token !== undefined && sameSecret(token, metricsToken)) {
        setPrincipal(request, METRICS_PRINCIPAL);
        return;
      }
    }
    // The dashboard's session cookie, only when no key is sent: a request
    // with an Authorization header is judged by it alone (the fast path).
    if (header === undefined) {
      const sessionId = sessionIdOf(request);
      if (sessionId !== undefined) {
        const session = await sessions.resolve(sessionId);
        if (session) {
          // A browser attaches the cookie to any request to this origin; the
          // token, which only the dashboard's own pages can read, proves the
          // request came from one of them (SameSite=Strict is the first guard).
          if (request.method !== 'GET' && request.method !== 'HEAD' && !csrfMatches(request.headers[CSRF_HEADER], session.csrf)) {
            throw new ForbiddenError(`A request with the dashboard's session cookie that changes state needs the session's ${CSRF_HEADER} header`, { field: CSRF_HEADER });
          }
          if (needs.scope !== undefined && !hasScope(session.principal, needs.scope)) {
            throw new ForbiddenError(`The API key "${session.principal.name}" lacks the scope ${needs.scope}`, { scope: needs.scope });
          }
          setPrincipal(request, session.principal);
          return;
        }
      }
    }
    const outcome = await authenticator.authenticate(header);
    if (!outcome.ok) {
      reply.header('www-authenticate', outcome.failure === 'missing' ? 'Bearer realm="celerity"' : 'Bearer realm="celerity", error="invalid_token"');
      throw new UnauthorizedError(FAILURES[outcome.failure]);
    }
    if (needs.scope !== undefined && !hasScope(outcome.principal, needs.scope)) {
      throw new ForbiddenError(`The API key "${outcome.principal.name}" lacks the scope ${needs.scope}`, { scope: needs.scope });
    }
    setPrincipal(request, outcome.principal);
  });
}

function csrfMatches(sent: string | string[] | undefined, expected: string): boolean {
  return typeof sent === 'string' && sent !== '' && sameSecret(sent, expected);
}
