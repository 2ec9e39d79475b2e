import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { App } from '../../app.ts';
import { inTenantScope, isAdmin, principalOf, taskAllowed, taskPatternMatches, tenantScopeOf } from '../../auth/principal.ts';
import { MAX_NAME_LENGTH, MAX_PATH_ID_LENGTH, PATH_ID_PATTERN } from '../../limits.ts';
import { acquireEventHub, type EventSink, type HubEvent } from '../event-hub.ts';
import { InvalidEventIdError, MAX_POSITION_LENGTH, parsePosition, type Position } from '../events/position.ts';

interface EventsQuery {
  job?: string;
  task?: string;
  queue?: string;
  last_event_id?: string;
}

/** A task name, or a pattern of them with `*` (as API keys' task patterns). */
const TASK_FILTER_PATTERN = `^[A-Za-z0-9_.:*\\-]{1,${MAX_NAME_LENGTH}}$`;

/** How long a stream that was ended keeps its socket while the client reads what is left. */
const END_GRACE_MS = 10_000;

/**
 * `GET /v1/events`: Server-Sent Events of job state changes and progress,
 * from the process' one {@link EventHub}. A stream shows only what its key
 * may read: its tenant's jobs (every tenant's for an admin), of the tasks
 * its patterns allow.
 */
export async function eventRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  const { hub, release } = acquireEventHub(app);
  const open = new Set<EventSink>();

  // An open stream never ends by itself: the server's close would wait for
  // it. Streams are ended before, and the hub closed with its last server.
  server.addHook('preClose', async () => {
    for (const sink of open) sink.end();
    open.clear();
    await release();
  });

  server.get(
    '/v1/events',
    {
      schema: {
        summary: 'Follow job state changes and progress (Server-Sent Events)',
        description:
          "A `text/event-stream` of the jobs the key may read. Each message's `event` is the job's new status (`queued`, `started`, `retrying`, `completed`, `failed`, `cancelled`, `deleted`) or `progress`; its `data` is JSON `{job_id, task, queue, tenant, status, progress?, attempt?, retry_of?, at}` (`retry_of` on a retry's `queued`); its `id` is a position in the feed. Reconnecting with `Last-Event-ID` (or `?last_event_id=`) resumes after it: the missed messages, then the live feed. A message `lagged` says some were not delivered (the client fell behind, or the position is older than what is kept): read the jobs you follow again. A comment every 15 s keeps the stream open. See docs/events.md.",
        tags: ['jobs'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            job: { type: 'string', minLength: 1, maxLength: MAX_PATH_ID_LENGTH, pattern: PATH_ID_PATTERN, description: "Only this job's events." },
            task: { type: 'string', pattern: TASK_FILTER_PATTERN, description: 'Only jobs of this task, or of the tasks matching this pattern (`*`: any run of characters).' },
            queue: { type: 'string', enum: app.queueNames(), description: 'Only jobs of this queue.' },
            last_event_id: {
              type: 'string',
              maxLength: MAX_POSITION_LENGTH,
              description: 'Resume after this message id, for clients that cannot send the Last-Event-ID header; the header wins when both are sent.',
            },
          },
        },
        headers: {
          type: 'object',
          properties: { 'last-event-id': { type: 'string', maxLength: MAX_POSITION_LENGTH, description: 'Resume after this message id (sent by EventSource on reconnection).' } },
        },
        response: {
          200: { description: 'The event stream (`text/event-stream`); it stays open.', type: 'string' },
          400: { $ref: 'Error#' },
          503: { $ref: 'Error#' },
        },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request: FastifyRequest<{ Querystring: EventsQuery }>, reply: FastifyReply) => {
      const from = resumePosition(request);
      const { matches, filterKey } = filterOf(request);
      // Redis must answer before the stream opens: a 503 now, rather than a stream that never speaks.
      await hub.start();

      const raw = reply.raw;
      reply.hijack();
      // Hijacked, so Fastify sends nothing itself: the headers set so far (security, CORS) are copied.
      const headers: Record<string, string | number | string[]> = {};
      for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = value;
      raw.writeHead(200, {
        ...headers,
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        // nginx buffers proxied answers by default, which would hold the events back.
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      raw.write(': connected\n\n');

      let endTimer: NodeJS.Timeout | null = null;
      const sink: EventSink = {
        matches,
        filterKey,
        write(text) {
          if (!raw.writableEnded && !raw.destroyed) raw.write(text);
        },
        get bufferedBytes() {
          return raw.writableLength;
        },
        end() {
          open.delete(sink);
          if (!raw.writableEnded) raw.end();
          // A client that stopped reading would keep its socket, and the unsent bytes, forever.
          endTimer ??= setTimeout(() => raw.destroy(), END_GRACE_MS);
          endTimer.unref();
        },
      };
      open.add(sink);
      let unsubscribe: (() => void) | null = null;
      let gone = false;
      raw.on('close', () => {
        gone = true;
        open.delete(sink);
        if (endTimer) clearTimeout(endTimer);
        unsubscribe?.();
      });
      try {
        const stop = await hub.subscribe(sink, from);
        if (gone) stop();
        else unsubscribe = stop;
      } catch (err) {
        // Headers are sent: the client can only be let go, and its EventSource reconnects.
        request.log.warn({ err }, 'events: the stream could not be resumed');
        sink.end();
      }
    },
  );
}

/** The position to resume after: the Last-Event-ID header, else the query's `last_event_id`; null: from now. */
function resumePosition(request: FastifyRequest<{ Querystring: EventsQuery }>): Position | null {
  const header = request.headers['last-event-id'];
  if (typeof header === 'string' && header !== '') return parsePosition(header, 'headers.last-event-id');
  if (Array.isArray(header)) throw new InvalidEventIdError('headers.last-event-id', 'is sent more than once');
  const query = request.query.last_event_id;
  if (query !== undefined) return parsePosition(query, 'querystring.last_event_id');
  return null;
}

/**
 * What a stream shows: the key's tenant and tasks, narrowed by the query's
 * filters; and a key naming exactly those, shared by streams that see the same.
 */
function filterOf(request: FastifyRequest<{ Querystring: EventsQuery }>): { matches: (event: HubEvent) => boolean; filterKey: string } {
  const principal = principalOf(request);
  const scope = tenantScopeOf(principal);
  const { job, task, queue } = request.query;
  const patterns = isAdmin(principal) ? null : principal.tasks;
  return {
    matches: (event) =>
      (job === undefined || event.jobId === job) &&
      (queue === undefined || event.queue === queue) &&
      (task === undefined || taskPatternMatches(task, event.task)) &&
      inTenantScope(scope, event.tenant) &&
      taskAllowed(principal, event.task),
    filterKey: JSON.stringify([scope.all ? null : [scope.tenant], patterns, job ?? null, task ?? null, queue ?? null]),
  };
}
