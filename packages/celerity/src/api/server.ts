import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { App } from '../app.ts';
import { traceIdOf } from '../ids.ts';
import { MAX_PARAM_LENGTH } from '../limits.ts';
import { body, clientErrorHandler, frameworkErrorHandler } from './errors.ts';
import { celerityDashboard } from '../dashboard/plugin.ts';
import fastifySwagger from '@fastify/swagger';
import { celerityApi, OPENAPI_INFO } from './plugin.ts';

export interface ServerOptions {
  /** Largest request body in bytes; default from the app's config. */
  bodyLimit?: number;
  /** Request logging; default the app's logger. Pass false to silence. */
  logger?: Logger | false;
  /** Serve the dashboard at `/dashboard`; default true. */
  dashboard?: boolean;
}

/**
 * Builds the HTTP API (not listening yet): a server of its own with
 * {@link celerityApi} at its root and the dashboard at `/dashboard`. Every
 * route has a JSON schema; `/openapi.json` is generated from them.
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
    // Node answers a missing Host with a bare 400 of its own; the hook below
    // refuses it in the API's error shape instead.
    http: { requireHostHeader: false },
    // The client's address behind a proxy (rate limits per IP, logs): only when told whom to trust.
    ...(app.config.trustProxy !== undefined ? { trustProxy: app.config.trustProxy } : {}),
  }) as unknown as FastifyInstance;

  // A callback hook: an async one costs a promise on every request.
  server.addHook('onRequest', (request, reply, done) => {
    // HTTP/1.1 requires Host (RFC 9112, 3.2); HTTP/1.0 may omit it.
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      reply.status(400).send(body('bad_request', 'The request has no Host header', null));
      return;
    }
    done();
  });
  // Node closes a CONNECT request's socket without a word unless someone listens.
  server.server.on('connect', (_req: unknown, socket: Socket) => {
    const text = JSON.stringify(body('method_not_allowed', 'CONNECT is not supported', null));
    // Destroyed once written: a socket handed over for CONNECT is no longer
    // the HTTP server's, and a half-closed one would hold server.close() open.
    socket.on('error', () => {});
    socket.write(`HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
    socket.destroySoon();
  });

  // The document at the root, as a host's own would be: it lists the API's
  // routes and the dashboard's session routes (login, logout, session), so
  // that everything this server answers under a schema is documented.
  await server.register(fastifySwagger, { openapi: OPENAPI_INFO });
  // The whole server is the API's, so its 404s are Celerity's too.
  await server.register(celerityApi, { app, bodyLimit, openapi: 'host', notFound: true });
  if (opts.dashboard !== false) await server.register(celerityDashboard, { app, prefix: '/dashboard' });
  return server;
}
