import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { IDENTIFIER_PATTERN, MAX_NAME_LENGTH, TASK_NAME_PATTERN } from '../../limits.ts';
import { appMetrics } from '../../ops/metrics.ts';
import type { StatsGranularity, StatsGrouping } from '../../store/job-metrics.ts';

const latency = (what: string) => ({ type: ['number', 'null'], description: `${what} in ms, from log-scale buckets (within 19%); null when no job of the period had one.` }) as const;

const statsResponse = {
  type: 'object',
  properties: {
    granularity: { type: 'string', enum: ['minute', 'hour'] },
    by: { type: 'string', enum: ['task', 'queue', 'all'] },
    from: { type: 'string', format: 'date-time', description: 'Start of the first period covered (the range, rounded out to whole periods).' },
    to: { type: 'string', format: 'date-time', description: 'End of the last period covered (exclusive).' },
    series: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          queue: { type: ['string', 'null'], description: 'Null when the series sums every queue (`by=all`).' },
          task: { type: ['string', 'null'], description: 'Null when the series sums tasks (`by=queue` or `by=all`).' },
          points: {
            type: 'array',
            description: 'Periods in which a job of the series ended, oldest first; the others are left out.',
            items: {
              type: 'object',
              properties: {
                t: { type: 'string', format: 'date-time', description: 'Start of the period.' },
                completed: { type: 'integer' },
                failed: { type: 'integer' },
                cancelled: { type: 'integer' },
                retries: { type: 'integer', description: 'Retried attempts of the jobs that ended in the period.' },
                wait_p50: latency('Median enqueue-to-start wait (jobs that ended on their first attempt)'),
                wait_p95: latency('95th percentile wait'),
                run_p50: latency('Median run time of the final attempt'),
                run_p95: latency('95th percentile run time'),
              },
              required: ['t', 'completed', 'failed', 'cancelled', 'retries', 'wait_p50', 'wait_p95', 'run_p50', 'run_p95'],
            },
          },
        },
        required: ['queue', 'task', 'points'],
      },
    },
  },
  required: ['granularity', 'by', 'from', 'to', 'series'],
} as const;

/**
 * `GET /v1/stats`: job metrics over time, read from the rollup tables the
 * recorder keeps (never from `jobs`), so a chart costs one range read of a
 * primary key however large the history. Aggregates over every tenant, like
 * `/v1/queues` and `/metrics`, hence `ops:read`; they carry no job's content.
 *
 * Also what makes the API's `/metrics` cluster-wide: the API is where
 * `celerity_jobs_total{source="cluster"}` is exposed (see ops/metrics.ts).
 */
export async function statsRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  appMetrics(app).exposeClusterTotals();
  server.get<{ Querystring: { from?: string; to?: string; granularity?: StatsGranularity; by?: StatsGrouping; task?: string; queue?: string } }>(
    '/v1/stats',
    {
      schema: {
        summary: 'Throughput, failures, and wait and run percentiles per queue and task, by minute or by hour',
        description:
          'Minutes are kept 48 hours, hours `CELERITY_METRICS_RETENTION` days. A range covers at most 24 hours by minute and 31 days by hour; by default the last hour (minute) or day (hour). A job counts in the period in which it ended.',
        tags: ['operations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            from: { type: 'string', minLength: 1, maxLength: 40, description: 'Start (inclusive): an ISO 8601 date-time or epoch ms.' },
            to: { type: 'string', minLength: 1, maxLength: 40, description: 'End (exclusive): an ISO 8601 date-time or epoch ms; default now.' },
            granularity: { type: 'string', enum: ['minute', 'hour'], default: 'minute' },
            by: {
              type: 'string',
              enum: ['task', 'queue', 'all'],
              default: 'task',
              description: 'One series per queue and task, per queue (its tasks summed, percentiles of them all), or one for everything.',
            },
            task: { type: 'string', pattern: TASK_NAME_PATTERN },
            queue: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: IDENTIFIER_PATTERN },
          },
        },
        response: { 200: statsResponse, '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } },
      },
      config: { celerity: { scope: 'ops:read' } },
    },
    async (request) => app.stats(request.query),
  );
}
