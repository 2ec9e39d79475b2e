import Fastify, { LogController, type FastifyInstance } from 'fastify';
import fastifySwagger from '@fastify/swagger';
import type { Logger } from 'pino';
import type { App } from '../app.ts';
import { traceIdOf } from '../ids.ts';
import { errorHandlerPlugin, errorSchema } from './errors.ts';
import { jobViewSchema } from './job-view.ts';
import { healthRoutes } from './routes/health.ts';
import { hookRoutes } from './routes/hooks.ts';
import { jobRoutes } from './routes/jobs.ts';
import { opsRoutes } from './routes/ops.ts';
import { taskRoutes } from './routes/tasks.ts';
import { uploadRoutes } from './routes/uploads.ts';

export interface ServerOptions {
  /** Largest request body in bytes; default from the app's config. */
  bodyLimit?: number;
  /** Request logging; default the app's logger. Pass false to silence. */
  logger?: Logger | false;
}

/**
 * Builds the HTTP API (not listening yet). Every route has a JSON schema;
 * `/openapi.json` is generated from them.
 */
export async function buildServer(app: App, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const server = Fastify({
    loggerInstance: opts.logger === false ? undefined : (opts.logger ?? app.logger),
    bodyLimit: opts.bodyLimit ?? app.config.bodyLimit,
    // A caller's X-Request-Id (else a fresh id) is the trace id: on every log
    // line of the request, in the job's envelope, and on the worker's lines.
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'trace_id' }),
    genReqId: (req) => traceIdOf(req.headers['x-request-id']),
    ajv: {
      // Unknown fields are reported, not silently dropped; query strings are coerced.
      customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: true },
    },
  }) as unknown as FastifyInstance;

  await server.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Celerity job API', version: '1' },
    },
  });
  // JSON only: a text/plain body would otherwise reach the schema as a string
  // and get a confusing "must be object" instead of a clear 415.
  server.removeContentTypeParser('text/plain');
  server.addSchema(errorSchema);
  server.addSchema(jobViewSchema);
  errorHandlerPlugin(server);
  server.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  await server.register(healthRoutes, { app });
  await server.register(taskRoutes, { app });
  await server.register(jobRoutes, { app });
  await server.register(hookRoutes, { app });
  await server.register(uploadRoutes, { app });
  await server.register(opsRoutes, { app });
  // The app's own routes, after Celerity's: they share the error shape and the OpenAPI document.
  for (const routes of app.routes) await server.register(routes, { app });
  server.get('/openapi.json', { schema: { hide: true } }, async () => server.swagger());

  // Migrations run before the first request, not on it.
  server.addHook('onReady', async () => {
    await app.openStore();
  });
  return server;
}
