import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { principalOf } from '../../auth/principal.ts';
import { TASK_NAME_PATTERN, MAX_NAME_LENGTH } from '../../limits.ts';

const params = {
  type: 'object',
  properties: { name: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: TASK_NAME_PATTERN, description: 'A queue of the app (see GET /v1/queues).' } },
  required: ['name'],
} as const;

const errors = { '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } } as const;

/**
 * Pause, resume and drain a queue. A queue holds every tenant's jobs, so
 * these are admin keys' alone.
 */
export async function queueActionRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  const paused = {
    type: 'object',
    properties: { queue: { type: 'string' }, paused: { type: 'boolean' } },
    required: ['queue', 'paused'],
  } as const;

  server.post<{ Params: { name: string } }>(
    '/v1/queues/:name/pause',
    {
      schema: {
        summary: 'Pause a queue',
        description:
          'Workers finish the jobs they run and take no more from the queue; new jobs wait. The pause is kept in Redis: it holds for workers started later, until resumed. Unknown queue: 404 `queue_not_found`.',
        tags: ['operations'],
        params,
        response: { 200: paused, ...errors },
      },
      config: { celerity: { scope: 'admin' } },
    },
    async (request) => {
      await app.pauseQueue(request.params.name);
      request.log.info({ queue: request.params.name, key_id: principalOf(request).keyId }, 'queue paused');
      return { queue: request.params.name, paused: true };
    },
  );

  server.post<{ Params: { name: string } }>(
    '/v1/queues/:name/resume',
    {
      schema: { summary: 'Resume a paused queue', tags: ['operations'], params, response: { 200: paused, ...errors } },
      config: { celerity: { scope: 'admin' } },
    },
    async (request) => {
      await app.resumeQueue(request.params.name);
      request.log.info({ queue: request.params.name, key_id: principalOf(request).keyId }, 'queue resumed');
      return { queue: request.params.name, paused: false };
    },
  );

  server.post<{ Params: { name: string } }>(
    '/v1/queues/:name/drain',
    {
      schema: {
        summary: 'Remove the jobs waiting in a queue',
        description: 'Removes every waiting, delayed and prioritized job of the queue (not running ones); each then reads `cancelled`. Answers how many were removed.',
        tags: ['operations'],
        params,
        response: {
          200: { type: 'object', properties: { queue: { type: 'string' }, removed: { type: 'integer' } }, required: ['queue', 'removed'] },
          ...errors,
        },
      },
      config: { celerity: { scope: 'admin' } },
    },
    async (request) => {
      const { removed } = await app.drainQueue(request.params.name);
      request.log.info({ queue: request.params.name, removed, key_id: principalOf(request).keyId }, 'queue drained');
      return { queue: request.params.name, removed };
    },
  );
}
