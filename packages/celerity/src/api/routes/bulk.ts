import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { hasScope, isAdmin, type Principal, principalOf, type Scope, tenantScopeOf } from '../../auth/principal.ts';
import { ForbiddenError } from '../../errors.ts';
import { CURSOR_PATTERN, MAX_LIST_LIMIT } from '../../limits.ts';
import { BULK_ACTIONS, type BulkAction, type BulkActor, type BulkFilter, BulkOperationNotFoundError, listOperations, mayView, type OperationViewer, operationView } from '../../ops/bulk/operations.ts';
import { parseSearchFilter, type SearchFilterFields, searchFilterProperties } from '../search-filter.ts';
import { jobIdParamsSchema } from './jobs.ts';

/** What each bulk action asks of the key: the scope of doing it to one job. */
const ACTION_SCOPE: Record<BulkAction, Scope> = { retry: 'jobs:retry', cancel: 'jobs:cancel', delete: 'jobs:delete' };

interface BulkBody {
  action: BulkAction;
  filter?: SearchFilterFields;
  dry_run?: boolean;
}

const errors = { '4xx': { $ref: 'Error#' }, 503: { $ref: 'Error#' } } as const;

const operationSchema = {
  type: 'object',
  properties: {
    operation_id: { type: 'string' },
    action: { type: 'string', enum: [...BULK_ACTIONS] },
    filter: { type: 'object', additionalProperties: true },
    status: { type: 'string', enum: ['queued', 'running', 'stopping', 'completed', 'stopped', 'failed'] },
    matched: { type: 'integer', description: 'Jobs the filter matched when the run started.' },
    done: { type: 'integer' },
    failed: { type: 'integer', description: 'Jobs the action refused (finished, running, already retried...): the first ones are in `errors`.' },
    errors: {
      type: 'array',
      items: { type: 'object', properties: { job_id: { type: 'string' }, code: { type: 'string' }, message: { type: 'string' } } },
    },
    key_id: { type: ['string', 'null'] },
    key_name: { type: 'string' },
    tenant: { type: ['string', 'null'] },
    all_tenants: { type: 'boolean' },
    created_at: { type: 'string', format: 'date-time' },
    started_at: { type: ['string', 'null'], format: 'date-time' },
    finished_at: { type: ['string', 'null'], format: 'date-time' },
  },
  required: ['operation_id', 'action', 'filter', 'status', 'matched', 'done', 'failed', 'key_name', 'created_at'],
} as const;

/** The caller as the author of an operation: its key, its tenant scope and its task patterns. */
function actorOf(principal: Principal): BulkActor {
  return {
    keyId: principal.keyId,
    keyName: principal.name,
    scope: tenantScopeOf(principal),
    taskPatterns: isAdmin(principal) ? null : principal.tasks,
  };
}

function viewerOf(principal: Principal): OperationViewer {
  return { keyId: principal.keyId, scope: tenantScopeOf(principal), taskPatterns: isAdmin(principal) ? null : principal.tasks };
}

/**
 * Bulk actions by filter, their progress, stop, and the audit log. An
 * operation is confined to its key's tenant and task patterns; each of its
 * jobs goes through the same action (and checks) as one job's route.
 */
export async function bulkRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  server.post<{ Body: BulkBody }>(
    '/v1/bulk',
    {
      schema: {
        summary: 'Retry, cancel or delete every job a filter matches, in the background',
        description:
          "`dry_run: true` answers how many jobs the filter matches now (200, `{count}`, one COUNT statement), changing nothing. Otherwise the action starts in the background (202) as the internal task `celerity.bulk`: follow it at `GET /v1/bulk/{id}`, stop it with `POST /v1/bulk/{id}/stop`; it is written to the audit log (`GET /v1/audit`). The filter takes the filters of `GET /v1/jobs` (status, task, queue, tenant, key, id prefix, creation and finish ranges, error text, `where` on JSON paths) and is confined to the key's tenant and task patterns. The key needs the scope of the action: `jobs:retry`, `jobs:cancel` or `jobs:delete`.",
        tags: ['operations'],
        body: {
          type: 'object',
          required: ['action'],
          additionalProperties: false,
          properties: {
            action: { type: 'string', enum: [...BULK_ACTIONS] },
            filter: {
              type: 'object',
              additionalProperties: false,
              description: 'The filters of `GET /v1/jobs`, in the same spelling; `where` is a string or an array of strings.',
              properties: searchFilterProperties,
            },
            dry_run: { type: 'boolean', default: false },
          },
        },
        response: {
          200: { type: 'object', properties: { count: { type: 'integer' } }, required: ['count'] },
          202: operationSchema,
          ...errors,
        },
      },
      // The scope depends on the action, checked below; the route itself needs a valid key.
      config: { celerity: {} },
    },
    async (request, reply) => {
      const principal = principalOf(request);
      const { action, filter: given = {}, dry_run: dryRun } = request.body;
      const scope = ACTION_SCOPE[action];
      if (!hasScope(principal, scope)) throw new ForbiddenError(`The API key "${principal.name}" lacks the scope ${scope} that the action "${action}" needs`, { scope });
      if (!isAdmin(principal) && given.tenant !== undefined && given.tenant !== principal.tenant) {
        throw new ForbiddenError("filter.tenant names another tenant than the API key's; a key acts only on its own tenant's jobs", { field: 'filter.tenant' });
      }
      const filter: BulkFilter = parseSearchFilter(given, 'body.filter');
      const actor = actorOf(principal);
      if (dryRun) return reply.status(200).send({ count: await app.countBulk(actor, filter) });
      const op = await app.startBulk(actor, action, filter);
      request.log.info({ operation_id: op.id, action, filter, key_id: principal.keyId }, 'bulk operation started');
      const url = `${request.server.prefix}/v1/bulk/${op.id}`;
      return reply.status(202).header('location', url).send(operationView(op));
    },
  );

  const visibleOperation = async (principal: Principal, id: string) => {
    const op = await app.bulkOperation(id);
    if (!op || !mayView(viewerOf(principal), op)) throw new BulkOperationNotFoundError(id);
    return op;
  };

  server.get<{ Params: { id: string } }>(
    '/v1/bulk/:id',
    {
      schema: {
        summary: "A bulk operation's progress and outcome",
        tags: ['operations'],
        params: jobIdParamsSchema,
        response: { 200: operationSchema, ...errors },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request) => operationView(await visibleOperation(principalOf(request), request.params.id)),
  );

  server.post<{ Params: { id: string } }>(
    '/v1/bulk/:id/stop',
    {
      schema: {
        summary: 'Stop a bulk operation',
        description: 'A queued operation stops at once; a running one before its next job (`stopping`, then `stopped`). What it did so far stays done. A finished operation is answered as it is.',
        tags: ['operations'],
        params: jobIdParamsSchema,
        response: { 200: operationSchema, ...errors },
      },
      config: { celerity: { scope: 'jobs:cancel' } },
    },
    async (request) => {
      const principal = principalOf(request);
      await visibleOperation(principal, request.params.id);
      const op = await app.stopBulk(request.params.id);
      request.log.info({ operation_id: op.id, status: op.status, key_id: principal.keyId }, 'bulk operation stop requested');
      return operationView(op);
    },
  );

  server.get<{ Querystring: { limit: number; cursor?: string } }>(
    '/v1/audit',
    {
      schema: {
        summary: 'The audit log of bulk operations, newest first',
        description:
          "Who (key id and name), what (action and filter), when (created, started, finished) and how many (matched, done, failed). An admin key sees every entry; another key its tenant's (a key limited to task patterns, its own).",
        tags: ['operations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: MAX_LIST_LIMIT, default: 50 },
            cursor: { type: 'string', pattern: CURSOR_PATTERN, description: 'next_cursor of the previous page.' },
          },
        },
        response: {
          200: { type: 'object', properties: { operations: { type: 'array', items: operationSchema }, next_cursor: { type: ['string', 'null'] } }, required: ['operations', 'next_cursor'] },
          ...errors,
        },
      },
      config: { celerity: { scope: 'jobs:read' } },
    },
    async (request) => {
      const page = await listOperations(await app.openStore(), viewerOf(principalOf(request)), request.query.limit, request.query.cursor);
      return { operations: page.operations.map(operationView), next_cursor: page.nextCursor };
    },
  );
}
