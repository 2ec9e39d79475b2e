import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { principalOf, tenantScopeOf } from '../../auth/principal.ts';
import { JOB_STATUSES } from '../../job-record.ts';
import { assertMaySubmit, assertNoUploadHandle, visibleJob } from '../access.ts';
import { jobIdParamsSchema } from './jobs.ts';

interface RetryBody {
  input?: unknown;
}

const errors = { '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } } as const;

/**
 * The operating actions on one job: retry, delete, promote. Each reads the
 * job as the caller may see it first, so that another tenant's job, or one
 * of a task outside the key's patterns, answers 404 like a missing job.
 */
export async function jobActionRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.post<{ Params: { id: string }; Body: RetryBody | undefined }>(
    '/v1/jobs/:id/retry',
    {
      schema: {
        summary: 'Retry a failed or cancelled job, as a new job',
        description:
          "Submits a NEW job of the same task and tenant whose `retry_of` is this job's id; the original keeps its history. `input` replaces the original's input (validated by the task's schema); without it the original's input is used. A queued, running or completed job answers 409 `job_not_retryable`; a job whose earlier retry is still queued or running answers 409 `retry_in_progress` naming it (`details.retry_id`).",
        tags: ['jobs'],
        params: jobIdParamsSchema,
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: { input: { description: "The new job's input; default the original's." } },
        },
        response: {
          202: {
            type: 'object',
            properties: {
              job_id: { type: 'string', description: 'The new job.' },
              retry_of: { type: 'string' },
              status: { type: 'string', enum: [...JOB_STATUSES] },
              status_url: { type: 'string' },
            },
            required: ['job_id', 'retry_of', 'status', 'status_url'],
          },
          ...errors,
        },
      },
      config: { celerity: { scope: 'jobs:retry' } },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const original = await visibleJob(app, principal, request.params.id);
      // A retry is a submission: the rules of POST /v1/jobs for the task and its input hold.
      assertMaySubmit(principal, original.task);
      const input = request.body?.input;
      if (input !== undefined) assertNoUploadHandle(principal, original.task, input);
      const handle = await app.retry(original.id, {
        ...(input !== undefined ? { input } : {}),
        ...(principal.keyId !== null ? { keyId: principal.keyId } : {}),
        scope: tenantScopeOf(principal),
        traceId: request.id,
      });
      const statusUrl = `${request.server.prefix}/v1/jobs/${encodeURIComponent(handle.id)}`;
      request.log.info({ job_id: handle.id, retry_of: original.id, task: handle.task, queue: handle.queue }, 'job retried');
      return reply.status(202).header('location', statusUrl).send({ job_id: handle.id, retry_of: original.id, status: 'queued', status_url: statusUrl });
    },
  );

  server.delete<{ Params: { id: string } }>(
    '/v1/jobs/:id',
    {
      schema: {
        summary: 'Delete a job from the queue and from the history',
        description: 'Removes the job from Redis (a workflow with its steps) and from the SQL history; reads and lists no longer show it. A running job answers 409 `job_active`: cancel it first.',
        tags: ['jobs'],
        params: jobIdParamsSchema,
        response: {
          200: { type: 'object', properties: { job_id: { type: 'string' }, deleted: { type: 'boolean' } }, required: ['job_id', 'deleted'] },
          ...errors,
        },
      },
      config: { celerity: { scope: 'jobs:delete' } },
    },
    async (request) => {
      const principal = principalOf(request);
      await visibleJob(app, principal, request.params.id);
      await app.deleteJob(request.params.id, { scope: tenantScopeOf(principal) });
      request.log.info({ job_id: request.params.id, key_id: principal.keyId }, 'job deleted');
      return { job_id: request.params.id, deleted: true };
    },
  );

  server.post<{ Params: { id: string } }>(
    '/v1/jobs/:id/promote',
    {
      schema: {
        summary: 'Run a delayed job now',
        description: "A job waiting out its delay or a retry's backoff is moved to the front of its queue. Any other job answers 409 `job_not_delayed`.",
        tags: ['jobs'],
        params: jobIdParamsSchema,
        response: {
          200: { type: 'object', properties: { job_id: { type: 'string' }, status: { type: 'string', enum: ['queued', 'retrying'] } }, required: ['job_id', 'status'] },
          ...errors,
        },
      },
      // Promoting changes when a job runs, not what it does: the scope of retrying.
      config: { celerity: { scope: 'jobs:retry' } },
    },
    async (request) => {
      const principal = principalOf(request);
      await visibleJob(app, principal, request.params.id);
      const status = await app.promote(request.params.id, { scope: tenantScopeOf(principal) });
      return { job_id: request.params.id, status };
    },
  );
}
