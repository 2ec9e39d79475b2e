/**
 * The documented limits of what Celerity accepts, in one place: the enqueue
 * options' Zod schema, the API's JSON schemas, task definitions and the
 * configuration all read them here, so the library and the HTTP edge refuse
 * the same values with the same words.
 */

/** Lowest priority BullMQ takes (2^21 - 1); 1 is the highest. */
export const MAX_PRIORITY = 2 ** 21 - 1;

/**
 * Longest time limit, in ms: Node's timers hold a signed 32-bit delay, and a
 * larger one fires at once instead of never.
 */
export const MAX_TIME_LIMIT_MS = 2 ** 31 - 1;

/** Longest `delay` of an enqueue: a year. */
export const MAX_DELAY_MS = 365 * 24 * 3600 * 1000;

/** Longest caller-supplied job id. */
export const MAX_JOB_ID_LENGTH = 128;

/** Longest tenant, idempotency key or task name. */
export const MAX_NAME_LENGTH = 200;

/** Deepest nesting of a JSON body (objects and arrays); far from any recursion limit, far above any real input. */
export const MAX_JSON_DEPTH = 64;

/** Largest page of `GET /v1/jobs`. */
export const MAX_LIST_LIMIT = 500;

/**
 * Longest job id in a path (`GET /v1/jobs/:id`): a caller's id, or one
 * Celerity or BullMQ made (a workflow step `<root>.<n>`, a scheduled run
 * `repeat:<schedule id>:<ms>` with a schedule id of up to 200 characters).
 */
export const MAX_PATH_ID_LENGTH = 256;

/** What such an id may contain (the caller's rule plus BullMQ's colons). */
export const PATH_ID_PATTERN = '^[A-Za-z0-9_.:\\-]+$';

/**
 * Fastify's `maxParamLength` Celerity needs: a path parameter is a job id or a
 * task name, and a client may percent-encode every character (3 bytes each).
 * Fastify measures the raw, encoded segment, and its default (100) answers
 * 414 for valid ids of 101 characters or more. Past this length the schema
 * would refuse the value anyway.
 */
export const MAX_PARAM_LENGTH = 3 * Math.max(MAX_PATH_ID_LENGTH, MAX_NAME_LENGTH);

/**
 * A caller's job id: letters, digits, `_`, `.`, `-`, and not an integer.
 * BullMQ 6.7 refuses an id equal to `${parseInt(id, 10)}` ("0", "42", "-1");
 * refusing every optionally signed run of digits is that rule made readable
 * ("007" and "-0" too). Colons are BullMQ's key separator; the rest keeps ids
 * URL-safe. The pattern is for AJV, the function for code.
 */
export const JOB_ID_PATTERN = `^(?!-?[0-9]+$)[A-Za-z0-9_.\\-]{1,${MAX_JOB_ID_LENGTH}}$`;
export const JOB_ID_RULE = `1-${MAX_JOB_ID_LENGTH} letters, digits, "_", "." or "-", and not an integer`;
const JOB_ID = new RegExp(JOB_ID_PATTERN);
export function isValidJobId(id: string): boolean {
  return JOB_ID.test(id);
}

/**
 * A task name, as `defineTask` takes it; a list filter or a webhook path that
 * is not one can name no task.
 */
export const TASK_NAME_PATTERN = `^[A-Za-z0-9_.:\\-]{1,${MAX_NAME_LENGTH}}$`;

/**
 * Text used as an identifier (tenant, idempotency key): no control characters
 * (NUL cannot be stored in PostgreSQL text, and newlines forge log lines) and
 * no lone surrogate halves (not encodable as UTF-8, so not storable either).
 * With the `u` flag, which AJV uses, `[\uD800-\uDFFF]` matches only unpaired
 * halves: emoji and other astral characters pass.
 */
export const IDENTIFIER_PATTERN = '^[^\\u0000-\\u001f\\u007f\\uD800-\\uDFFF]+$';
export const IDENTIFIER_RULE = 'must not contain control characters or unpaired surrogates';
const IDENTIFIER = new RegExp(IDENTIFIER_PATTERN, 'u');
export function isIdentifierText(value: string): boolean {
  return IDENTIFIER.test(value);
}

/** A `next_cursor` as the list gives it out (base64url of a small JSON array). */
export const CURSOR_PATTERN = '^[A-Za-z0-9_\\-]{1,512}$';

/**
 * The path of the first object or array nested deeper than `max` levels in
 * `value` (a parsed JSON document), or null. Iterative: the point is to
 * refuse documents too deep for the recursive code after it (JSON.stringify,
 * structured clone), so this check must not recurse itself. The path stops at
 * a few segments: the field at fault is what matters, not the whole chain.
 */
export function tooDeepPath(value: unknown, max: number = MAX_JSON_DEPTH, root: string[] = []): string[] | null {
  const stack: [unknown, number, string[]][] = [[value, 1, root]];
  while (stack.length > 0) {
    const [v, depth, path] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > max) return path.slice(0, root.length + 3);
    const short = path.length < root.length + 3;
    for (const [k, child] of Object.entries(v)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1, short ? [...path, k] : path]);
    }
  }
  return null;
}
