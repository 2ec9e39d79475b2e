import AjvCompiler from '@fastify/ajv-compiler';
import fastifySwagger from '@fastify/swagger';
import type { FastifyInstance, FastifyPluginAsync, FastifySchema, FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import type { App } from '../app.ts';
import { RequestTooDeepError } from '../errors.ts';
import { MAX_JSON_DEPTH, MAX_PARAM_LENGTH, tooDeepPath } from '../limits.ts';
import { registerAbuseLimits } from './abuse-limits.ts';
import { registerAuth, type AuthMode } from './auth.ts';
import { errorHandlerPlugin, errorSchema } from './errors.ts';
import { jobViewSchema } from './job-view.ts';
import { healthRoutes } from './routes/health.ts';
import { eventRoutes } from './routes/events.ts';
import { hookRoutes } from './routes/hooks.ts';
import { jobRoutes } from './routes/jobs.ts';
import { statsRoutes } from './routes/stats.ts';
import { opsRoutes } from './routes/ops.ts';
import { jobActionRoutes } from './routes/actions.ts';
import { queueActionRoutes } from './routes/queue-actions.ts';
import { tenantWeightRoutes } from './routes/tenant-weights.ts';
import { tenantRoutes } from './routes/tenants.ts';
import { bulkRoutes } from './routes/bulk.ts';
import { taskRoutes } from './routes/tasks.ts';
import { uploadRoutes } from './routes/uploads.ts';

/** Options of {@link celerityApi}, besides Fastify's own `prefix`. */
export interface CelerityApiOptions {
  /** The app whose tasks, jobs and routes the API serves. */
  app: App;
  /**
   * Serve an OpenAPI 3.1 document of Celerity's routes (and the app's) at
   * `<prefix>/openapi.json`. Default false. When the host server registers
   * @fastify/swagger itself, that one already lists these routes (the two
   * cannot share a context): leave this off, or say `'host'` to serve the
   * host's document at `<prefix>/openapi.json` (with the API's headers and
   * without a key), as `buildServer` does.
   */
  openapi?: boolean | 'host';
  /** Largest request body of the API's routes in bytes; default the app's config (`CELERITY_BODY_LIMIT`). */
  bodyLimit?: number;
  /**
   * Answer unknown URLs under the prefix with a 404 in Celerity's error shape.
   * Default: true when mounted under a prefix, false at the root (where the
   * host's 404 handler stays in charge).
   */
  notFound?: boolean;
  /**
   * `keys` (default: the app's `CELERITY_AUTH`): the routes need an API key,
   * and each caller sees its own tenant's jobs (docs/security.md). `off`:
   * every caller is an admin of every tenant, for a host that authenticates
   * in front of the API (a gateway, its own hooks).
   */
  auth?: AuthMode;
}

/**
 * The AJV options Celerity's routes are written for: an unknown field is
 * reported (Fastify's default silently drops it), query strings are coerced,
 * defaults are filled in, and every issue is named at once.
 */
const AJV_OPTIONS = { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: true } as const;

// One pool per process: it caches a compiler per set of shared schemas, so
// every context with the same schemas shares one AJV instance.
const buildValidator = AjvCompiler();

/** The OpenAPI document's header, wherever Celerity registers the document. */
export const OPENAPI_INFO = { openapi: '3.1.0', info: { title: 'Celerity job API', version: '1' } } as const;

/**
 * The job API as a Fastify plugin, to mount in a server of your own:
 *
 * ```ts
 * const server = Fastify();
 * await server.register(celerityApi, { app, prefix: '/jobs-api' });
 * ```
 *
 * Everything it sets up stays inside its own encapsulated context: the
 * shared schemas (`Error`, `Job`), Celerity's validation (AJV options above),
 * its error handler and 404 body, JSON-only bodies (no text/plain parser),
 * the `x-request-id` response header, Celerity's routes and the app's own
 * (`app.routes`), and the store migration on ready. The host's routes keep
 * their own validator, error handler and parsers. Listening, logging, request
 * ids, TLS and authentication are the host server's.
 *
 * So are the server-wide options that decide whether a request reaches the
 * API at all. `routerOptions.maxParamLength` must be at least
 * {@link MAX_PARAM_LENGTH} (a warning is logged otherwise: Fastify's default
 * of 100 answers 414 for job ids of 101 to 128 characters), and errors raised
 * before routing (bad percent-encoding, 414, headers too large) take the
 * host's `frameworkErrors` and `clientErrorHandler`; `buildServer` shows
 * both set to answer in the API's error shape (`frameworkErrorHandler`,
 * `clientErrorHandler`).
 */
export const celerityApi: FastifyPluginAsync<CelerityApiOptions> = async (server, opts) => {
  const { app } = opts;
  const bodyLimit = opts.bodyLimit ?? app.config.bodyLimit;

  if (opts.openapi === 'host' && !server.hasDecorator('swagger')) {
    throw new Error("celerityApi: `openapi: 'host'` needs the host's @fastify/swagger, registered before celerityApi");
  }
  if (opts.openapi === true) {
    if (server.hasDecorator('swagger')) {
      throw new Error("celerityApi: `openapi: true` while the server already has @fastify/swagger; drop the option (that one lists Celerity's routes too), or say 'host' to serve its document");
    }
    await server.register(fastifySwagger, { openapi: OPENAPI_INFO });
  }

  // Per route rather than setValidatorCompiler: a fixed compiler would not see
  // the schemas that a child context (an app's routes) adds with addSchema,
  // while `this` here is the context declaring the route, whose schemas are
  // complete by the time Fastify compiles (at ready).
  server.addHook('onRoute', function (route) {
    route.bodyLimit ??= bodyLimit;
    route.validatorCompiler ??= celerityValidator(this);
  });

  // Ids of up to MAX_PATH_ID_LENGTH characters (task names of 200) are valid
  // in paths; the host's router must let them through, or they can be
  // submitted but never read (414). maxParamLength is the server's alone.
  const paramLength = hostMaxParamLength(server);
  if (paramLength < MAX_PARAM_LENGTH) {
    server.log.warn(
      `celerityApi: the server's routerOptions.maxParamLength is ${paramLength}; job ids and task names in paths may be longer: create the server with Fastify({ routerOptions: { maxParamLength: ${MAX_PARAM_LENGTH} } })`,
    );
  }

  // A JSON body nested past MAX_JSON_DEPTH would crash the recursive code
  // after the parser (JSON.stringify of the job, structured clone): refused
  // here, naming the field, for every route of the API and of the app.
  // Callback hooks here and below: an async hook costs a promise per request.
  server.addHook('preValidation', (request, _reply, done) => {
    const deep = request.body !== null && typeof request.body === 'object' ? tooDeepPath(request.body, MAX_JSON_DEPTH, ['body']) : null;
    if (deep) return done(new RequestTooDeepError(deep.join('.'), MAX_JSON_DEPTH));
    done();
  });

  // JSON only: a text/plain body would otherwise reach the schema as a string
  // and get a confusing "must be object" instead of a clear 415.
  server.removeContentTypeParser('text/plain');
  server.addSchema(errorSchema);
  server.addSchema(jobViewSchema);
  errorHandlerPlugin(server, { notFound: opts.notFound ?? server.prefix !== '' });
  // Headers, CORS preflights and rate limits first: their onRequest hooks run
  // before authentication, so that 401s carry the headers and preflights
  // need no key; the limiter itself waits for the principal (preParsing).
  await registerAbuseLimits(server, app);
  // Before any body is read, and before the routes (app routes included) are added.
  registerAuth(server, app, opts.auth ?? app.config.auth);
  server.addHook('onSend', (request, reply, payload, done) => {
    reply.header('x-request-id', request.id);
    done(null, payload);
  });

  await server.register(healthRoutes, { app });
  await server.register(taskRoutes, { app });
  await server.register(jobRoutes, { app });
  await server.register(hookRoutes, { app });
  await server.register(uploadRoutes, { app });
  await server.register(opsRoutes, { app });
  await server.register(jobActionRoutes, { app });
  await server.register(queueActionRoutes, { app });
  await server.register(tenantWeightRoutes, { app });
  await server.register(tenantRoutes, { app });
  await server.register(bulkRoutes, { app });
  await server.register(statsRoutes, { app });
  await server.register(eventRoutes, { app });
  // The app's own routes, after Celerity's: they share the error shape and the OpenAPI document.
  for (const routes of app.routes) await server.register(routes, { app });
  if (opts.openapi) server.get('/openapi.json', { schema: { hide: true }, config: { celerity: { open: true } } }, async () => server.swagger());

  // Migrations run before the first request, not on it.
  server.addHook('onReady', async () => {
    await app.openStore();
  });
};

function celerityValidator(context: FastifyInstance): FastifySchemaCompiler<FastifySchema> {
  return (route) => {
    // getSchemas() is typed loosely; what addSchema accepted are JSON schemas.
    const compile = buildValidator(context.getSchemas() as Parameters<typeof buildValidator>[0], { customOptions: AJV_OPTIONS });
    // Fastify lower-cases header schemas only for its own compiler; request
    // header names are lower case, so a schema naming `X-Tenant` must too.
    const schema = route.httpPart === 'headers' ? lowerCaseHeaderNames(route.schema) : route.schema;
    const validate = compile({ ...route, schema } as Parameters<typeof compile>[0]) as ValidateFunction;
    // A JSON body cannot hold Infinity; a query string, path or header can.
    return route.httpPart === 'body' ? validate : finiteNumbersOnly(validate);
  };
}

type ValidateFunction = ((data: unknown, ...rest: unknown[]) => boolean) & { errors?: FastifySchemaValidationError[] | null; schemaEnv?: unknown };

/**
 * AJV coerces "1e309" to Infinity and then lets it pass `type: 'integer'`
 * and `maximum` alike; a limit of Infinity reached SQL. A coerced value
 * that is not a finite number is refused here, naming the field.
 */
function finiteNumbersOnly(validate: ValidateFunction): ValidateFunction {
  const checked: ValidateFunction = (data, ...rest) => {
    const ok = validate(data, ...rest);
    checked.errors = validate.errors;
    if (ok !== true || data === null || typeof data !== 'object') return ok;
    for (const [key, value] of Object.entries(data)) {
      if (typeof value === 'number' && !Number.isFinite(value)) {
        checked.errors = [{ keyword: 'type', instancePath: `/${key}`, schemaPath: '#/type', params: {}, message: 'must be a finite number' }];
        return false;
      }
    }
    return true;
  };
  // Fastify passes the parent object to validators that have one (for AJV's coercion of a root value).
  checked.schemaEnv = validate.schemaEnv;
  return checked;
}

function lowerCaseHeaderNames(schema: unknown): unknown {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return schema;
  const { properties, required, ...rest } = schema as { properties?: Record<string, unknown>; required?: unknown };
  const lower = (name: unknown) => (typeof name === 'string' ? name.toLowerCase() : name);
  return {
    ...rest,
    ...(properties !== undefined
      ? { properties: properties && typeof properties === 'object' ? Object.fromEntries(Object.entries(properties).map(([name, s]) => [lower(name), s])) : properties }
      : {}),
    ...(required !== undefined ? { required: Array.isArray(required) ? required.map(lower) : required } : {}),
  };
}

/** The host server's `maxParamLength` (routerOptions, or the deprecated top-level option), Fastify's default 100 when unset. */
function hostMaxParamLength(server: FastifyInstance): number {
  const config = server.initialConfig as { maxParamLength?: number; routerOptions?: { maxParamLength?: number } };
  return config.routerOptions?.maxParamLength ?? config.maxParamLength ?? 100;
}
