import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { App } from '../app.ts';
import type { CelerityDashboardOptions } from '../dashboard/plugin.ts';
import type { CelerityApiOptions } from './plugin.ts';
import type { ServerOptions } from './server.ts';

/**
 * The HTTP API as the package's entry point exports it: each loads its
 * module (Fastify, its plugins, ajv, the routes, the dashboard) when first
 * called. Every process imports `celerity` through the app's file, and most
 * (workers, `celerity recorder`, scripts that enqueue) never serve HTTP:
 * loading the API at import cost each of them start-up time and memory
 * (`import('celerity')` took 868 ms and 117 MB of RSS, median of five,
 * against 784 ms and 103 MB with this module).
 *
 * The plugins are Fastify plugins as before: the user's `register` gives the
 * wrapper its context (and prefix), in which it runs the real plugin.
 */

/**
 * Builds the HTTP API (not listening yet): a server of its own with
 * {@link celerityApi} at its root and the dashboard at `/dashboard`. Every
 * route has a JSON schema; `/openapi.json` is generated from them.
 */
export async function buildServer(app: App, opts: ServerOptions = {}): Promise<FastifyInstance> {
  return (await import('./server.ts')).buildServer(app, opts);
}

/**
 * The job API as a Fastify plugin, to mount in a server of your own:
 *
 * ```ts
 * const server = Fastify();
 * await server.register(celerityApi, { app, prefix: '/jobs-api' });
 * ```
 *
 * Everything it sets up stays inside its own encapsulated context (shared
 * schemas, validation, error handler, parsers, Celerity's routes and the
 * app's own); listening, logging, TLS and authentication are the host
 * server's. `routerOptions.maxParamLength` must be at least
 * `MAX_PARAM_LENGTH`. The details are on the implementation
 * (src/api/plugin.ts) and in docs/embedding.md.
 */
export const celerityApi: FastifyPluginAsync<CelerityApiOptions> = async (server, opts) => (await import('./plugin.ts')).celerityApi(server, opts);

/**
 * The dashboard as a Fastify plugin: the page, its assets, and the login
 * that turns an API key into a session cookie. Beside {@link celerityApi}:
 *
 * ```ts
 * await server.register(celerityApi, { app, prefix: '/jobs-api' });
 * await server.register(celerityDashboard, { app, prefix: '/dashboard', apiPrefix: '/jobs-api' });
 * ```
 */
export const celerityDashboard: FastifyPluginAsync<CelerityDashboardOptions> = async (server, opts) => (await import('../dashboard/plugin.ts')).celerityDashboard(server, opts);
