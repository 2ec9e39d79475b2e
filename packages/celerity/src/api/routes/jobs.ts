import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { App, JobHandle } from '../../app.ts';
import type { EnqueueOptions } from '../../client/enqueue.ts';
import { ForbiddenError } from '../../errors.ts';
import { DEFAULT_SEARCH_TIMEOUT_MS, MAX_JSON_CONDITIONS } from '../../store/job-search.ts';
import { parseSearchFilter, type SearchFilterFields, searchFilterProperties } from '../search-filter.ts';
import { isAdmin, principalOf, tenantScopeOf } from '../../auth/principal.ts';
import { assertNoUploadHandle, scopedSubmission, visibleJob } from '../access.ts';
import { JOB_STATUSES, MAX_JOB_LOG_LINE_BYTES, MAX_JOB_LOG_LINES } from '../../job-record.ts';
import { retriesOf } from '../../client/job-actions.ts';
import { readJobLogs } from '../../client/job-logs.ts';
import {
  CURSOR_PATTERN,
  IDENTIFIER_PATTERN,
  JOB_ID_PATTERN,
  JOB_ID_RULE,
  MAX_DELAY_MS,
  MAX_LIST_LIMIT,
  MAX_NAME_LENGTH,
  MAX_PRIORITY,
  MAX_PATH_ID_LENGTH,
  MAX_TIME_LIMIT_MS,
  PATH_ID_PATTERN,
} from '../../limits.ts';
import { jobView } from '../job-view.ts';

/** The `options` of a submission, as the API spells them. */
export interface SubmitOptions {
  delay?: number;
  priority?: number;
  job_id?: string;
  tenant?: string;
  time_limits?: { soft?: number; hard?: number };
  idempotency_key?: string;
}

interface SubmitBody {
  task: string;
  input?: unknown;
  options?: SubmitOptions;
}

interface ListQuery extends SearchFilterFields {
  limit: number;
  cursor?: string;
}

const LIST_DESCRIPTION = `Searches the SQL history, newest first (creation time, then id). Every filter given must hold.

- \`status\`, \`task\`, \`queue\`, \`tenant\`, \`key_id\`: equal to the value.
- \`id_prefix\`: ids that start with it (case-sensitive).
- \`created_after\` (inclusive), \`created_before\` (exclusive), \`finished_after\`, \`finished_before\`: time ranges; unfinished jobs never match a finish range.
- \`error\`: text within the error's message or type, case-insensitive (on SQLite only ASCII letters fold); \`%\` and \`_\` are literal.
- \`where\` (repeatable, at most ${MAX_JSON_CONDITIONS}): \`<input|result>.<key>[.<key>...]:<JSON scalar>\`, e.g. \`where=input.ticket_id:"T-1"\` or \`where=result.pages:12\`. Keys are identifiers (letters, digits, \`_\`); the value is a JSON string (in double quotes), number, \`true\`, \`false\` or \`null\`, compared with its type (\`"12"\` does not match \`12\`; \`null\` matches an explicit null, not a missing key).

A key of a tenant sees only its tenant's jobs, and a key limited to task patterns only jobs of those tasks, whatever the filters say.

Time budget: a search may take \`CELERITY_SEARCH_TIMEOUT\` ms (default 5000). Filters on status, task, queue, tenant, key, id prefix and creation time are served by indexes. The others (error text, \`where\`, finish times) check rows one by one, in chunks of the newest-first order; a search that runs out of time returns the jobs it found with \`partial: true\` and a \`next_cursor\` that continues the scan where it stopped (the page may be short, even empty, and more may match further on). A search that found nothing it could return in time answers 503 \`query_timeout\`: narrow it. See docs/search.md.`;

/** JSON schema of a submission's `options` (also POST /v1/uploads' `options` field). */
const identifier = { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: IDENTIFIER_PATTERN } as const;
const timeLimit = { type: 'integer', minimum: 1, maximum: MAX_TIME_LIMIT_MS } as const;

/** A job id in a path: what `options.job_id` accepts, or an id Celerity or BullMQ made. */
export const jobIdParamsSchema = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: MAX_PATH_ID_LENGTH, pattern: PATH_ID_PATTERN, description: 'The job id.' } },
  required: ['id'],
} as const;

/** JSON schema of a submission's `options` (also POST /v1/uploads' `options` field). */
export const submitOptionsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    delay: { type: 'integer', minimum: 0, maximum: MAX_DELAY_MS, description: 'Milliseconds before the job may run.' },
    priority: { type: 'integer', minimum: 1, maximum: MAX_PRIORITY, description: `1 is the highest, ${MAX_PRIORITY} the lowest.` },
    job_id: { type: 'string', pattern: JOB_ID_PATTERN, description: `Your own id (${JOB_ID_RULE}); submitting an existing id returns that job.` },
    tenant: identifier,
    time_limits: {
      type: 'object',
      additionalProperties: false,
      description: `Time limits of this job's attempts in ms, over the task's (soft < hard, at most ${MAX_TIME_LIMIT_MS}).`,
      properties: { soft: timeLimit, hard: timeLimit },
    },
    idempotency_key: { ...identifier, description: 'Same as the Idempotency-Key header.' },
  },
} as const;

/** The 202 answer of a submission (also POST /v1/uploads'). */
export const submittedResponseSchema = {
  type: 'object',
  properties: {
    job_id: { type: 'string' },
    status: { type: 'string', enum: [...JOB_STATUSES], description: "`queued`; for an idempotent replay, the earlier job's current status." },
    status_url: { type: 'string' },
  },
  required: ['job_id', 'status', 'status_url'],
} as const;

/**
 * The 202 of every route that submits a job: its id, status and status URL
 * (`Location` too). An idempotent replay says so in a header and reports the
 * earlier job's current status. Logs the submission with the request's trace id.
 */
export async function sendAccepted(request: FastifyRequest, reply: FastifyReply, handle: JobHandle): Promise<FastifyReply> {
  // Under the prefix the API is mounted at (celerityApi), if any.
  const statusUrl = `${request.server.prefix}/v1/jobs/${encodeURIComponent(handle.id)}`;
  let status = 'queued';
  if (!handle.created) {
    reply.header('idempotent-replayed', 'true');
    status = (await handle.status())?.status ?? 'queued';
  }
  request.log.info({ job_id: handle.id, task: handle.task, queue: handle.queue, replayed: !handle.created }, 'job submitted');
  return reply.status(202).header('location', statusUrl).send({ job_id: handle.id, status, status_url: statusUrl });
}

/**
 * The API's options as enqueue options, with the request's trace id. The
 * `Idempotency-Key` header, when given, wins over `options.idempotency_key`.
 */
export function toEnqueueOptions(options: SubmitOptions = {}, idempotencyKeyHeader?: string, traceId?: string): EnqueueOptions {
  // Field by field, not spread: on Node 20, adding a property to an object
  // made by a spread costs about a microsecond (docs/benchmarks.md, run 22),
  // and this runs on every submission.
  const out: EnqueueOptions = {};
  const idempotencyKey = idempotencyKeyHeader ?? options.idempotency_key;
  if (idempotencyKey !== undefined) out.idempotencyKey = idempotencyKey;
  if (options.time_limits !== undefined) out.timeLimits = options.time_limits;
  if (options.delay !== undefined) out.delay = options.delay;
  if (options.priority !== undefined) out.priority = options.priority;
  if (options.job_id !== undefined) out.jobId = options.job_id;
  if (options.tenant !== undefined) out.tenant = options.tenant;
  if (traceId !== undefined) out.traceId = traceId;
  return out;
}

const submitSchema = {
  summary: 'Submit a job',
  tags: ['jobs'],
  body: {
    type: 'object',
    required: ['task'],
    additionalProperties: false,
    properties: {
      task: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, description: 'Name of a task of the app (see GET /v1/tasks).' },
      input: { description: "The task's input; checked against its schema." },
      options: submitOptionsSchema,
    },
  },
  headers: {
    type: 'object',
    properties: {
      'idempotency-key': {
        ...identifier,
        description: 'Submitting the same key again within the idempotency TTL returns the first job; with another task or input, 409.',
      },
    },
  },
  response: {
    202: submittedResponseSchema,
    '4xx': { $ref: 'Error#' },
    503: { $ref: 'Error#' },
  },
} as const;

/** Submit, read and list jobs. */
export async function jobRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.post<{ Body: SubmitBody }>('/v1/jobs', { schema: submitSchema, config: { celerity: { scope: 'jobs:submit' } } }, async (request, reply) => {
    const { task, input, options = {} } = request.body;
    const principal = principalOf(request);
    const enqueueOptions = scopedSubmission(principal, task, toEnqueueOptions(options, request.headers['idempotency-key'] as string | undefined, request.id), 'options.tenant');
    assertNoUploadHandle(principal, task, input);
    const handle = await app.enqueueByName(task, input, enqueueOptions);
    return sendAccepted(request, reply, handle);
  });

  server.get<{ Params: { id: string }; Querystring: { stacks?: boolean } }>(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'Read a job: status, progress, result or error',
        tags: ['jobs'],
        params: jobIdParamsSchema,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            stacks: {
              type: 'boolean',
              default: false,
              description: "Whole stacks: the error's, and each failed attempt's in `attempt_history` (at most 4 KB each). They reveal the server's paths: `admin` keys only (403 for any other).",
            },
          },
        },
        response: { 200: { $ref: 'Job#' }, '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request) => {
      const principal = principalOf(request);
      const stacks = request.query.stacks === true;
      if (stacks && !isAdmin(principal)) throw new ForbiddenError("stacks=true is for admin keys only: stacks show the server's paths", { field: 'stacks' });
      const record = await visibleJob(app, principal, request.params.id);
      // Only a failed or cancelled job can have retries: polls of live jobs stay off SQL.
      if (record.status === 'failed' || record.status === 'cancelled') record.retriedBy = await retriesOf(app, record.id, tenantScopeOf(principal));
      return jobView(record, { stacks });
    },
  );

  server.get<{ Params: { id: string }; Querystring: { offset: number; limit: number } }>(
    '/v1/jobs/:id/logs',
    {
      schema: {
        summary: "A job's log lines",
        description: `What the handler logged through \`ctx.log\` at info level and above, oldest first, over all attempts (each line names its attempt). A job keeps at most ${MAX_JOB_LOG_LINES} lines of at most ${MAX_JOB_LOG_LINE_BYTES} bytes each (a longer one is cut, \`truncated: true\`); past the cap, one line says how many were dropped. Read from Redis while it holds the job, then from the history, where the recorder copies a finished job's lines (kept as long as the job's row; a deleted job's go with it). Scoped like GET /v1/jobs/{id}.`,
        tags: ['jobs'],
        params: jobIdParamsSchema,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            offset: { type: 'integer', minimum: 0, maximum: MAX_JOB_LOG_LINES * 10, default: 0, description: 'Lines to skip (the next_offset of the previous page).' },
            limit: { type: 'integer', minimum: 1, maximum: MAX_JOB_LOG_LINES, default: 100 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              job_id: { type: 'string' },
              lines: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: {
                    time: { type: 'string', format: 'date-time' },
                    level: { type: 'string', enum: ['info', 'warn', 'error', 'fatal'] },
                    attempt: { type: 'integer' },
                    message: { type: 'string' },
                    data: { type: 'object', additionalProperties: true, description: 'The fields logged with the line, when any.' },
                    truncated: { type: 'boolean' },
                  },
                  required: ['time', 'level', 'attempt', 'message'],
                },
              },
              total: { type: 'integer', description: 'Lines the job keeps.' },
              next_offset: { type: ['integer', 'null'], description: 'offset of the next page; null on the last.' },
            },
            required: ['job_id', 'lines', 'total', 'next_offset'],
          },
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request) => {
      const principal = principalOf(request);
      const record = await visibleJob(app, principal, request.params.id);
      const all = await readJobLogs(app.broker, await app.openStore(), record.queue, record.id, tenantScopeOf(principal));
      const { offset, limit } = request.query;
      const page = all.slice(offset, offset + limit);
      return {
        job_id: record.id,
        lines: page.map((l) => ({
          time: new Date(l.celerity_log).toISOString(),
          level: l.level,
          attempt: l.attempt,
          message: l.msg,
          ...(l.data ? { data: l.data } : {}),
          ...(l.truncated ? { truncated: true } : {}),
        })),
        total: all.length,
        next_offset: offset + page.length < all.length ? offset + page.length : null,
      };
    },
  );

  server.post<{ Params: { id: string } }>(
    '/v1/jobs/:id/cancel',
    {
      schema: {
        summary: 'Cancel a queued or running job',
        description:
          'A queued or delayed job is removed at once (200, `cancelled`). A running job is told to stop on whichever worker holds it (202, `cancelling`); it ends `cancelled`. Cancelling a cancelled job is harmless; a completed or failed one answers 409.',
        tags: ['jobs'],
        params: jobIdParamsSchema,
        response: {
          200: { type: 'object', properties: { job_id: { type: 'string' }, status: { type: 'string', enum: ['cancelled'] } } },
          202: { type: 'object', properties: { job_id: { type: 'string' }, status: { type: 'string', enum: ['cancelling'] } } },
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      config: { celerity: { scope: 'jobs:cancel' } },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      // Read first: another tenant's job, or a task outside the key's patterns, is a 404 like no job.
      await visibleJob(app, principal, request.params.id);
      const outcome = await app.cancel(request.params.id, { scope: tenantScopeOf(principal) });
      return reply.status(outcome === 'cancelled' ? 200 : 202).send({ job_id: request.params.id, status: outcome });
    },
  );

  server.get<{ Querystring: ListQuery }>(
    '/v1/jobs',
    {
      schema: {
        summary: 'Search jobs, newest first, in the SQL history',
        description: LIST_DESCRIPTION,
        tags: ['jobs'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...searchFilterProperties,
            limit: { type: 'integer', minimum: 1, maximum: MAX_LIST_LIMIT, default: 50 },
            cursor: { type: 'string', pattern: CURSOR_PATTERN, description: 'next_cursor of the previous page.' },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              jobs: { type: 'array', items: { $ref: 'Job#' } },
              next_cursor: { type: ['string', 'null'] },
              partial: { type: 'boolean', description: 'The search ran out of time: `jobs` is what it found, `next_cursor` continues the scan.' },
            },
            required: ['jobs', 'next_cursor', 'partial'],
          },
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request) => {
      const principal = principalOf(request);
      const q = request.query;
      if (!isAdmin(principal) && q.tenant !== undefined && q.tenant !== principal.tenant) {
        throw new ForbiddenError("tenant names another tenant than the API key's; a key lists only its own tenant's jobs", { field: 'tenant' });
      }
      const page = await app.listJobs({
        ...parseSearchFilter(q, 'querystring'),
        limit: q.limit,
        cursor: q.cursor,
        scope: tenantScopeOf(principal),
        ...(principal.tasks !== null && !isAdmin(principal) ? { taskPatterns: principal.tasks } : {}),
        timeoutMs: app.config.searchTimeout ?? DEFAULT_SEARCH_TIMEOUT_MS,
      });
      return { jobs: page.jobs.map((j) => jobView(j)), next_cursor: page.nextCursor, partial: page.partial === true };
    },
  );
}
