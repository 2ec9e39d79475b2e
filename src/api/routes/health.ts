import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';

/**
 * `/healthz`: the process is alive (always 200), with the state of Redis and
 * SQL for whoever looks. Readiness probes that fail on a dependency arrive
 * with the operations work (`/readyz`).
 */
export async function healthRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.get(
    '/healthz',
    {
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
}
