import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { App } from '../app.ts';
import { traceIdOf } from '../ids.ts';
import { MAX_PARAM_LENGTH } from '../limits.ts';
import { clientErrorHandler, frameworkErrorHandler } from './errors.ts';
import { celerityApi } from './plugin.ts';

export interface ServerOptions {
  /** Largest request body in bytes; default from the app's config. */
  bodyLimit?: number;
  /** Request logging; default the app's logger. Pass false to silence. */
  logger?: Logger | false;
}

/**
 * Builds the HTTP API (not listening yet): a server of its own with
 * {@link celerityApi} at its root. Every route has a JSON schema;
 * `/openapi.json` is generated from them.
 */
export async function buildServer(app: App, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimit ?? app.config.bodyLimit;
  const server = Fastify({
    loggerInstance: opts.logger === false ? undefined : (opts.logger ?? app.logger),
    bodyLimit,
    // A caller's X-Request-Id (else a fresh id) is the trace id: on every log
    // line of the request, in the job's envelope, and on the worker's lines.
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'trace_id' }),
    genReqId: (req) => traceIdOf(req.headers['x-request-id']),
    // Every valid job id and task name fits a path segment (see limits.ts).
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Errors raised before any route runs answer in the API's error shape too.
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler,
  }) as unknown as FastifyInstance;

  // The whole server is the API's, so its 404s are Celerity's too.
  await server.register(celerityApi, { app, bodyLimit, openapi: true, notFound: true });
  return server;
}
