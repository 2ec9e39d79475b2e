import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import type { EnqueueOptions } from '../../client/enqueue.ts';
import { UnknownHookError } from '../../errors.ts';
import { IDENTIFIER_PATTERN, MAX_NAME_LENGTH, TASK_NAME_PATTERN } from '../../limits.ts';
import { sendAccepted, submittedResponseSchema } from './jobs.ts';

const identifier = { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: IDENTIFIER_PATTERN } as const;

interface HookHeaders {
  'idempotency-key'?: string;
  'x-delivery-id'?: string;
  'x-github-delivery'?: string;
  'x-tenant-id'?: string;
}

/**
 * Webhook intake: `POST /v1/hooks/:task` takes a third party's JSON payload
 * as the task's input as is (no envelope, since the sender cannot be made to
 * wrap it), validates it against the task's schema and enqueues it (202).
 * Senders retry deliveries, so a delivery id header makes the call
 * idempotent: the same delivery returns the first job.
 */
export async function hookRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.post<{ Params: { task: string }; Body: unknown; Headers: HookHeaders }>(
    '/v1/hooks/:task',
    {
      schema: {
        summary: 'Receive a webhook: the JSON body is the input of the task named in the path',
        tags: ['hooks'],
        params: { type: 'object', properties: { task: { type: 'string', pattern: TASK_NAME_PATTERN } }, required: ['task'] },
        headers: {
          type: 'object',
          properties: {
            'idempotency-key': { ...identifier, description: 'Same delivery, same job (also X-Delivery-Id, X-GitHub-Delivery).' },
            'x-delivery-id': identifier,
            'x-github-delivery': identifier,
            'x-tenant-id': { ...identifier, description: 'Tenant the job belongs to.' },
          },
        },
        body: { type: 'object', description: "The task's input (checked against its schema)." },
        response: {
          202: submittedResponseSchema,
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
    },
    async (request, reply) => {
      const { task } = request.params;
      if (!app.tasks.has(task) && !app.workflows.has(task)) throw new UnknownHookError(task);
      const h = request.headers;
      const delivery = h['idempotency-key'] ?? h['x-delivery-id'] ?? h['x-github-delivery'];
      const options: EnqueueOptions = {
        ...(delivery ? { idempotencyKey: hookKey(task, delivery) } : {}),
        ...(h['x-tenant-id'] ? { tenant: h['x-tenant-id'] } : {}),
        traceId: request.id,
      };
      return sendAccepted(request, reply, await app.enqueueByName(task, request.body, options));
    },
  );
}

/**
 * The idempotency key of a delivery. A long task name and a long delivery id
 * together would pass the key's limit, which the sender cannot help: those
 * are hashed instead (still one key per task and delivery).
 */
function hookKey(task: string, delivery: string): string {
  const key = `hook:${task}:${delivery}`;
  return key.length <= MAX_NAME_LENGTH ? key : `hook:sha256:${createHash('sha256').update(key).digest('base64url')}`;
}
