import type { FastifyError, FastifyInstance } from 'fastify';
import { CelerityError, InvalidInputError, UnknownTaskError } from '../errors.ts';

/** The one error shape of the API. */
export interface ApiErrorBody {
  error: { code: string; message: string; details: unknown };
}

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: {},
      },
      required: ['code', 'message'],
    },
  },
  required: ['error'],
} as const;

// Fastify's own errors that are the client's fault, with our stable codes.
const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'invalid_json'],
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'payload_too_large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'invalid_content_length'],
};

/**
 * Maps every error to `{"error": {code, message, details}}`: Celerity's typed
 * errors keep their code and status; Fastify's parsing and schema errors name
 * the field at fault; anything else is a 500 that is logged, not leaked.
 * Unknown URLs get a 404 of the same shape unless `notFound` is false (a
 * host server mounting the API at its root keeps its own 404 handler).
 */
export function errorHandlerPlugin(app: FastifyInstance, { notFound = true }: { notFound?: boolean } = {}): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof CelerityError) {
      let details = err.details;
      if (err instanceof InvalidInputError) {
        // Through the API the task input is the body's `input` field.
        details = { ...err.details, issues: err.details.issues.map((i) => ({ ...i, path: i.path ? `input.${i.path}` : 'input' })) };
      }
      if (err instanceof UnknownTaskError) details = { field: 'task', ...(err.details as object) };
      if (err.httpStatus >= 500) request.log.warn({ err }, err.message);
      return reply.status(err.httpStatus).send(body(err.code, err.message, details));
    }
    if (err.validation) {
      const context = err.validationContext ?? 'body';
      const issues = err.validation.map((v) => {
        const missing = v.keyword === 'required' ? (v.params as { missingProperty?: string }).missingProperty : undefined;
        const extra = v.keyword === 'additionalProperties' ? (v.params as { additionalProperty?: string }).additionalProperty : undefined;
        const path = [context, ...v.instancePath.split('/').filter(Boolean), ...(missing ? [missing] : []), ...(extra ? [extra] : [])].join('.');
        const message = extra ? 'is not an allowed field' : (v.message ?? 'is invalid');
        return { path, message };
      });
      const summary = issues.map((i) => `${i.path} ${i.message}`).join('; ');
      return reply.status(400).send(body('invalid_request', `Invalid request: ${summary}`, { issues }));
    }
    const known = err.code ? FASTIFY_CODES[err.code] : undefined;
    if (known) return reply.status(known[0]).send(body(known[1], err.message, null));
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.status(err.statusCode).send(body('bad_request', err.message, null));
    }
    request.log.error({ err }, 'unhandled error');
    return reply.status(500).send(body('internal_error', 'Internal server error', null));
  });

  if (!notFound) return;
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send(body('not_found', `No route ${request.method} ${request.url.split('?')[0]}`, null));
  });
}

export function body(code: string, message: string, details: unknown): ApiErrorBody {
  return { error: { code, message, details: details ?? null } };
}
