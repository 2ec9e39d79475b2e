import AjvCompiler from '@fastify/ajv-compiler';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { App } from '../app.ts';
import type { AuthMode } from '../api/auth.ts';
import { useAuthFailureLimit } from '../api/auth-failure-limit.ts';
import { body, errorHandlerPlugin, errorSchema } from '../api/errors.ts';
import { HTML_SECURITY_HEADERS, SECURITY_HEADERS } from '../api/security-headers.ts';
import { KeyAuthenticator, sameSecret } from '../auth/authenticator.ts';
import { OPEN_PRINCIPAL, type Principal, type RouteAuth } from '../auth/principal.ts';
import { ForbiddenError, UnauthorizedError } from '../errors.ts';
import { DashboardAssets } from './assets.ts';
import { clearedSessionCookie, CSRF_HEADER, SESSION_TTL_MS, sessionCookie, sessionIdOf, sessionsOf } from './sessions.ts';

/** Options of {@link celerityDashboard}, besides Fastify's own `prefix`. */
export interface CelerityDashboardOptions {
  app: App;
  /** Where the page finds the job API: the prefix `celerityApi` is mounted under. Default `''` (the root, as `buildServer` mounts it). */
  apiPrefix?: string;
  /** Default the app's `CELERITY_AUTH`; must match the API's: `off` opens the page without a login. */
  auth?: AuthMode;
  /** The built client (dist/dashboard/assets by default). */
  assetsDir?: string;
}

/**
 * The page's CSP: its one script and its one style sheet, from this origin;
 * no inline script or style element; data: images for the chart library's
 * canvas exports; calls to this origin only (the job API, its events).
 */
const SHELL_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const AJV_OPTIONS = { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: true } as const;
const buildValidator = AjvCompiler();

/** The longest API key a login takes: `cel_` + 16 + `_` + 43, with room to spare; a longer one is not a key. */
const MAX_KEY_LENGTH = 200;

const OPEN: { celerity: RouteAuth } = { celerity: { open: true } };

const sessionView = {
  type: 'object',
  properties: {
    auth: { type: 'string', enum: ['keys', 'off'] },
    key_id: { type: ['string', 'null'] },
    name: { type: 'string' },
    tenant: { type: ['string', 'null'] },
    scopes: { type: 'array', items: { type: 'string' } },
    tasks: { type: ['array', 'null'], items: { type: 'string' } },
    csrf_token: { type: ['string', 'null'], description: `Send it as the ${CSRF_HEADER} header with every request that changes state.` },
    expires_at: { type: ['string', 'null'], format: 'date-time' },
  },
  required: ['auth', 'key_id', 'name', 'tenant', 'scopes', 'tasks', 'csrf_token', 'expires_at'],
} as const;

/**
 * The dashboard as a Fastify plugin: the page (`GET <prefix>`), its two
 * hashed assets, and the login that turns an API key into a session cookie
 * (`POST <prefix>/login`, `POST <prefix>/logout`, `GET <prefix>/session`).
 * The page calls the job API with that cookie; the API's authentication hook
 * takes it, with a CSRF token on requests that change state. `buildServer`
 * (`celerity serve`, `celerity dev`) mounts it at `/dashboard`; in a server
 * of your own:
 *
 * ```ts
 * await server.register(celerityApi, { app, prefix: '/jobs-api' });
 * await server.register(celerityDashboard, { app, prefix: '/dashboard', apiPrefix: '/jobs-api' });
 * ```
 */
export const celerityDashboard: FastifyPluginAsync<CelerityDashboardOptions> = async (server, opts) => {
  const { app } = opts;
  const mode = opts.auth ?? app.config.auth;
  const apiPrefix = (opts.apiPrefix ?? '').replace(/\/+$/, '');
  const assets = new DashboardAssets(opts.assetsDir);
  const sessions = sessionsOf(app);
  const authenticator = mode === 'keys' ? new KeyAuthenticator(() => app.openStore(), { logger: server.log }) : undefined;
  // The API's count: a wrong key costs an address the same whether sent to the API or to the login.
  const failures = authenticator ? useAuthFailureLimit(server, app) : undefined;
  server.addHook('onClose', async () => {
    await authenticator?.close();
  });
  const base = server.prefix;

  server.setValidatorCompiler((route) => {
    const compile = buildValidator({}, { customOptions: AJV_OPTIONS });
    return compile(route as unknown as Parameters<typeof compile>[0]) as ReturnType<Parameters<typeof server.setValidatorCompiler>[0]>;
  });
  server.addSchema(errorSchema);
  errorHandlerPlugin(server, { notFound: true });
  // Login takes a plain HTML form too, so that it works before the script has loaded.
  server.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 4096 }, (_request, text, done) => {
    done(null, Object.fromEntries(new URLSearchParams(text as string)));
  });
  server.addHook('onRequest', async (request, reply) => {
    reply.headers((request.routeOptions.config as { celerity?: RouteAuth } | undefined)?.celerity?.html ? HTML_SECURITY_HEADERS : SECURITY_HEADERS);
    reply.header('x-request-id', request.id);
  });

  /**
   * The principal of an API key, as the API's authentication hook finds it,
   * under the same limit on failures: the 429 of an address that failed too
   * often is thrown before the key is looked up, and each failure counted.
   */
  async function byKey(request: FastifyRequest, reply: FastifyReply, keys: KeyAuthenticator, header: string): Promise<Principal | undefined> {
    const blocked = await failures?.refused(request, reply);
    if (blocked) throw blocked;
    const outcome = await keys.authenticate(header);
    if (outcome.ok) return outcome.principal;
    const limited = await failures?.failed(request, reply);
    if (limited) throw limited;
    return undefined;
  }

  /** The caller of a dashboard route: the open principal, a session, or (for scripts) a Bearer key. */
  async function callerOf(request: FastifyRequest, reply: FastifyReply): Promise<{ principal: Principal; csrf: string | null; createdAt: number | null } | undefined> {
    if (!authenticator) return { principal: OPEN_PRINCIPAL, csrf: null, createdAt: null };
    // As in the API's authentication hook: a blocked address gets nothing checked, its session cookie included.
    const blocked = failures?.refusedHere(request, reply);
    if (blocked) throw blocked;
    const header = request.headers.authorization;
    if (header !== undefined) {
      const principal = await byKey(request, reply, authenticator, header);
      return principal && { principal, csrf: null, createdAt: null };
    }
    const id = sessionIdOf(request);
    const session = id === undefined ? undefined : await sessions.resolve(id);
    return session && { principal: session.principal, csrf: session.csrf, createdAt: session.createdAt };
  }

  function unauthorized(reply: FastifyReply, message: string): never {
    reply.header('www-authenticate', 'Bearer realm="celerity"');
    throw new UnauthorizedError(message);
  }

  server.get(
    '/',
    {
      schema: { hide: true },
      config: { celerity: { open: true, html: true } },
    },
    async (_request, reply) => {
      const manifest = assets.manifest();
      reply.header('content-security-policy', SHELL_CSP);
      // The page names the assets of this build; a cached page would keep asking for the last one's.
      reply.header('cache-control', 'no-store');
      reply.type('text/html; charset=utf-8');
      return shell({ base, api: apiPrefix, auth: mode, js: `${base}/assets/${manifest.js}`, css: `${base}/assets/${manifest.css}` });
    },
  );

  server.get<{ Params: { file: string } }>(
    '/assets/:file',
    {
      schema: { hide: true, params: { type: 'object', properties: { file: { type: 'string', maxLength: 100 } }, required: ['file'] } },
      config: OPEN,
    },
    async (request, reply) => {
      const asset = assets.file(request.params.file);
      if (!asset) return reply.status(404).send(body('not_found', `No dashboard asset ${request.params.file}`, { field: 'file' }));
      // Hashed names: a new build is a new name, so a copy may be kept for good.
      reply.header('cache-control', 'public, max-age=31536000, immutable');
      reply.type(asset.type);
      return reply.send(asset.body);
    },
  );

  server.post<{ Body: { key: string } }>(
    '/login',
    {
      schema: {
        summary: 'Open a dashboard session with an API key',
        description: `Takes an API key (JSON or a form field \`key\`), answers the session and sets an HttpOnly, SameSite=Strict cookie. A form post is redirected (303) to the dashboard.`,
        body: {
          type: 'object',
          properties: { key: { type: 'string', minLength: 1, maxLength: MAX_KEY_LENGTH, description: 'An API key, cel_<id>_<secret>.' } },
          required: ['key'],
          additionalProperties: false,
        },
        response: { 200: sessionView, '4xx': { $ref: 'Error#' }, '5xx': { $ref: 'Error#' } },
      },
      config: OPEN,
    },
    async (request, reply) => {
      // Login CSRF: another site's page posting its own key would log the
      // victim into the attacker's tenant. Browsers name the page's origin.
      const origin = request.headers.origin;
      if (origin !== undefined && hostOf(origin) !== request.host) {
        throw new ForbiddenError('A dashboard login must come from a page of this server', { field: 'origin' });
      }
      const fromForm = request.headers['content-type']?.startsWith('application/x-www-form-urlencoded') === true;
      if (!authenticator) {
        if (fromForm) return reply.redirect(`${base}/`, 303);
        return view(OPEN_PRINCIPAL, 'off', null, null);
      }
      const principal = await byKey(request, reply, authenticator, `Bearer ${request.body.key.trim()}`);
      if (!principal) unauthorized(reply, 'The API key is not valid (unknown, revoked or malformed)');
      // A principal from a key always has its id; only the open principal has none.
      const session = await sessions.create(principal.keyId as string);
      reply.header('set-cookie', sessionCookie(session.id, request));
      reply.header('cache-control', 'no-store');
      if (fromForm) return reply.redirect(`${base}/`, 303);
      return view(principal, 'keys', session.csrf, Date.now());
    },
  );

  server.post(
    '/logout',
    {
      schema: {
        summary: 'End the dashboard session',
        description: `Deletes the session of the cookie (which needs its ${CSRF_HEADER} header) and clears the cookie. Without a session it only clears the cookie.`,
        response: { 204: { type: 'null' }, '4xx': { $ref: 'Error#' }, '5xx': { $ref: 'Error#' } },
      },
      config: OPEN,
    },
    async (request, reply) => {
      const id = sessionIdOf(request);
      const session = id === undefined ? undefined : await sessions.resolve(id);
      if (id !== undefined && session) {
        // Logging a user out from another site is a nuisance worth a token too.
        const sent = request.headers[CSRF_HEADER];
        if (typeof sent !== 'string' || !sameSecret(sent, session.csrf)) {
          throw new ForbiddenError(`Logging out needs the session's ${CSRF_HEADER} header`, { field: CSRF_HEADER });
        }
        await sessions.destroy(id);
      }
      reply.header('set-cookie', clearedSessionCookie(request));
      return reply.status(204).send();
    },
  );

  server.get(
    '/session',
    {
      schema: {
        summary: 'The dashboard session: who is logged in, and its CSRF token',
        response: { 200: sessionView, '4xx': { $ref: 'Error#' }, '5xx': { $ref: 'Error#' } },
      },
      config: OPEN,
    },
    async (request, reply) => {
      const caller = await callerOf(request, reply);
      if (!caller) unauthorized(reply, 'No dashboard session: log in with an API key (POST /dashboard/login)');
      reply.header('cache-control', 'no-store');
      return view(caller.principal, authenticator ? 'keys' : 'off', caller.csrf, caller.createdAt);
    },
  );
};

function view(p: Principal, auth: AuthMode, csrf: string | null, createdAt: number | null) {
  return {
    auth,
    key_id: p.keyId,
    name: p.name,
    tenant: p.tenant,
    scopes: [...p.scopes],
    tasks: p.tasks === null ? null : [...p.tasks],
    csrf_token: csrf,
    expires_at: createdAt === null ? null : new Date(createdAt + SESSION_TTL_MS).toISOString(),
  };
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The HTML page: no inline script or style; the client reads its settings from data attributes. */
function shell(s: { base: string; api: string; auth: AuthMode; js: string; css: string }): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Celerity</title>
<link rel="stylesheet" href="${escapeHtml(s.css)}">
<script type="module" src="${escapeHtml(s.js)}"></script>
</head>
<body>
<div id="app" data-base="${escapeHtml(s.base)}" data-api="${escapeHtml(s.api)}" data-auth="${escapeHtml(s.auth)}"></div>
<noscript>The Celerity dashboard needs JavaScript. The job API works without it: see /openapi.json.</noscript>
</body>
</html>
`;
}
