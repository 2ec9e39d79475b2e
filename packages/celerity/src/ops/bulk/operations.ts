import type { TenantScope } from '../../auth/principal.ts';
import { CelerityError, InvalidOptionsError } from '../../errors.ts';
import type { BulkOperationsTable } from '../../store/db.ts';
import type { JsonCondition } from '../../store/job-search.ts';
import type { JobStore, ListFilter } from '../../store/job-store.ts';

/** What a bulk action does to each job its filter matches. */
export const BULK_ACTIONS = ['retry', 'cancel', 'delete'] as const;
export type BulkAction = (typeof BULK_ACTIONS)[number];

/** `queued` (its task waits for a worker), `running`, `stopping` (asked to stop while running), then `completed`, `stopped` or `failed`. */
export type BulkStatus = 'queued' | 'running' | 'stopping' | 'completed' | 'stopped' | 'failed';
export const FINISHED_BULK: ReadonlySet<string> = new Set(['completed', 'stopped', 'failed']);

/**
 * The jobs a bulk action applies to: the fields of `GET /v1/jobs` (status,
 * task, tenant, key id, and whatever else ListFilter takes), without the
 * paging, which the operation does itself.
 */
export type BulkFilter = Omit<ListFilter, 'limit' | 'cursor' | 'scope' | 'taskPatterns'>;

/** Who started an operation, and so what it may reach: the key's tenant scope and task patterns. */
export interface BulkActor {
  keyId: string | null;
  keyName: string;
  scope: TenantScope;
  /** The key's task patterns; null: every task. */
  taskPatterns: readonly string[] | null;
}

/** The first failures an operation keeps, for the dashboard to show. */
export const MAX_KEPT_ERRORS = 20;

export interface BulkFailure {
  job_id: string;
  code: string;
  message: string;
}

/** One bulk operation: its audit entry and its progress. */
export interface BulkOperation {
  id: string;
  action: BulkAction;
  filter: BulkFilter;
  actor: BulkActor;
  status: BulkStatus;
  /** Jobs the filter matched when the run started (null until counted). */
  matched: number;
  done: number;
  failed: number;
  errors: BulkFailure[];
  cursor: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

/** No bulk operation of that id is visible to the caller. */
export class BulkOperationNotFoundError extends CelerityError {
  readonly code = 'bulk_operation_not_found';
  override readonly httpStatus = 404;

  constructor(id: string) {
    super(`No bulk operation with id "${id}"`, { operation_id: id });
  }
}

/** Bulk actions run as the internal task `celerity.bulk`, which an app built with `maintenance: false` lacks. */
export class BulkUnavailableError extends CelerityError {
  readonly code = 'bulk_unavailable';
  override readonly httpStatus = 409;

  constructor() {
    super('Bulk actions run as the internal task celerity.bulk on the queue "celerity", which this app leaves out (createApp({ maintenance: false }))', null);
  }
}

/** The filter as the operation pages the history with it: confined to the actor's tenant and task patterns. */
export function confinedFilter(op: Pick<BulkOperation, 'filter' | 'actor'>, limit: number, cursor: string | null): ListFilter {
  return {
    ...op.filter,
    scope: op.actor.scope,
    ...(op.actor.taskPatterns !== null ? { taskPatterns: op.actor.taskPatterns } : {}),
    limit,
    ...(cursor !== null ? { cursor } : {}),
  };
}

/**
 * How many jobs a filter matches for this actor: one `count(*)` with the
 * conditions of the very filter the operation pages with (so that a field
 * ListFilter gains is counted as it is applied), without the bulk
 * operations' own jobs, which the run leaves alone too.
 */
export async function countMatching(store: JobStore, op: Pick<BulkOperation, 'filter' | 'actor'>): Promise<number> {
  const { limit: _limit, cursor: _cursor, ...filter } = confinedFilter(op, 1, null);
  return store.count({ ...filter, excludeTasks: [BULK_TASK] });
}

const BULK_TASK = 'celerity.bulk';

/**
 * Bulk operations leave each other alone: an operation's own job (a
 * `celerity.bulk` job of the tenant, queued or running) matches filters such
 * as `status: queued`, and cancelling or deleting it would stop the run.
 */
export function inBulkReach(job: { task: string }): boolean {
  return job.task !== BULK_TASK;
}

function toRow(op: BulkOperation): BulkOperationsTable {
  return {
    id: op.id,
    action: op.action,
    filter: JSON.stringify(op.filter),
    tenant: op.actor.scope.all ? null : op.actor.scope.tenant,
    all_tenants: op.actor.scope.all ? 1 : 0,
    task_patterns: op.actor.taskPatterns === null ? null : JSON.stringify(op.actor.taskPatterns),
    key_id: op.actor.keyId,
    key_name: op.actor.keyName,
    status: op.status,
    matched: op.matched,
    done: op.done,
    failed: op.failed,
    errors: op.errors.length > 0 ? JSON.stringify(op.errors) : null,
    cursor: op.cursor,
    created_at: op.createdAt,
    started_at: op.startedAt,
    finished_at: op.finishedAt,
  };
}

function fromRow(row: BulkOperationsTable): BulkOperation {
  return {
    id: row.id,
    action: row.action as BulkAction,
    filter: JSON.parse(row.filter) as BulkFilter,
    actor: {
      keyId: row.key_id,
      keyName: row.key_name,
      scope: row.all_tenants ? { all: true } : { all: false, tenant: row.tenant },
      taskPatterns: row.task_patterns === null ? null : (JSON.parse(row.task_patterns) as string[]),
    },
    status: row.status as BulkStatus,
    matched: Number(row.matched),
    done: Number(row.done),
    failed: Number(row.failed),
    errors: row.errors === null ? [] : (JSON.parse(row.errors) as BulkFailure[]),
    cursor: row.cursor,
    createdAt: Number(row.created_at),
    startedAt: row.started_at === null ? null : Number(row.started_at),
    finishedAt: row.finished_at === null ? null : Number(row.finished_at),
  };
}

export async function insertOperation(store: JobStore, op: BulkOperation): Promise<void> {
  await store.db.insertInto('bulk_operations').values(toRow(op)).execute();
}

export async function readOperation(store: JobStore, id: string): Promise<BulkOperation | null> {
  const row = await store.db.selectFrom('bulk_operations').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? fromRow(row) : null;
}

/** Writes the operation's progress and status; `unlessFinished` leaves a finished one as it is (a stop racing the end). */
export async function saveOperation(store: JobStore, op: BulkOperation, opts: { unlessFinished?: boolean } = {}): Promise<boolean> {
  const { id: _id, created_at: _c, ...changes } = toRow(op);
  let q = store.db.updateTable('bulk_operations').set(changes).where('id', '=', op.id);
  if (opts.unlessFinished) q = q.where('status', 'not in', [...FINISHED_BULK]);
  const res = await q.executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

/** Sets the status of an operation that has not finished; false when it had. */
export async function markOperation(store: JobStore, id: string, status: BulkStatus, finishedAt: number | null = null): Promise<boolean> {
  const res = await store.db
    .updateTable('bulk_operations')
    .set({ status, ...(finishedAt !== null ? { finished_at: finishedAt } : {}) })
    .where('id', '=', id)
    .where('status', 'not in', [...FINISHED_BULK])
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

/**
 * Who may see an operation: admins every one; a tenant's key those its
 * tenant started; a key limited to task patterns only its own (another key
 * of the tenant may have reached tasks it may not see).
 */
export interface OperationViewer {
  keyId: string | null;
  scope: TenantScope;
  taskPatterns: readonly string[] | null;
}

export function mayView(viewer: OperationViewer, op: BulkOperation): boolean {
  if (viewer.scope.all) return true;
  if (op.actor.scope.all || op.actor.scope.tenant !== viewer.scope.tenant) return false;
  return viewer.taskPatterns === null || (viewer.keyId !== null && op.actor.keyId === viewer.keyId);
}

/** The audit log, newest first, as `viewer` may see it; `cursor` is the last entry of the previous page. */
export async function listOperations(store: JobStore, viewer: OperationViewer, limit: number, cursor?: string): Promise<{ operations: BulkOperation[]; nextCursor: string | null }> {
  let q = store.db
    .selectFrom('bulk_operations')
    .selectAll()
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit + 1);
  if (!viewer.scope.all) {
    const tenant = viewer.scope.tenant;
    q = q.where('all_tenants', '=', 0).where((eb) => (tenant === null ? eb('tenant', 'is', null) : eb('tenant', '=', tenant)));
    if (viewer.taskPatterns !== null) q = q.where('key_id', '=', viewer.keyId ?? '');
  }
  if (cursor) {
    const [createdAt, id] = decodeCursor(cursor);
    q = q.where((eb) => eb.or([eb('created_at', '<', createdAt), eb.and([eb('created_at', '=', createdAt), eb('id', '<', id)])]));
  }
  const rows = await q.execute();
  const operations = rows.slice(0, limit).map(fromRow);
  const last = operations[operations.length - 1];
  return { operations, nextCursor: rows.length > limit && last ? Buffer.from(JSON.stringify([last.createdAt, last.id])).toString('base64url') : null };
}

function decodeCursor(cursor: string): [number, string] {
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(value) && value.length === 2 && Number.isSafeInteger(value[0]) && typeof value[1] === 'string') return [value[0], value[1]];
  } catch {
    // fall through
  }
  throw new InvalidOptionsError([{ path: 'cursor', message: 'is not a next_cursor this API gave out' }]);
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** An operation as the API shows it: the audit entry with its progress. */
export function operationView(op: BulkOperation) {
  return {
    operation_id: op.id,
    action: op.action,
    filter: filterView(op.filter),
    status: op.status,
    matched: op.matched,
    done: op.done,
    failed: op.failed,
    errors: op.errors,
    key_id: op.actor.keyId,
    key_name: op.actor.keyName,
    tenant: op.actor.scope.all ? null : op.actor.scope.tenant,
    all_tenants: op.actor.scope.all,
    created_at: iso(op.createdAt),
    started_at: iso(op.startedAt),
    finished_at: iso(op.finishedAt),
  };
}

/**
 * The filter in the API's spelling, as `GET /v1/jobs` and `POST /v1/bulk`
 * take it: `key_id`, `id_prefix`, instants in ISO-8601, `where` conditions
 * as text (`input.ticket_id:"T-1"`).
 */
export function filterView(filter: BulkFilter): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  const iso = (ms: number) => new Date(ms).toISOString();
  for (const [key, value] of Object.entries(filter) as [keyof BulkFilter, unknown][]) {
    if (value === undefined) continue;
    switch (key) {
      case 'keyId':
        view.key_id = value;
        break;
      case 'idPrefix':
        view.id_prefix = value;
        break;
      case 'createdAfter':
        view.created_after = iso(value as number);
        break;
      case 'createdBefore':
        view.created_before = iso(value as number);
        break;
      case 'finishedAfter':
        view.finished_after = iso(value as number);
        break;
      case 'finishedBefore':
        view.finished_before = iso(value as number);
        break;
      case 'json':
        view.where = (value as JsonCondition[]).map((c) => `${c.column}.${c.path.join('.')}:${JSON.stringify(c.value)}`);
        break;
      default:
        view[key] = value;
    }
  }
  return view;
}
