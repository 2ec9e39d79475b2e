import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { appMetrics } from '../../ops/metrics.ts';
import { laggingMessage, notReadyMessage, probeDependencies, probeHistory } from '../../ops/readiness.ts';
import { body } from '../errors.ts';

const dependencyStates = {
  redis: { type: 'string', enum: ['up', 'down'] },
  store: { type: 'string', enum: ['up', 'down'] },
} as const;

/**
 * `/healthz`: the process is alive (always 200), with the state of Redis and
 * SQL for whoever looks; a liveness probe, so a dependency being down never
 * fails it (restarting the API would not bring Redis back).
 * `/readyz`: Redis and SQL both answer a round trip, else 503 naming which;
 * a readiness probe, which takes the API out of its load balancer meanwhile.
 * Also 503 while the SQL history trails the queues by more than
 * `CELERITY_RECORDER_MAX_LAG` (a stuck recorder, or none running).
 * `/metrics`: Prometheus exposition of the app's metrics.
 */
export async function healthRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.get(
    '/healthz',
    {
      config: { celerity: { open: true } },
      schema: {
        summary: 'Liveness, with the state of Redis and SQL',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            properties: {
              status: { type: 'string', enum: ['ok', 'degraded'] },
              redis: { type: 'string', enum: ['up', 'down'] },
              store: { type: 'string', enum: ['up', 'down'] },
            },
          },
        },
      },
    },
    async () => {
      const redis = app.broker.isReady ? 'up' : 'down';
      const store = await app.store.ping().then(
        () => 'up' as const,
        () => 'down' as const,
      );
      return { status: redis === 'up' && store === 'up' ? 'ok' : 'degraded', redis, store };
    },
  );
  server.get(
    '/readyz',
    {
      config: { celerity: { open: true } },
      schema: {
        summary: 'Readiness: 200 when Redis and SQL both answer, else 503 naming which is down',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            properties: { status: { type: 'string', enum: ['ready'] }, ...dependencyStates },
          },
          503: { $ref: 'Error#' },
        },
      },
    },
    async (_request, reply) => {
      const [{ redis, store, down }, history] = await Promise.all([probeDependencies(app), probeHistory(app)]);
      if (down.length === 0 && history.state === 'up') return { status: 'ready' as const, redis, store };
      // A dependency down is the cause to fix first; a history lagging behind is reported when both answer.
      if (down.length > 0) return reply.status(503).send(body('not_ready', notReadyMessage(down), { redis, store }));
      return reply.status(503).send(body('not_ready', laggingMessage(history, app.config.recorderMaxLag), { redis, store, history: history.state, history_lag_ms: history.lagMs }));
    },
  );

  // Created now, not on the first scrape, so that the jobs a worker of this
  // app runs before then are counted (the hooks subscribe at creation).
  const metrics = appMetrics(app);
  server.get(
    '/metrics',
    {
      schema: { summary: 'Prometheus metrics (text format 0.0.4)', tags: ['health'], hide: true },
      // An API key with ops:read, or the scrape token of CELERITY_METRICS_TOKEN.
      config: { celerity: { scope: 'ops:read', metricsToken: true } },
    },
    async (_request, reply) => {
      const text = await metrics.render();
      return reply.type(metrics.contentType).send(text);
    },
  );
}
