import { createHash } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import fastifyMultipart from '@fastify/multipart';
import type { FastifyInstance } from 'fastify';
import type { App } from '../../app.ts';
import { CelerityError, InvalidInputError, InvalidOptionsError, UnknownTaskError, type FieldIssue } from '../../errors.ts';
import { TERMINAL_STATUSES, type JobStatus } from '../../job-record.ts';
import { isIdentifierText, MAX_JSON_DEPTH, MAX_NAME_LENGTH, tooDeepPath } from '../../limits.ts';
import { parseInput, type Task } from '../../task.ts';
import { InvalidUploadError, UploadsNotAcceptedError, UploadTooLargeError, UnsupportedUploadTypeError } from '../../uploads/errors.ts';
import { checkContentType, declaredCandidates, normalizeContentType } from '../../uploads/sniff.ts';
import { releaseUpload, sanitizeFilename, saveUpload, sweepUploads, type SavedUpload } from '../../uploads/store.ts';
import type { UploadRef } from '../../uploads/upload-ref.ts';
import { principalOf, type Principal } from '../../auth/principal.ts';
import { assertMaySubmit, scopedSubmission } from '../access.ts';
import { submitOptionsSchema, submittedResponseSchema, toEnqueueOptions, type SubmitOptions } from './jobs.ts';

const FIELDS = ['task', 'input', 'options'] as const;
type FieldName = (typeof FIELDS)[number];

// Form fields carry a task name and two small JSON documents; a big one is a
// mistake (or an attack), not an input.
const MAX_FIELD_BYTES = 64 * 1024;

const uploadSchema = {
  summary: 'Upload a file and submit a job that processes it',
  description: [
    'A `multipart/form-data` form with one `file` and the fields `task`, `input` (a JSON object, default `{}`) and `options` (JSON, the options of `POST /v1/jobs`).',
    "The file is stored where the workers can read it, and the job is submitted with a handle to it in its input's `file` field",
    '(`{upload_id, path, filename, content_type, size}`; tasks declare `file: uploadRefSchema`). The file is removed when the job ends.',
    "The task must list the file's content type in its `accepts`; the type is checked against the file's bytes as well as its header.",
    'Errors name the form field at fault in `details.field`: 400 `invalid_filename`, `missing_file`, `too_many_files`, `invalid_json`, `invalid_request`;',
    '413 `payload_too_large` (over `CELERITY_UPLOAD_MAX_BYTES`); 415 `unsupported_media_type`; 422 `unknown_task`, `uploads_not_accepted`, `invalid_input`, `invalid_options`.',
    'Nothing is stored or enqueued when the request is refused.',
  ].join(' '),
  tags: ['jobs'],
  consumes: ['multipart/form-data'],
  // Documentation only: a multipart body is read as a stream by the handler,
  // which checks each field itself (the route's validator accepts anything).
  body: {
    type: 'object',
    required: ['file', 'task'],
    properties: {
      file: { type: 'string', format: 'binary', description: 'The file; its type must be one the task accepts.' },
      task: { type: 'string', minLength: 1, description: 'Name of a task that accepts uploads (see GET /v1/tasks).' },
      input: { type: 'string', description: "The task's input as a JSON object, without `file` (default `{}`)." },
      options: { type: 'string', description: 'JSON: the options of POST /v1/jobs (`delay`, `priority`, `job_id`, `tenant`, `time_limits`, `idempotency_key`).' },
    },
  },
  headers: {
    type: 'object',
    properties: {
      'idempotency-key': {
        type: 'string',
        minLength: 1,
        maxLength: MAX_NAME_LENGTH,
        description: 'As for POST /v1/jobs: the same key, task, input and file within the idempotency TTL return the first job.',
      },
    },
  },
  response: {
    202: submittedResponseSchema,
    '4xx': { $ref: 'Error#' },
    503: { $ref: 'Error#' },
  },
} as const;

/**
 * `POST /v1/uploads`: stores one file under the upload directory and submits
 * a job with a handle to it. Registers @fastify/multipart in its own scope
 * (so other routes stay JSON-only), and runs the janitor that removes orphan
 * uploads older than `CELERITY_UPLOAD_TTL`.
 */
export async function uploadRoutes(server: FastifyInstance, { app }: { app: App }): Promise<void> {
  const { uploadDir, uploadMaxBytes, uploadTtl } = app.config;

  await server.register(fastifyMultipart, {
    // Busboy would quietly keep only the last segment of "../../etc/passwd";
    // a client sending a path must be told no, so we see the name as sent.
    preservePath: true,
    limits: {
      fileSize: uploadMaxBytes,
      files: 1,
      // Room for a stray extra field, which is then named in the error.
      fields: 8,
      fieldSize: MAX_FIELD_BYTES,
      fieldNameSize: 100,
      parts: 12,
      headerPairs: 50,
    },
  });

  let janitor: NodeJS.Timeout | undefined;
  const sweep = () => sweepUploads(uploadDir, uploadTtl * 1000, Date.now(), server.log).catch((err: unknown) => server.log.warn({ err }, 'upload janitor failed'));
  server.addHook('onReady', async () => {
    void sweep();
    janitor = setInterval(sweep, Math.max(1_000, Math.min((uploadTtl * 1000) / 4, 3_600_000)));
    janitor.unref();
  });
  server.addHook('onClose', async () => {
    if (janitor) clearInterval(janitor);
  });

  server.post('/v1/uploads', { schema: uploadSchema, validatorCompiler: () => () => true, config: { celerity: { scope: 'jobs:submit' } } }, async (request, reply) => {
    if (!request.isMultipart()) {
      throw new InvalidUploadError('unsupported_media_type', 'content-type', 'POST /v1/uploads takes multipart/form-data', { status: 415 });
    }
    const header = request.headers['idempotency-key'];
    if (header !== undefined && (typeof header !== 'string' || header.length < 1 || header.length > MAX_NAME_LENGTH || !isIdentifierText(header))) {
      throw new InvalidUploadError('invalid_request', 'idempotency-key', `must be 1 to ${MAX_NAME_LENGTH} characters, without control characters`);
    }

    const principal = principalOf(request);
    const form = await readForm(request.parts(), app, uploadDir, uploadMaxBytes, principal);
    let saved = form.saved;
    // False once the upload is a directory an earlier request created (an idempotent replay).
    let ownsDir = true;
    try {
      const { task, input, options } = form;
      const contentType = await checkContentType(saved.path, form.declaredType, task.accepts, saved.filename);
      const enqueueOptions = scopedSubmission(principal, task.name, toEnqueueOptions(options, header, request.id), 'options.tenant');
      if (enqueueOptions.delay !== undefined && enqueueOptions.delay >= uploadTtl * 1000) {
        throw new InvalidOptionsError([{ path: 'options.delay', message: `must be shorter than CELERITY_UPLOAD_TTL (${uploadTtl} s), or the file would be removed before the job runs` }]);
      }
      const withFile = (s: SavedUpload): Record<string, unknown> => ({ ...input, file: toRef(s, contentType) });
      // Validated before anything moves or is enqueued, the handle included.
      parseInput(task, withFile(saved));
      if (enqueueOptions.idempotencyKey !== undefined) {
        // A replay must carry the same handle as the first request, or the
        // idempotency digest (over the input) would call it a conflict: the
        // upload id is derived from the key and the file's content instead.
        const adopted = await adoptDeterministicId(saved, task.name, enqueueOptions.idempotencyKey);
        saved = adopted.saved;
        ownsDir = adopted.created;
      }

      const handle = await app.enqueueByName(task.name, withFile(saved), enqueueOptions);
      const statusUrl = `${request.server.prefix}/v1/jobs/${encodeURIComponent(handle.id)}`;
      let status = 'queued';
      if (!handle.created) {
        reply.header('idempotent-replayed', 'true');
        status = (await handle.status())?.status ?? 'queued';
        // An earlier job answered. Without a key (an existing job_id) it has
        // its own file; with one it shares ours, which stays while it lives.
        if (enqueueOptions.idempotencyKey === undefined || TERMINAL_STATUSES.has(status as JobStatus)) {
          await releaseUpload(uploadDir, saved.upload_id);
        }
      }
      request.log.info({ job_id: handle.id, task: handle.task, queue: handle.queue, upload_id: saved.upload_id, replayed: !handle.created }, 'job submitted');
      return reply.status(202).header('location', statusUrl).send({ job_id: handle.id, status, status_url: statusUrl });
    } catch (err) {
      if (ownsDir) await releaseUpload(uploadDir, saved.upload_id);
      throw err;
    }
  });
}

interface Form {
  task: Task;
  input: Record<string, unknown>;
  options: SubmitOptions | undefined;
  saved: SavedUpload;
  declaredType: string | null;
}

type Part = {
  type: 'file' | 'field';
  fieldname: string;
  value?: unknown;
  valueTruncated?: boolean;
  filename?: string;
  mimetype?: string;
  file?: Readable & { truncated?: boolean };
};

/**
 * Reads the whole form, streaming the file to disk. Every part is consumed
 * even after a problem (busboy would stall on an unread file), and the first
 * problem is thrown at the end, after removing anything stored.
 */
async function readForm(parts: AsyncIterable<Part>, app: App, uploadDir: string, maxBytes: number, principal: Principal): Promise<Form> {
  const fields: Partial<Record<FieldName, string>> = {};
  let saved: SavedUpload | undefined;
  let declaredType: string | null = null;
  let fileParts = 0;
  let failure: unknown;
  const fail = (err: unknown) => void (failure ??= err);
  try {
    for await (const part of parts) {
      if (part.type === 'file') {
        const stream = part.file!;
        fileParts++;
        if (part.fieldname !== 'file') fail(new InvalidUploadError('invalid_request', part.fieldname, 'is not a field of this form (the file goes in `file`)'));
        else if (fileParts > 1) fail(new InvalidUploadError('too_many_files', 'file', 'only one file is allowed'));
        if (failure) {
          stream.resume();
          continue;
        }
        try {
          const filename = sanitizeFilename(part.filename ?? '');
          declaredType = normalizeContentType(part.mimetype);
          // Refuse what the task cannot take before writing a byte, when the
          // form gave the task first (as forms usually do).
          if (fields.task !== undefined) {
            assertMaySubmit(principal, fields.task);
            const task = taskOf(app, fields.task);
            if (declaredCandidates(declaredType, task.accepts, filename).length === 0) {
              throw new UnsupportedUploadTypeError(`type ${declaredType} is not accepted (accepted: ${task.accepts.join(', ')})`, { declared: declaredType, detected: null, accepts: task.accepts });
            }
          }
          saved = await saveUpload(uploadDir, stream, { filename, maxBytes });
        } catch (err) {
          stream.resume();
          // A file system error (it has a syscall) is the server's; anything
          // else breaking the file's stream is the body's (busboy destroys
          // it on a truncated form: "Unexpected end of multipart data").
          fail((err as NodeJS.ErrnoException).syscall ? err : multipartError(err, maxBytes));
        }
        continue;
      }
      const name = part.fieldname;
      if (!(FIELDS as readonly string[]).includes(name)) fail(new InvalidUploadError('invalid_request', name, 'is not a field of this form (task, input, options, file)'));
      else if (part.valueTruncated) fail(new UploadTooLargeError(name, MAX_FIELD_BYTES));
      else if (fields[name as FieldName] !== undefined) fail(new InvalidUploadError('invalid_request', name, 'is given twice'));
      else fields[name as FieldName] = String(part.value);
    }
  } catch (err) {
    fail(multipartError(err, maxBytes));
  }
  try {
    if (failure) throw failure;
    if (fields.task === undefined || fields.task === '') throw new InvalidUploadError('invalid_request', 'task', 'is required');
    const task = taskOf(app, fields.task);
    const input = parseJsonField('input', fields.input ?? '{}');
    if (!input || typeof input !== 'object' || Array.isArray(input)) throw new InvalidInputError(task.name, [{ path: '', message: 'must be a JSON object' }]);
    if ('file' in input) throw new InvalidInputError(task.name, [{ path: 'file', message: 'is set by the upload; send the file in the `file` part instead' }]);
    const options = fields.options === undefined ? undefined : checkOptions(parseJsonField('options', fields.options));
    if (!saved) throw new InvalidUploadError('missing_file', 'file', 'is required: one file part named `file`');
    return { task, input: input as Record<string, unknown>, options, saved, declaredType };
  } catch (err) {
    if (saved) await releaseUpload(uploadDir, saved.upload_id);
    throw err;
  }
}

function taskOf(app: App, name: string): Task {
  const task = app.task(name);
  if (!task) throw new UnknownTaskError(name, [...app.tasks.keys()]);
  if (task.accepts.length === 0) throw new UploadsNotAcceptedError(name);
  return task;
}

function parseJsonField(field: 'input' | 'options', text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidUploadError('invalid_json', field, `is not valid JSON: ${(err as Error).message}`);
  }
  // As for JSON bodies (plugin.ts): deeper documents would crash the recursive code after this.
  const deep = tooDeepPath(value, MAX_JSON_DEPTH, [field]);
  if (deep) throw new InvalidUploadError('invalid_request', field, `nests deeper than ${MAX_JSON_DEPTH} levels (at ${deep.join('.')})`);
  return value;
}

/**
 * Checks `options` against POST /v1/jobs' JSON schema for them (types,
 * ranges, unknown fields), so both routes refuse the same things; the
 * remaining rules (job id syntax, soft < hard) are enqueue's, as for jobs.
 */
function checkOptions(value: unknown): SubmitOptions {
  const issues = schemaIssues(submitOptionsSchema, value, 'options');
  if (issues.length > 0) {
    throw new InvalidUploadError('invalid_request', 'options', issues.map((i) => `${i.path} ${i.message}`).join('; '), { extra: { issues } });
  }
  return value as SubmitOptions;
}

interface SchemaNode {
  type?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  additionalProperties?: boolean;
  properties?: Record<string, SchemaNode>;
}

// The subset of JSON schema the options schema uses; a full validator for
// six fields would be a dependency for nothing.
function schemaIssues(schema: SchemaNode, value: unknown, path: string): FieldIssue[] {
  switch (schema.type) {
    case 'object': {
      if (!value || typeof value !== 'object' || Array.isArray(value)) return [{ path, message: 'must be object' }];
      const issues: FieldIssue[] = [];
      for (const [key, v] of Object.entries(value)) {
        const sub = schema.properties?.[key];
        if (sub) issues.push(...schemaIssues(sub, v, `${path}.${key}`));
        else if (schema.additionalProperties === false) issues.push({ path: `${path}.${key}`, message: 'is not an allowed field' });
      }
      return issues;
    }
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) return [{ path, message: 'must be integer' }];
      if (schema.minimum !== undefined && value < schema.minimum) return [{ path, message: `must be >= ${schema.minimum}` }];
      if (schema.maximum !== undefined && value > schema.maximum) return [{ path, message: `must be <= ${schema.maximum}` }];
      return [];
    case 'string':
      if (typeof value !== 'string') return [{ path, message: 'must be string' }];
      if (schema.minLength !== undefined && value.length < schema.minLength) return [{ path, message: `must NOT have fewer than ${schema.minLength} characters` }];
      if (schema.maxLength !== undefined && value.length > schema.maxLength) return [{ path, message: `must NOT have more than ${schema.maxLength} characters` }];
      // The `u` flag, as AJV compiles patterns.
      if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) return [{ path, message: `must match pattern "${schema.pattern}"` }];
      return [];
    default:
      return [];
  }
}

/** @fastify/multipart's and busboy's errors, as upload errors naming the field. */
function multipartError(err: unknown, maxBytes: number): unknown {
  if (err instanceof CelerityError) return err;
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'FST_REQ_FILE_TOO_LARGE':
      return new UploadTooLargeError('file', maxBytes);
    case 'FST_FILES_LIMIT':
      return new InvalidUploadError('too_many_files', 'file', 'only one file is allowed');
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new InvalidUploadError('invalid_request', 'body', 'too many fields: the form takes file, task, input and options');
    case 'FST_PROTO_VIOLATION':
      return new InvalidUploadError('invalid_request', 'body', 'a field name is not allowed');
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new InvalidUploadError('invalid_json', 'body', 'a field sent as application/json is not valid JSON');
    default:
      // Busboy's own errors (no boundary, a truncated body...) are the client's.
      return new InvalidUploadError('invalid_multipart', 'body', `malformed multipart body: ${(err as Error)?.message ?? String(err)}`);
  }
}

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * Moves a stored upload to an id derived from the task, the idempotency key,
 * the file name and content, so that a replay yields the same handle. If that
 * directory exists, the same file was already uploaded with this key: ours is
 * dropped and that one used. `created` says whether this request made it.
 */
async function adoptDeterministicId(saved: SavedUpload, task: string, key: string): Promise<{ saved: SavedUpload; created: boolean }> {
  const digest = createHash('sha256').update(`${task}\0${key}\0${saved.filename}\0${saved.sha256}`).digest();
  let id = '';
  for (let i = 0; i < 26; i++) id += ALPHABET[digest[i]! & 31]!;
  const dir = join(dirname(dirname(saved.path)), id);
  const moved = { ...saved, upload_id: id, path: join(dir, saved.filename) };
  try {
    await rename(dirname(saved.path), dir);
    return { saved: moved, created: true };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw err;
    await rm(dirname(saved.path), { recursive: true, force: true });
    return { saved: moved, created: false };
  }
}

function toRef(saved: SavedUpload, contentType: string): UploadRef {
  return { upload_id: saved.upload_id, path: saved.path, filename: saved.filename, content_type: contentType, size: saved.size };
}
