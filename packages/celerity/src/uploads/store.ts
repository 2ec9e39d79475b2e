/**
 * Where uploaded files live between `POST /v1/uploads` and the end of their
 * job: `<uploadDir>/<upload_id>/<safe name>`, one directory per upload so
 * that releasing an upload is one recursive removal, and so that a file name
 * can never collide with another upload's.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { basename, join, resolve, sep } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { newJobId } from '../ids.ts';
import { NonRetryableError } from '../errors.ts';
import { InvalidFilenameError, UploadTooLargeError } from './errors.ts';
import type { UploadRef } from './upload-ref.ts';

/** Longest stored file name in UTF-8 bytes; file systems allow 255, we keep room. */
export const MAX_FILENAME_BYTES = 200;

// Upload ids are our own ids (newJobId); anything else in a job's input, or in
// the upload directory, is not ours to remove.
const UPLOAD_ID = /^[0-9a-z]{26}$/;

// Names Windows refuses whatever the extension; harmless elsewhere, but a
// share mounted from Windows would choke on them.
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;

/**
 * Returns a file name safe to store, from the name the client sent.
 *
 * Refused ({@link InvalidFilenameError}): empty names, NUL bytes, and any
 * path (a `/` or `\`, so `../../etc/passwd`, `/etc/passwd` and
 * `C:\x\y.csv`), or `.`/`..`: a client that sends a path is either broken or
 * probing, and guessing which part it meant is how traversals slip through.
 * Replaced: control and bidi-override characters and characters Windows
 * forbids (by `_`). Leading dots (hidden files) and trailing dots and spaces
 * are dropped; the name is capped at {@link MAX_FILENAME_BYTES} bytes,
 * keeping its extension.
 */
export function sanitizeFilename(name: string): string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidFilenameError('the file part has no file name');
  if (name.includes('\0')) throw new InvalidFilenameError('it contains a NUL byte');
  if (/[/\\]/.test(name)) throw new InvalidFilenameError('it must be a plain file name, without directories');
  if (/^[a-zA-Z]:/.test(name)) throw new InvalidFilenameError('it must not be an absolute path');
  if (name === '.' || name === '..') throw new InvalidFilenameError('it must not be "." or ".."');
  let safe = name
    .normalize('NFC')
    // C0/C1 controls, bidi overrides and isolates (they disguise extensions:
    // "invoice\u202Efdp.exe"), and characters Windows file systems refuse.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
    .replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069<>:"|?*]/g, '_')
    .replace(/^[.\s]+/, '')
    .replace(/[.\s]+$/, '');
  if (safe.length === 0) throw new InvalidFilenameError('it has no usable characters');
  if (WINDOWS_RESERVED.test(safe)) safe = `_${safe}`;
  return capBytes(safe, MAX_FILENAME_BYTES);
}

/** Shortens a name to `max` UTF-8 bytes, keeping a short extension and never splitting a character. */
function capBytes(name: string, max: number): string {
  if (Buffer.byteLength(name) <= max) return name;
  const dot = name.lastIndexOf('.');
  const ext = dot > 0 && name.length - dot <= 16 ? name.slice(dot) : '';
  const budget = max - Buffer.byteLength(ext);
  let stem = '';
  let used = 0;
  for (const ch of name.slice(0, name.length - ext.length)) {
    const n = Buffer.byteLength(ch);
    if (used + n > budget) break;
    stem += ch;
    used += n;
  }
  return stem + ext;
}

/** A file written by {@link saveUpload}; the content type is filled in once checked. */
export type SavedUpload = Omit<UploadRef, 'content_type'> & {
  /** SHA-256 of the content, hex: identifies the same file sent again. */
  sha256: string;
};

/**
 * Streams `source` to `<uploadDir>/<new upload_id>/<filename>` without
 * buffering it, counting bytes. More than `maxBytes` (counted here, or
 * reported by busboy's own limit through the stream's `truncated` flag)
 * throws {@link UploadTooLargeError}; any failure removes what was written.
 * The content is hashed on the way.
 * `filename` must already be sanitised.
 */
export async function saveUpload(uploadDir: string, source: Readable & { truncated?: boolean }, opts: { filename: string; maxBytes: number }): Promise<SavedUpload> {
  const root = resolve(uploadDir);
  const uploadId = newJobId();
  const dir = join(root, uploadId);
  const path = join(dir, opts.filename);
  // The file name was sanitised; this catches a caller that forgot.
  if (basename(path) !== opts.filename) throw new InvalidFilenameError('it must be a plain file name, without directories');
  let size = 0;
  let truncated = false;
  source.once('limit', () => (truncated = true));
  const hash = createHash('sha256');
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      hash.update(chunk);
      if (size > opts.maxBytes) done(new UploadTooLargeError('file', opts.maxBytes));
      else done(null, chunk);
    },
  });
  try {
    await mkdir(root, { recursive: true, mode: 0o750 });
    await mkdir(dir, { mode: 0o750 });
    // 'wx': the directory is new, so an existing file would mean someone else put it there.
    await pipeline(source, counter, createWriteStream(path, { flags: 'wx', mode: 0o640 }));
    if (truncated || source.truncated) throw new UploadTooLargeError('file', opts.maxBytes);
  } catch (err) {
    // Busboy keeps parsing the request; an unread file stream would stall it.
    source.resume();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return { upload_id: uploadId, path, filename: opts.filename, size, sha256: hash.digest('hex') };
}

/**
 * Removes an upload: `<uploadDir>/<upload_id>` and everything in it.
 * Idempotent (an upload already gone is fine). Refuses, returning false, any
 * id that is not one of ours, so a forged handle in a job's input cannot
 * make a worker delete anything outside the upload directory. Only the
 * `upload_id` of a handle is used, never its `path`, for the same reason.
 * Returns true when the directory is gone (removed now or before).
 */
export async function releaseUpload(uploadDir: string, ref: Pick<UploadRef, 'upload_id'> | string): Promise<boolean> {
  const id = typeof ref === 'string' ? ref : ref?.upload_id;
  if (typeof id !== 'string' || !UPLOAD_ID.test(id)) return false;
  const root = resolve(uploadDir);
  const dir = resolve(root, id);
  if (!dir.startsWith(root + sep) || dir === root) return false;
  await rm(dir, { recursive: true, force: true });
  return true;
}

/** A job's input names an upload file that is not where Celerity put it. */
export class InvalidUploadHandleError extends NonRetryableError {
  override readonly code = 'invalid_upload_handle';
}

/**
 * Checks the upload handle in a job's input (`input.file`) before the task
 * sees it: its path must be `<uploadDir>/<upload_id>/<filename>`. Anyone who
 * can submit a job could otherwise hand a task any path on the worker's disk
 * (`{"file": {"path": "/etc/passwd"}}` through POST /v1/jobs). Upload ids are
 * random, so a valid handle is one the API gave out.
 */
export function assertUploadHandle(uploadDir: string | undefined, input: unknown): void {
  if (!input || typeof input !== 'object') return;
  const file = (input as { file?: unknown }).file;
  if (!file || typeof file !== 'object' || !('path' in file || 'upload_id' in file)) return;
  if (!uploadDir) throw new InvalidUploadHandleError('input.file is an upload handle, but this worker has no upload directory');
  const { upload_id: id, path, filename } = file as Partial<UploadRef>;
  if (typeof id !== 'string' || !UPLOAD_ID.test(id) || typeof path !== 'string' || typeof filename !== 'string' || basename(filename) !== filename) {
    throw new InvalidUploadHandleError('input.file is not an upload handle given out by POST /v1/uploads');
  }
  if (resolve(path) !== join(resolve(uploadDir), id, filename)) {
    throw new InvalidUploadHandleError(`input.file.path is not the upload's place in the upload directory (${uploadDir})`);
  }
}

/**
 * The upload a job's input carries (`input.file`), if its handle is genuine
 * (see {@link assertUploadHandle}): lets the worker and cancel release an
 * upload without knowing the task, and never on the word of a forged handle.
 */
export function uploadIdOf(uploadDir: string, input: unknown): string | undefined {
  if (!input || typeof input !== 'object') return undefined;
  const file = (input as { file?: unknown }).file;
  if (!file || typeof file !== 'object') return undefined;
  try {
    assertUploadHandle(uploadDir, input);
  } catch {
    return undefined;
  }
  return (file as UploadRef).upload_id;
}

/**
 * Removes orphan uploads: upload directories whose mtime is older than
 * `ttlMs` (their job was lost, or the process died between storing and
 * enqueueing). A directory's mtime is when its file was created, so the TTL
 * must exceed the longest a job may wait and run. Only directories named like
 * an upload id are touched. Returns how many were removed.
 */
export async function sweepUploads(uploadDir: string, ttlMs: number, now: number = Date.now(), logger?: Pick<Logger, 'info' | 'warn'>): Promise<number> {
  const root = resolve(uploadDir);
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let removed = 0;
  for (const entry of entries) {
    if (!entry.isDirectory() || !UPLOAD_ID.test(entry.name)) continue;
    const dir = join(root, entry.name);
    try {
      const { mtimeMs } = await stat(dir);
      if (now - mtimeMs <= ttlMs) continue;
      await rm(dir, { recursive: true, force: true });
      removed++;
    } catch (err) {
      // Released by a worker meanwhile: nothing to do. Anything else must not stop the sweep.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger?.warn({ err, dir }, 'could not remove an orphan upload');
    }
  }
  if (removed > 0) logger?.info({ removed, upload_dir: root }, 'removed orphan uploads');
  return removed;
}
