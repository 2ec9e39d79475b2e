import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { principalOf } from '../../auth/principal.ts';
import { viaBroker } from '../../broker/connection.ts';
import { InvalidOptionsError } from '../../errors.ts';
import { isFairQueue } from '../../fairness/park.ts';
import { MAX_WEIGHT, MIN_WEIGHT, setWeight } from '../../fairness/weights.ts';
import { IDENTIFIER_RULE, isIdentifierText, MAX_NAME_LENGTH, TASK_NAME_PATTERN } from '../../limits.ts';
import { UnknownQueueError } from '../../ops/queue-control.ts';

const params = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: TASK_NAME_PATTERN, description: 'A queue of the app (see GET /v1/queues).' },
    tenant: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, description: 'The tenant whose weight to set.' },
  },
  required: ['name', 'tenant'],
} as const;

const weightView = {
  type: 'object',
  properties: {
    queue: { type: 'string' },
    tenant: { type: 'string' },
    weight: { type: 'number', description: 'The weight the dispatcher now uses.' },
    source: { type: 'string', enum: ['api', 'config', 'default'], description: 'Where it comes from: this route, CELERITY_FAIR_WEIGHTS, or the default 1.' },
    fair: { type: 'boolean', description: 'Whether the queue is fair (CELERITY_FAIR_QUEUES of this process); weights matter only there.' },
  },
  required: ['queue', 'tenant', 'weight', 'source', 'fair'],
} as const;

/**
 * A tenant's weight in a fair queue (docs/semantics.md, Fair scheduling).
 * Weights shape how every tenant's jobs share the queue: admin keys' alone.
 */
export async function tenantWeightRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.put<{ Params: { name: string; tenant: string }; Body: { weight: number | null } }>(
    '/v1/queues/:name/tenants/:tenant/weight',
    {
      schema: {
        summary: "Set a tenant's weight in a fair queue",
        description: `A tenant of weight 2 gets twice the starts of a tenant of weight 1 while both have jobs waiting. The weight applies from the next dispatch, in every process, and wins over CELERITY_FAIR_WEIGHTS; \`null\` drops it (back to the configured weight, or 1). Between ${MIN_WEIGHT} and ${MAX_WEIGHT}. Unknown queue: 404 \`queue_not_found\`.`,
        tags: ['operations'],
        params,
        body: {
          type: 'object',
          properties: { weight: { type: ['number', 'null'], minimum: MIN_WEIGHT, maximum: MAX_WEIGHT } },
          required: ['weight'],
          additionalProperties: false,
        },
        response: { 200: weightView, '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'admin' } },
    },
    async (request) => {
      const { name, tenant } = request.params;
      const known = app.queueNames();
      if (!known.includes(name)) throw new UnknownQueueError(name, known);
      if (!isIdentifierText(tenant)) throw new InvalidOptionsError([{ path: 'tenant', message: IDENTIFIER_RULE }]);
      const { redis, config } = app.broker;
      const result = await viaBroker(redis, () => setWeight(redis, config.prefix, name, tenant, request.body.weight));
      request.log.info({ queue: name, tenant, weight: result.weight, source: result.source, key_id: principalOf(request).keyId }, 'tenant weight set');
      return { queue: name, tenant, ...result, fair: isFairQueue(app.broker, name) };
    },
  );
}
