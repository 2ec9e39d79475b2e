import type { FieldIssue } from '../errors.ts';
import { JOB_STATUSES, type JobStatus } from '../job-record.ts';
import { IDENTIFIER_PATTERN, MAX_NAME_LENGTH, MAX_PATH_ID_LENGTH, PATH_ID_PATTERN, TASK_NAME_PATTERN } from '../limits.ts';
import { InvalidSearchError, MAX_ERROR_SEARCH_LENGTH, MAX_JSON_CONDITIONS, parseInstant, parseJsonCondition, type SearchFilter } from '../store/job-search.ts';

/**
 * The search filters as the API spells them: the query of `GET /v1/jobs`
 * and the `filter` of `POST /v1/bulk`, which take the same fields.
 */
export interface SearchFilterFields {
  status?: JobStatus;
  task?: string;
  queue?: string;
  tenant?: string;
  key_id?: string;
  id_prefix?: string;
  created_after?: string;
  created_before?: string;
  finished_after?: string;
  finished_before?: string;
  error?: string;
  where?: string | string[];
}

/** The filters without paging or scope: what a search and a bulk action share. */
export type ParsedSearchFilter = Omit<SearchFilter, 'limit' | 'cursor' | 'scope' | 'taskPatterns' | 'timeoutMs'>;

const identifier = { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: IDENTIFIER_PATTERN } as const;

const instant = (what: string) =>
  ({
    type: 'string',
    maxLength: 40,
    description: `${what}, as epoch milliseconds or ISO-8601 with a time zone (\`2026-11-30\`, \`2026-11-30T12:00:00Z\`).`,
  }) as const;

/** The JSON schema of each filter field. */
export const searchFilterProperties = {
  status: { type: 'string', enum: [...JOB_STATUSES] },
  task: { type: 'string', pattern: TASK_NAME_PATTERN },
  tenant: { ...identifier, description: "Only this tenant's jobs. A key of a tenant sees only its own: naming another is refused (403)." },
  key_id: { type: 'string', pattern: '^[0-9a-z]{16}$', description: 'Only the jobs submitted with this API key (its id, as `celerity keys list` shows it).' },
  queue: { type: 'string', pattern: '^[A-Za-z0-9_.\\-]{1,100}$', description: "Only the jobs of this queue (the task's `queue`: 1-100 letters, digits, `_`, `.` or `-`)." },
  id_prefix: { type: 'string', maxLength: MAX_PATH_ID_LENGTH, pattern: PATH_ID_PATTERN, description: 'Only the jobs whose id starts with this.' },
  created_after: instant('Only the jobs created at or after this instant'),
  created_before: instant('Only the jobs created before this instant'),
  finished_after: instant('Only the jobs finished at or after this instant'),
  finished_before: instant('Only the jobs finished before this instant'),
  error: {
    type: 'string',
    minLength: 1,
    maxLength: MAX_ERROR_SEARCH_LENGTH,
    pattern: IDENTIFIER_PATTERN,
    description: 'Only the jobs whose error message or type contains this text (case-insensitive).',
  },
  where: {
    anyOf: [
      { type: 'string', maxLength: 1000 },
      { type: 'array', maxItems: MAX_JSON_CONDITIONS, items: { type: 'string', maxLength: 1000 } },
    ],
    description: 'A condition on the input or the result, `input.ticket_id:"T-1"`; several (an array, or a repeated parameter) must all hold.',
  },
} as const;

/**
 * The filters as the store takes them. Every malformed one is reported,
 * each under its own path below `at` (`querystring.where.1`,
 * `body.filter.created_after`).
 */
export function parseSearchFilter(q: SearchFilterFields, at: string): ParsedSearchFilter {
  const issues: FieldIssue[] = [];
  const attempt = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof InvalidSearchError)) throw err;
      issues.push(...err.details.issues);
      return undefined;
    }
  };
  const time = (name: 'created_after' | 'created_before' | 'finished_after' | 'finished_before') => {
    const text = q[name];
    return text === undefined ? undefined : attempt(() => parseInstant(text, `${at}.${name}`));
  };
  const createdAfter = time('created_after');
  const createdBefore = time('created_before');
  const finishedAfter = time('finished_after');
  const finishedBefore = time('finished_before');
  const where = q.where === undefined ? [] : Array.isArray(q.where) ? q.where : [q.where];
  const json = where.map((text, i) => attempt(() => parseJsonCondition(text, Array.isArray(q.where) ? `${at}.where.${i}` : `${at}.where`)));
  if (issues.length > 0) throw new InvalidSearchError(issues);
  // Only the fields given: a bulk operation stores its filter as JSON, and shows it back.
  const filter: ParsedSearchFilter = {};
  if (q.status !== undefined) filter.status = q.status;
  if (q.task !== undefined) filter.task = q.task;
  if (q.queue !== undefined) filter.queue = q.queue;
  if (q.tenant !== undefined) filter.tenant = q.tenant;
  if (q.key_id !== undefined) filter.keyId = q.key_id;
  if (q.id_prefix !== undefined) filter.idPrefix = q.id_prefix;
  if (q.error !== undefined) filter.error = q.error;
  if (createdAfter !== undefined) filter.createdAfter = createdAfter;
  if (createdBefore !== undefined) filter.createdBefore = createdBefore;
  if (finishedAfter !== undefined) filter.finishedAfter = finishedAfter;
  if (finishedBefore !== undefined) filter.finishedBefore = finishedBefore;
  const conditions = json.filter((c) => c !== undefined);
  if (conditions.length > 0) filter.json = conditions;
  return filter;
}
