import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { MAX_TENANTS_SHOWN, TENANT_SAMPLE, tenantsView } from '../../fairness/tenant-stats.ts';
import { MAX_NAME_LENGTH, TASK_NAME_PATTERN } from '../../limits.ts';
import { UnknownQueueError } from '../../ops/queue-control.ts';

const tenantView = {
  type: 'object',
  properties: {
    tenant: { type: ['string', 'null'], description: 'Null for the jobs without a tenant.' },
    backlog: { type: 'integer', description: "Jobs in the tenant's backlog in the fair stage, not yet runnable." },
    running: { type: 'integer' },
    wait_p95_ms: { type: ['number', 'null'], description: 'Submit → start, 95th percentile, over its jobs among the last finished ones.' },
    throughput_per_min: { type: 'number', description: 'Its jobs finished per minute, over the time the sample spans.' },
    weight: { type: 'number' },
  },
  required: ['tenant', 'backlog', 'running', 'wait_p95_ms', 'throughput_per_min', 'weight'],
} as const;

/** The tenants of a queue. They name every tenant using it: admin keys' alone. */
export async function tenantRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.get<{ Params: { name: string } }>(
    '/v1/queues/:name/tenants',
    {
      schema: {
        summary: "A queue's tenants",
        description: `Per tenant: its backlog in the fair stage, running jobs, wait p95 and throughput over the last ${TENANT_SAMPLE} completed jobs of the queue, weight. Tenants with the largest backlogs first, at most ${MAX_TENANTS_SHOWN} with a backlog (\`truncated\` says when there are more). Read from Redis. Unknown queue: 404 \`queue_not_found\`.`,
        tags: ['operations'],
        params: {
          type: 'object',
          properties: { name: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: TASK_NAME_PATTERN, description: 'A queue of the app (see GET /v1/queues).' } },
          required: ['name'],
        },
        response: {
          200: {
            type: 'object',
            properties: {
              queue: { type: 'string' },
              fair: { type: 'boolean' },
              sampled: { type: 'integer' },
              sample_span_ms: { type: 'integer' },
              truncated: { type: 'boolean' },
              tenants: { type: 'array', items: tenantView },
            },
            required: ['queue', 'fair', 'sampled', 'sample_span_ms', 'truncated', 'tenants'],
          },
          '4xx': { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      config: { celerity: { scope: 'admin' } },
    },
    async (request) => {
      const known = app.queueNames();
      if (!known.includes(request.params.name)) throw new UnknownQueueError(request.params.name, known);
      return tenantsView(app.broker, request.params.name);
    },
  );
}
