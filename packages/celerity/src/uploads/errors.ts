/**
 * Errors of `POST /v1/uploads`. Each names the form field at fault in
 * `details.field` and, like the rest of the API, lists it in
 * `details.issues[].path`, so a client can point at the right input.
 */
import { CelerityError, type FieldIssue } from '../errors.ts';

/** Details shared by every upload error. */
export interface UploadErrorDetails {
  /** The multipart field at fault: `file`, `task`, `input`, `options`, or another part's name. */
  field: string;
  issues: FieldIssue[];
  [extra: string]: unknown;
}

function details(field: string, message: string, extra: Record<string, unknown> = {}): UploadErrorDetails {
  return { field, issues: [{ path: field, message }], ...extra };
}

/**
 * A malformed upload request: a missing, repeated or unknown field, a field
 * that is not JSON, a form that is not multipart. `code` says which.
 */
export class InvalidUploadError extends CelerityError {
  readonly code: string;
  override readonly httpStatus: number;
  declare readonly details: UploadErrorDetails;

  constructor(code: string, field: string, message: string, opts: { status?: number; extra?: Record<string, unknown> } = {}) {
    super(`${field}: ${message}`, details(field, message, opts.extra));
    this.code = code;
    this.httpStatus = opts.status ?? 400;
  }
}

/** The client's file name is a path (traversal, absolute, directories) or unusable. Nothing was stored. */
export class InvalidFilenameError extends CelerityError {
  readonly code = 'invalid_filename';
  override readonly httpStatus = 400;
  declare readonly details: UploadErrorDetails;

  constructor(reason: string) {
    super(`file: invalid file name: ${reason}`, details('file', `invalid file name: ${reason}`));
  }
}

/** The file (or a form field) is larger than allowed. What was written is removed. */
export class UploadTooLargeError extends CelerityError {
  readonly code = 'payload_too_large';
  override readonly httpStatus = 413;
  declare readonly details: UploadErrorDetails;

  constructor(field: string, limitBytes: number) {
    super(`${field}: larger than the limit of ${limitBytes} bytes`, details(field, `larger than the limit of ${limitBytes} bytes`, { limit_bytes: limitBytes }));
  }
}

/**
 * The file's type is not one the task accepts, or its bytes are not what its
 * header claims (a "PDF" that is an executable, a "CSV" that is a zip).
 */
export class UnsupportedUploadTypeError extends CelerityError {
  readonly code = 'unsupported_media_type';
  override readonly httpStatus = 415;
  declare readonly details: UploadErrorDetails & { declared: string | null; detected: string | null; accepts: readonly string[] };

  constructor(message: string, info: { declared: string | null; detected: string | null; accepts: readonly string[] }) {
    super(`file: ${message}`, details('file', message, { declared: info.declared, detected: info.detected, accepts: [...info.accepts] }));
  }
}

/** The task exists but declares no `accepts`, so it takes no uploads. */
export class UploadsNotAcceptedError extends CelerityError {
  readonly code = 'uploads_not_accepted';
  override readonly httpStatus = 422;
  declare readonly details: UploadErrorDetails & { task: string };

  constructor(task: string) {
    super(`task: task "${task}" takes no uploads (it declares no accepted content types)`, details('task', 'takes no uploads', { task }));
  }
}
