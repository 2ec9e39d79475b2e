import { type Expression, type ExpressionBuilder, type Kysely, type SqlBool, sql } from 'kysely';
import { ALL_TENANTS, type TenantScope } from '../auth/principal.ts';
import { CelerityError, type FieldIssue, InvalidOptionsError } from '../errors.ts';
import type { JobStatus } from '../job-record.ts';
import type { Database, Dialect, JobsTable } from './db.ts';
import { jsonIndexExpression, searchPathKey } from './search-indexes.ts';
import { storableText } from './storable.ts';
import { withTenantScope } from './tenant-scope.ts';

/**
 * A condition on a JSON value of the job's input or result: the value at
 * `path` (object keys, from the root) equals `value`, of the same JSON type
 * (`"3"` does not match `3`; `null` matches an explicit null, not a missing
 * key).
 */
export interface JsonCondition {
  column: 'input' | 'result';
  path: string[];
  value: string | number | boolean | null;
}

/** What a search may filter on. Every condition given must hold (AND). */
export interface SearchFilter {
  status?: JobStatus | undefined;
  task?: string | undefined;
  queue?: string | undefined;
  /** Only this tenant's jobs: a filter, on top of (never instead of) `scope`. */
  tenant?: string | undefined;
  /** Whose jobs the caller may see; default every tenant's. `{ all: false, tenant: null }`: only the jobs without a tenant. */
  scope?: TenantScope | undefined;
  /** Only the jobs submitted with this API key. */
  keyId?: string | undefined;
  /**
   * Only the jobs whose task matches one of these patterns (`*` stands for
   * any run of characters, as in `taskPatternMatches`); an empty list
   * matches nothing. Case-sensitive on both stores.
   */
  taskPatterns?: readonly string[] | undefined;
  /** Only the jobs whose id starts with this (case-sensitive). */
  idPrefix?: string | undefined;
  /** Created at or after this epoch ms. */
  createdAfter?: number | undefined;
  /** Created before this epoch ms (exclusive, so that windows tile). */
  createdBefore?: number | undefined;
  /** Finished at or after this epoch ms (unfinished jobs never match). */
  finishedAfter?: number | undefined;
  /** Finished before this epoch ms (exclusive). */
  finishedBefore?: number | undefined;
  /**
   * Text in the error's message or type, case-insensitively (on SQLite only
   * ASCII letters fold: its LIKE knows no other case).
   */
  error?: string | undefined;
  json?: readonly JsonCondition[] | undefined;
  /**
   * The time a search may take, in ms (default {@link DEFAULT_SEARCH_TIMEOUT_MS}).
   * What happens past it: see {@link searchJobs}.
   */
  timeoutMs?: number | undefined;
  limit: number;
  /** `nextCursor` of the previous page; the list runs newest first. */
  cursor?: string | undefined;
}

export interface SearchPage<T> {
  jobs: T[];
  nextCursor: string | null;
  /**
   * Set when the search ran out of time before the page was full: `jobs`
   * holds what it found, and `nextCursor` continues the scan where it
   * stopped (there may be no match left). Absent on a complete page.
   */
  partial?: true;
}

export const DEFAULT_SEARCH_TIMEOUT_MS = 5000;

/** Most `where` conditions one search takes. */
export const MAX_JSON_CONDITIONS = 8;
/** Most segments of a JSON path. */
export const MAX_JSON_PATH_SEGMENTS = 16;
/** Longest text of an `error` search. */
export const MAX_ERROR_SEARCH_LENGTH = 200;

/**
 * The rows a chunk of a scan examines at first, and at most: a chunk is one
 * statement, so its size bounds how far a search can run past its deadline.
 * Chunks double, so that a sparse match does not pay a round trip per 2,000
 * rows.
 */
const FIRST_CHUNK = 2000;
/** An id prefix matched by more ids than this is checked row by row on SQLite (see `isBroadPrefix`). */
const PREFIX_PROBE = 5000;
const MAX_CHUNK = 64_000;

/**
 * A search ran out of time before finding anything it could return (on
 * PostgreSQL, its first statement was cancelled by `statement_timeout`).
 * Narrow the search (a task, a status, a time range) or raise
 * `CELERITY_SEARCH_TIMEOUT`.
 */
export class QueryTimeoutError extends CelerityError {
  readonly code = 'query_timeout';
  override readonly httpStatus = 503;

  constructor(timeoutMs: number) {
    super(`The search did not finish within ${timeoutMs} ms; narrow it (task, status, queue, a time range) or try again`, { timeout_ms: timeoutMs });
  }
}

/** A search parameter is malformed; `path` names it (`querystring.where`, `querystring.created_after`...). */
export class InvalidSearchError extends CelerityError {
  readonly code = 'invalid_request';
  override readonly httpStatus = 400;
  declare readonly details: { issues: FieldIssue[] };

  constructor(issues: FieldIssue[]) {
    super(`Invalid request: ${issues.map((i) => `${i.path} ${i.message}`).join('; ')}`, { issues });
  }
}

// ---------------------------------------------------------------------------
// Parsing what the API (or the CLI) receives as text

const SEGMENT = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/;
const EPOCH_MS = /^\d{1,15}$/;

/** The rule of a `where` condition, in words (error messages and docs share it). */
export const WHERE_RULE = 'must be <input|result>.<key>[.<key>...]:<JSON scalar>, keys of letters, digits and "_" (not starting with a digit), e.g. input.ticket_id:"T-1"';

/**
 * Parses one `where` condition, `input.ticket_id:"T-1"`: a path of
 * identifier segments under `input` or `result`, a colon, then a JSON
 * scalar (string, number, true, false, null). The first colon separates
 * them (a path holds none). `field` names it in errors.
 */
export function parseJsonCondition(text: string, field: string): JsonCondition {
  const colon = text.indexOf(':');
  const fail = (message: string): never => {
    throw new InvalidSearchError([{ path: field, message }]);
  };
  if (colon === -1) return fail(WHERE_RULE);
  const [column, ...path] = text.slice(0, colon).split('.');
  if (column !== 'input' && column !== 'result') return fail(`must start with input. or result. (${WHERE_RULE})`);
  if (path.length === 0 || path.length > MAX_JSON_PATH_SEGMENTS) return fail(`must name 1-${MAX_JSON_PATH_SEGMENTS} keys under ${column} (${WHERE_RULE})`);
  const bad = path.find((segment) => !SEGMENT.test(segment));
  if (bad !== undefined) return fail(`has a key that is not an identifier: ${JSON.stringify(bad)} (${WHERE_RULE})`);
  let value: unknown;
  try {
    value = JSON.parse(text.slice(colon + 1));
  } catch {
    return fail(`has a value that is not JSON: strings go in double quotes (${WHERE_RULE})`);
  }
  if (value !== null && typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
    return fail('has a value that is an object or an array: only JSON scalars (string, number, true, false, null) are compared');
  }
  return { column, path, value };
}

/**
 * An instant given as epoch milliseconds or ISO-8601 (`2026-11-30`,
 * `2026-11-30T12:00:00Z`, `…T12:00:00.250+01:00`; a date alone is midnight
 * UTC; a time needs its offset, so that no server's time zone leaks in).
 */
export function parseInstant(text: string, field: string): number {
  const fail = (): never => {
    throw new InvalidSearchError([{ path: field, message: 'must be epoch milliseconds or an ISO-8601 date or date-time with a time zone (2026-11-30, 2026-11-30T12:00:00Z)' }]);
  };
  if (EPOCH_MS.test(text)) return Number(text);
  const m = ISO_INSTANT.exec(text);
  if (!m) return fail();
  const [, y, mo, d, h = '0', mi = '0', s = '0'] = m;
  const month = Number(mo);
  const day = Number(d);
  // Date.parse rolls 2026-02-31 over into March: check the calendar first.
  const daysInMonth = new Date(Date.UTC(Number(y), month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return fail();
  const ms = Date.parse(text);
  return Number.isFinite(ms) && ms >= 0 ? ms : fail();
}

// ---------------------------------------------------------------------------
// The query

type JobsEb = ExpressionBuilder<Database, 'jobs'>;
type Condition = (eb: JobsEb) => Expression<SqlBool>;

/** What a search needs of the store (JobStore provides it). */
export interface SearchTarget {
  readonly db: Kysely<Database>;
  readonly dialect: Dialect;
  /**
   * The JSON paths (`input.ticket_id`, see {@link searchPathKey}) whose index
   * exists and is ready (`CELERITY_SEARCH_PATHS`, JobStore.ensureSearchIndexes):
   * a `where` condition on one of them is served by its index.
   */
  readonly searchPaths?: ReadonlySet<string> | undefined;
}

/**
 * The jobs that match `filter`, newest first (creation time, then id),
 * within its tenant scope, one page at a time.
 *
 * Equality filters (task, queue, tenant, key, id prefix, creation range,
 * and on SQLite status) are served by indexes (migrations 0003, 0005, 0008)
 * and run as one statement that reads about a page of rows (on SQLite, one
 * of them: see `planConditions`). The other conditions (error text, JSON
 * paths, finish range, task patterns with `*`, on PostgreSQL the status
 * (migration 0014), and on SQLite an id prefix that most ids share) are
 * checked row by row, so they could read the whole history: such
 * a search scans in chunks of the newest-first order (2,000 rows, doubling
 * up to 64,000), each chunk one statement bounded by a position found on an
 * index, and checks its deadline between chunks. Past the deadline it
 * returns what it found with `partial: true` and a cursor where the scan
 * stopped. On PostgreSQL every
 * statement also runs under `statement_timeout` (the time left), so no one
 * statement outlives the deadline either; a search cancelled before its
 * first chunk completes throws {@link QueryTimeoutError}. SQLite
 * (better-sqlite3) cannot interrupt a statement: there the chunk size is the
 * bound, and the event loop turns between chunks.
 */
export async function searchJobs(target: SearchTarget, filter: SearchFilter): Promise<SearchPage<JobsTable>> {
  for (const condition of filter.json ?? []) checkJsonCondition(condition);
  const scope = filter.scope ?? ALL_TENANTS;
  const timeoutMs = filter.timeoutMs ?? DEFAULT_SEARCH_TIMEOUT_MS;
  const deadline = performance.now() + timeoutMs;
  const start = filter.cursor ? decodeCursor(filter.cursor) : undefined;
  const postgres = target.dialect === 'postgres';

  return withTenantScope(target, scope, async (db) => {
    const broadPrefix = !postgres && filter.idPrefix !== undefined && (await isBroadPrefix(db, filter.idPrefix));
    const { base, residual } = planConditions(target.dialect, filter, scope, broadPrefix, target.searchPaths);
    const timeLeft = async () => {
      if (postgres) await sql`select set_config('statement_timeout', ${String(Math.max(1, Math.ceil(deadline - performance.now())))}, true)`.execute(db);
    };
    const select = (conditions: Condition[], position: Position | undefined) => {
      let q = db.selectFrom('jobs').where((eb) => eb.and(conditions.map((c) => c(eb))));
      if (position) q = q.where(after(position));
      return q.orderBy('created_at', 'desc').orderBy('id', 'desc');
    };

    if (residual.length === 0) {
      await timeLeft();
      const rows = await select(base, start)
        .where(notDeleted)
        .selectAll()
        .limit(filter.limit + 1)
        .execute()
        .catch(timedOut(timeoutMs));
      return page(rows, filter.limit);
    }

    const found: JobsTable[] = [];
    let position = start;
    let chunk = FIRST_CHUNK;
    for (;;) {
      let rows: JobsTable[];
      let boundary: Position | undefined;
      try {
        await timeLeft();
        // The chunk-th row of the unfiltered order: the chunk ends there.
        const edge = await select(base, position)
          .select(['created_at', 'id'])
          .offset(chunk - 1)
          .limit(1)
          .executeTakeFirst();
        boundary = edge ? [edge.created_at, edge.id] : undefined;
        let q = select([...base, ...residual], position).where(notDeleted);
        // Plain range terms beside the exact bounds: whichever (column, created_at) index the planner takes, it reads the chunk's window only.
        if (boundary) q = q.where(atOrBefore(boundary)).where('created_at', '>=', boundary[0]);
        if (position) q = q.where('created_at', '<=', position[0]);
        rows = await q
          .selectAll()
          .limit(filter.limit + 1 - found.length)
          .execute();
      } catch (err) {
        // The chunk was cancelled: what the earlier chunks found stands.
        if (!isStatementTimeout(err)) throw err;
        if (position === start) throw new QueryTimeoutError(timeoutMs);
        return { jobs: found, nextCursor: position ? encodeCursor(position) : null, partial: true };
      }
      found.push(...rows);
      if (found.length > filter.limit || !boundary) return page(found, filter.limit);
      position = boundary;
      if (performance.now() >= deadline) return { jobs: found, nextCursor: encodeCursor(position), partial: true };
      chunk = Math.min(chunk * 2, MAX_CHUNK);
    }
  });
}

/**
 * How many jobs match `filter` (paging and time budget aside), in one
 * `count(*)` statement: every condition of {@link searchJobs}, the index
 * served ones and the ones checked row by row alike, and `excludeTasks`.
 * It reads every match (and, for row-by-row conditions, every row of the
 * indexed part), so it is meant for a bulk action's count, not for pages.
 */
export async function countJobs(target: SearchTarget, filter: CountFilter): Promise<number> {
  for (const condition of filter.json ?? []) checkJsonCondition(condition);
  const scope = filter.scope ?? ALL_TENANTS;
  return withTenantScope(target, scope, async (db) => {
    // No broad-prefix probe: a count reads every match whatever the index, and the prefix's is then the narrowest.
    const { base, residual } = planConditions(target.dialect, { ...filter, limit: 0 }, scope, false, target.searchPaths);
    let q = db
      .selectFrom('jobs')
      .where((eb) => eb.and([...base, ...residual].map((c) => c(eb))))
      .where(notDeleted);
    if (filter.excludeTasks && filter.excludeTasks.length > 0) q = q.where('task', 'not in', [...filter.excludeTasks]);
    const row = await q.select((eb) => eb.fn.countAll().as('n')).executeTakeFirst();
    return Number(row?.n ?? 0);
  });
}

/** What {@link countJobs} counts: a search's filters, and tasks left out. */
export type CountFilter = Omit<SearchFilter, 'limit' | 'cursor' | 'timeoutMs'> & { excludeTasks?: readonly string[] };

/**
 * The status of a deleted job's row: a tombstone that no read shows, kept so
 * that a recorder writing an older state of the job is refused by the
 * `event_seq` guard instead of bringing the job back (see client/job-actions.ts).
 */
export const DELETED = 'deleted';
/**
 * Checked on the rows a statement returns only: on a chunk's boundary it
 * would cost the boundary's index-only scan, and a tombstone counted in a
 * chunk's size is harmless.
 */
const notDeleted: Condition = (eb) => eb('status', '!=', DELETED);

function page(rows: JobsTable[], limit: number): SearchPage<JobsTable> {
  const jobs = rows.slice(0, limit);
  const last = jobs[jobs.length - 1];
  return { jobs, nextCursor: rows.length > limit && last ? encodeCursor([last.created_at, last.id]) : null };
}

/** A filter that one index can serve, in the list order. */
type Lead = 'json' | 'idPrefix' | 'keyId' | 'task' | 'queue' | 'status' | 'tenant' | 'taskPatterns' | 'error';

/**
 * Splits the filter into `base`, what an index serves (a chunk's boundary
 * is found on it, and a search without `residual` is that one statement),
 * and `residual`, what is checked row by row.
 *
 * PostgreSQL's planner combines indexes with its statistics, and
 * statement_timeout bounds whatever it picks: every indexable filter is
 * base there, but the status, which no index serves (migration 0014): as
 * base, a rare status over a long history would be one statement that
 * times out with nothing, where the chunks give a partial page. SQLite's
 * planner has no statistics and one index per statement, and nothing
 * interrupts it: a second equality on another
 * column (`task` and `queue` that never meet) would read every row of the
 * first. There, base is the scope, the creation range and one lead filter
 * (the first present of LEADS, which have an index beginning with them, or
 * with the tenant for a tenant's scope); the other filters are residual,
 * written `+column` so that SQLite cannot seek by them either.
 *
 * A `where` condition on a JSON path with an index of its own
 * (`searchPaths`) is base on both stores, and on SQLite the lead: the value
 * a user indexes a path for (a ticket id) is rarer than any status or task,
 * so even the tenant of a tenant's scope is then checked row by row.
 */
function planConditions(dialect: Dialect, f: SearchFilter, scope: TenantScope, broadPrefix: boolean, searchPaths: ReadonlySet<string> | undefined): { base: Condition[]; residual: Condition[] } {
  const sqlite = dialect === 'sqlite';
  // On SQLite a residual column is `+column`: not an index term.
  const col = (name: keyof JobsTable, residual: boolean) => (residual && sqlite ? sql`+${sql.ref(name)}` : sql.ref(name));
  const eq: [Lead, (residual: boolean) => Condition][] = [];
  const indexed = (f.json ?? []).filter((c) => searchPaths?.has(searchPathKey(c)));
  const unindexed = (f.json ?? []).filter((c) => !indexed.includes(c));
  // Its exact check rides with the index term: both are base, the index narrows the rows to check.
  for (const condition of indexed) eq.push(['json', () => (eb) => eb.and([indexedJsonTerm(dialect, condition)(eb), jsonEquals(dialect, condition)(eb)])]);
  if (f.idPrefix !== undefined && !broadPrefix) eq.push(['idPrefix', () => idStartsWith(dialect, f.idPrefix!)]);
  if (f.keyId) eq.push(['keyId', (r) => () => sql<SqlBool>`${col('key_id', r)} = ${f.keyId!}`]);
  if (f.task) eq.push(['task', (r) => () => sql<SqlBool>`${col('task', r)} = ${f.task!}`]);
  if (f.queue) eq.push(['queue', (r) => () => sql<SqlBool>`${col('queue', r)} = ${f.queue!}`]);
  if (f.status) eq.push(['status', (r) => () => sql<SqlBool>`${col('status', r)} = ${f.status!}`]);
  if (f.tenant) eq.push(['tenant', (r) => () => sql<SqlBool>`${col('tenant', r)} = ${f.tenant!}`]);
  if (f.taskPatterns && !f.taskPatterns.some((p) => p.includes('*'))) eq.push(['taskPatterns', () => taskMatches(dialect, f.taskPatterns!)]);
  // A search of error text walks only the jobs that have an error (migration 0008's partial indexes).
  if (f.error !== undefined) eq.push(['error', (r) => () => sql<SqlBool>`${col('error_message', r)} is not null`]);

  const jsonLead = sqlite && indexed.length > 0;
  const base: Condition[] = [jsonLead ? inScopeRowByRow(scope) : inScope(scope)];
  if (f.createdAfter !== undefined) base.push((eb) => eb('created_at', '>=', f.createdAfter!));
  if (f.createdBefore !== undefined) base.push((eb) => eb('created_at', '<', f.createdBefore!));
  const residual: Condition[] = [];
  const leads: Lead[] = scope.all ? ['json', 'idPrefix', 'keyId', 'task', 'queue', 'status', 'tenant', 'error'] : ['json', 'idPrefix', 'status', 'error', 'keyId'];
  const lead = sqlite ? leads.find((name) => eq.some(([n]) => n === name)) : undefined;
  for (const [name, condition] of eq) {
    // PostgreSQL has no index on `status` (migration 0014: a job's start and end are HOT updates): checked row by row, in chunks.
    if (!sqlite && name === 'status') residual.push(condition(true));
    // Each indexed JSON condition is base: the first is SQLite's lead, the others narrow the same statement.
    else if (!sqlite || name === lead || name === 'json') base.push(condition(false));
    else residual.push(condition(true));
  }
  // `+id`: SQLite then checks the prefix on each row instead of seeking (and sorting) by it.
  if (f.idPrefix !== undefined && broadPrefix) residual.push(() => sql<SqlBool>`+id glob ${globPrefix(f.idPrefix!)}`);
  if (f.taskPatterns?.some((p) => p.includes('*'))) residual.push(taskMatches(dialect, f.taskPatterns));
  if (f.finishedAfter !== undefined) residual.push(() => sql<SqlBool>`${col('finished_at', true)} >= ${f.finishedAfter!}`);
  if (f.finishedBefore !== undefined) residual.push(() => sql<SqlBool>`${col('finished_at', true)} < ${f.finishedBefore!}`);
  if (f.error !== undefined) residual.push(errorContains(dialect, f.error));
  for (const condition of unindexed) residual.push(jsonEquals(dialect, condition));
  return { base, residual };
}

/**
 * The scope as a condition of the query itself: the isolation on SQLite, and
 * on PostgreSQL what lets the planner use the tenant indexes (the row
 * security policy, an OR over the setting, cannot).
 */
export function inScope(scope: TenantScope): Condition {
  return (eb) => {
    if (scope.all) return eb.lit(true);
    return scope.tenant === null ? eb('tenant', 'is', null) : eb('tenant', '=', scope.tenant);
  };
}

/** {@link inScope}, with the tenant written `+tenant` on SQLite so that it cannot lead the statement's index. */
function inScopeRowByRow(scope: TenantScope): Condition {
  return (eb) => {
    if (scope.all) return eb.lit(true);
    return scope.tenant === null ? sql<SqlBool>`+tenant is null` : sql<SqlBool>`+tenant = ${scope.tenant}`;
  };
}

/**
 * The job's task matches one of `patterns` (`*`: any run of characters),
 * case-sensitively. A pattern without `*` is an equality (the index serves
 * it). Otherwise PostgreSQL's LIKE, case-sensitive, with `%`, `_` and the
 * escape character escaped; SQLite's LIKE ignores ASCII case, so GLOB there,
 * with its own wildcards (`?`, `[`; `*` cannot be literal in a pattern)
 * escaped as one-character classes.
 */
export function taskMatches(dialect: Dialect, patterns: readonly string[]): Condition {
  return (eb) => {
    if (patterns.length === 0) return eb.lit(false);
    return eb.or(
      patterns.map((pattern): Expression<SqlBool> => {
        if (!pattern.includes('*')) return eb('task', '=', pattern);
        if (dialect === 'sqlite') return sql<SqlBool>`task glob ${pattern.replace(/[[?]/g, '[$&]')}`;
        return sql<SqlBool>`task like ${pattern.replace(/[!%_]/g, '!$&').replaceAll('*', '%')} escape '!'`;
      }),
    );
  };
}

/**
 * A prefix as a pattern the primary key's index serves: GLOB on SQLite
 * (binary, like the index; LIKE would fold case and skip it), LIKE on
 * PostgreSQL (migration 0008 adds a `text_pattern_ops` index, which serves
 * it whatever the database's collation). Wildcards are escaped either way.
 */
function idStartsWith(dialect: Dialect, prefix: string): Condition {
  if (dialect === 'sqlite') return () => sql<SqlBool>`id glob ${globPrefix(prefix)}`;
  return () => sql<SqlBool>`id like ${`${prefix.replace(/[!%_]/g, '!$&')}%`} escape '!'`;
}

function globPrefix(prefix: string): string {
  return `${prefix.replace(/[[?*]/g, '[$&]')}*`;
}

/**
 * Whether more ids than {@link PREFIX_PROBE} start with `prefix`, counted on
 * the primary key's index alone (so at most that many entries are read).
 * SQLite, which keeps no statistics unless analysed, otherwise seeks a
 * prefix on that index and sorts every match: a short prefix (`01k`, most
 * of the history) read and sorted a million rows in one uninterruptible
 * statement. A broad prefix is checked row by row in the scan instead,
 * under the deadline. PostgreSQL's planner weighs the prefix with its
 * statistics, and statement_timeout bounds it.
 */
async function isBroadPrefix(db: Kysely<Database>, prefix: string): Promise<boolean> {
  const probe = db
    .selectFrom('jobs')
    .select('id')
    .where(() => sql<SqlBool>`id glob ${globPrefix(prefix)}`)
    .limit(PREFIX_PROBE);
  const { rows } = await sql<{ n: number }>`select count(*) as n from (${probe})`.execute(db);
  return (rows[0]?.n ?? 0) >= PREFIX_PROBE;
}

/** `text` within the error's message or type, case-insensitively; LIKE's wildcards in it are literal. */
function errorContains(dialect: Dialect, text: string): Condition {
  const pattern = `%${storableText(text).replace(/[!%_]/g, '!$&')}%`;
  const like = sql.raw(dialect === 'postgres' ? 'ilike' : 'like');
  return () => sql<SqlBool>`(error_message ${like} ${pattern} escape '!' or error_type ${like} ${pattern} escape '!')`;
}

/**
 * The JSON value at the path equals the given one, type included. Every
 * piece of the request is a bound parameter; the column is one of two
 * names.
 *
 * SQLite: `json_type` tells the type (and tells a JSON null from a missing
 * key), `json_extract` the value. PostgreSQL: the column is read as `json`,
 * not `jsonb`: `json` keeps the text as written and takes a `\u0000` escape,
 * which `jsonb` refuses (one such input would fail every search that reads
 * it). `#>` returns the value's own text, and the stored text is
 * `JSON.stringify` output, so the value is compared as `JSON.stringify`
 * writes it: strings by their escapes, numbers by their canonical form.
 */
function jsonEquals(dialect: Dialect, { column, path, value }: JsonCondition): Condition {
  const ref = sql.ref(column);
  const stored = typeof value === 'string' ? storableText(value) : value;
  const text = JSON.stringify(stored);
  // The stored text is JSON.stringify output on both stores, so wherever the
  // value matches, its JSON text is a substring of the row's: rows without
  // it are ruled out by a byte search instead of a JSON parse (most rows,
  // when the value is rare).
  if (dialect === 'postgres') return () => sql<SqlBool>`(strpos(${ref}, ${text}) > 0 and (${ref}::json #> ${path}::text[])::text = ${text})`;
  const jsonPath = `$.${path.join('.')}`;
  return () => {
    const type = sql`json_type(${ref}, ${jsonPath})`;
    const has = sql`instr(${ref}, ${text}) > 0`;
    if (stored === null) return sql<SqlBool>`(${has} and ${type} = 'null')`;
    if (typeof stored === 'boolean') return sql<SqlBool>`(${has} and ${type} = ${stored ? 'true' : 'false'})`;
    const types = typeof stored === 'number' ? sql`('integer', 'real')` : sql`('text')`;
    return sql<SqlBool>`(${has} and ${type} in ${types} and json_extract(${ref}, ${jsonPath}) = ${stored})`;
  };
}

/**
 * The term of an indexed path's condition that its index serves (see
 * `jsonIndexExpression`): the same test as {@link jsonEquals} on
 * PostgreSQL; on SQLite a looser one (`json_extract` reads `"1"` and `1`
 * alike, true as 1), which the exact check beside it narrows.
 */
function indexedJsonTerm(dialect: Dialect, condition: JsonCondition): Condition {
  const expression = jsonIndexExpression(dialect, condition);
  const { value } = condition;
  const stored = typeof value === 'string' ? storableText(value) : value;
  if (dialect === 'postgres') return () => sql<SqlBool>`${expression} = ${JSON.stringify(stored)}`;
  if (stored === null) return () => sql<SqlBool>`${expression} is null`;
  return () => sql<SqlBool>`${expression} = ${typeof stored === 'boolean' ? (stored ? 1 : 0) : stored}`;
}

/** The path is checked again here, for callers of the library who did not parse it. */
function checkJsonCondition({ column, path, value }: JsonCondition): void {
  const ok =
    (column === 'input' || column === 'result') &&
    path.length > 0 &&
    path.length <= MAX_JSON_PATH_SEGMENTS &&
    path.every((s) => SEGMENT.test(s)) &&
    (value === null || typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value)));
  if (!ok) throw new InvalidOptionsError([{ path: 'json', message: WHERE_RULE }]);
}

// ---------------------------------------------------------------------------
// Positions in the order, and the cursor

type Position = [createdAt: number, id: string];

/** Strictly after `p` in the newest-first order. */
function after([createdAt, id]: Position): Condition {
  return (eb) => eb.or([eb('created_at', '<', createdAt), eb.and([eb('created_at', '=', createdAt), eb('id', '<', id)])]);
}

/** Up to `p` in the newest-first order, `p` itself included. */
function atOrBefore([createdAt, id]: Position): Condition {
  return (eb) => eb.or([eb('created_at', '>', createdAt), eb.and([eb('created_at', '=', createdAt), eb('id', '>=', id)])]);
}

function encodeCursor([createdAt, id]: Position): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

function decodeCursor(cursor: string): Position {
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(value) && value.length === 2 && Number.isSafeInteger(value[0]) && typeof value[1] === 'string') return [value[0], value[1]];
  } catch {
    // fall through
  }
  throw new InvalidOptionsError([{ path: 'cursor', message: 'is not a next_cursor this API gave out' }]);
}

/** PostgreSQL's query_canceled, which statement_timeout raises. */
function isStatementTimeout(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '57014';
}

function timedOut(timeoutMs: number) {
  return (err: unknown): never => {
    throw isStatementTimeout(err) ? new QueryTimeoutError(timeoutMs) : err;
  };
}
