import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { CelerityError, InvalidInputError, UnknownTaskError } from '../errors.ts';
import { CURSOR_PATTERN, IDENTIFIER_PATTERN, IDENTIFIER_RULE, JOB_ID_PATTERN, JOB_ID_RULE, MAX_NAME_LENGTH, PATH_ID_PATTERN, TASK_NAME_PATTERN } from '../limits.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

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

// What a pattern means, in words: AJV's message would show the regex.
const PATTERN_RULES: Record<string, string> = {
  [JOB_ID_PATTERN]: `must be ${JOB_ID_RULE}`,
  [PATH_ID_PATTERN]: 'must be a job id: letters, digits, "_", ".", ":" or "-"',
  [IDENTIFIER_PATTERN]: IDENTIFIER_RULE,
  [TASK_NAME_PATTERN]: `must be a task name: 1-${MAX_NAME_LENGTH} letters, digits, "_", ".", ":" or "-"`,
  [CURSOR_PATTERN]: 'is not a next_cursor this API gave out',
};

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
        const pattern = v.keyword === 'pattern' ? (v.params as { pattern?: string }).pattern : undefined;
        const message = extra ? 'is not an allowed field' : pattern !== undefined ? (PATTERN_RULES[pattern] ?? 'is not in the expected format') : (v.message ?? 'is invalid');
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
  return { error: { code, message: withoutFrames(message), details: scrub(details) ?? null } };
}

/**
 * Stack traces stay in the log: they show server paths and code to whoever
 * sends a bad request. An Error among the details becomes its type and
 * message, a `stack` field is dropped, and a message keeps only what comes
 * before its first frame.
 */
function scrub(details: unknown): unknown {
  if (details === null || details === undefined || typeof details !== 'object') return typeof details === 'string' ? withoutFrames(details) : details;
  return JSON.parse(
    JSON.stringify(details, (key, value: unknown) => {
      if (key === 'stack') return undefined;
      if (value instanceof Error) return { type: value.name, message: withoutFrames(value.message) };
      return typeof value === 'string' ? withoutFrames(value) : value;
    }),
  );
}

function withoutFrames(text: string): string {
  const frame = text.search(/\n\s+at /);
  return frame === -1 ? text : text.slice(0, frame);
}

/**
 * Fastify's `frameworkErrors`: the errors its router raises before any route
 * or hook runs (a malformed percent-encoding, a path segment past
 * `maxParamLength`), which otherwise answer in Fastify's own shape.
 */
export function frameworkErrorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const [status, code] = FRAMEWORK_CODES[err.code] ?? [err.statusCode && err.statusCode < 500 ? err.statusCode : 400, 'bad_request'];
  const message = err.code === 'FST_ERR_BAD_URL' ? 'The URL is not validly percent-encoded' : err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'A path segment is too long' : err.message;
  // No route hook runs before routing, helmet's included: its headers are set here.
  reply
    .headers(SECURITY_HEADERS)
    .header('x-request-id', request.id)
    .status(status)
    .send(body(code, message, null));
}

const FRAMEWORK_CODES: Record<string, [number, string]> = {
  FST_ERR_BAD_URL: [400, 'invalid_url'],
  FST_ERR_MAX_PARAM_LENGTH: [414, 'uri_too_long'],
};

/**
 * The HTTP server's `clientError`: requests Node's parser refuses (an
 * unknown method, a malformed request line or header, headers past
 * `--max-http-header-size`, a timeout) never reach Fastify; they get a raw
 * response in the API's error shape, then the socket is closed, as Node does.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, code, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'headers_too_large', 'The request line or headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'request_timeout', 'The request took too long to arrive']
        : [400, 'Bad Request', 'bad_request', 'The request is not valid HTTP'];
  const text = JSON.stringify(body(code, message, null));
  // As Node's own handler does: no answer once the request in flight has
  // begun its own (a request refused before its body was read, whose body
  // then turns out malformed). A second answer on the socket would be read
  // as garbage after the first.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${RAW_SECURITY_HEADERS}Connection: close\r\n\r\n${text}`,
    );
  }
  socket.destroy(err);
}

const RAW_SECURITY_HEADERS = Object.entries(SECURITY_HEADERS)
  .map(([name, value]) => `${name}: ${value}\r\n`)
  .join('');
