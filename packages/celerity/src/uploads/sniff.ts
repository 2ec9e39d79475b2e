/**
 * Decides an upload's content type from its header AND its bytes. A header is
 * whatever the client says; the bytes are what a task will parse. A type is
 * accepted only when both agree and the task lists it.
 */
import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileTypeFromFile } from 'file-type';
import { UnsupportedUploadTypeError } from './errors.ts';

/** Types recognised by being text, since they have no magic bytes. */
export const TEXT_TYPES: ReadonlySet<string> = new Set(['text/csv', 'text/plain', 'application/json']);

// Bytes read to decide "is this text". Enough for a header row and a few lines.
const TEXT_SAMPLE_BYTES = 64 * 1024;

// Names clients use for the same type, mapped to the one tasks list.
const ALIASES: Record<string, string> = {
  'image/jpg': 'image/jpeg',
  'image/pjpeg': 'image/jpeg',
  'application/x-pdf': 'application/pdf',
  'application/x-zip-compressed': 'application/zip',
  'text/x-csv': 'text/csv',
  'application/csv': 'text/csv',
  'text/comma-separated-values': 'text/csv',
  'text/json': 'application/json',
};

// Declared types whose bytes file-type may only know by their container.
const CONTAINERS: Record<string, string> = {
  'application/vnd.ms-excel': 'application/x-cfb',
  'application/msword': 'application/x-cfb',
  'application/vnd.ms-powerpoint': 'application/x-cfb',
};

// Text extensions, for a text file sent as application/octet-stream.
const TEXT_EXTENSIONS: Record<string, string> = { '.csv': 'text/csv', '.txt': 'text/plain', '.json': 'application/json' };

/** `text/CSV; charset=utf-8` → `text/csv`; an alias → its usual name. */
export function normalizeContentType(header: string | undefined | null): string | null {
  const bare = (header ?? '').split(';')[0]!.trim().toLowerCase();
  if (!bare) return null;
  return ALIASES[bare] ?? bare;
}

/**
 * True when `sample` looks like text: valid UTF-8 (a character cut at the
 * end of the sample is fine) without NUL bytes. UTF-16 fails on purpose:
 * tasks read text as UTF-8.
 */
export function looksLikeText(sample: Uint8Array): boolean {
  if (sample.includes(0)) return false;
  try {
    // stream: true keeps a trailing partial character instead of failing on it.
    new TextDecoder('utf-8', { fatal: true }).decode(sample, { stream: true });
    return true;
  } catch {
    return false;
  }
}

async function readSample(path: string, bytes: number): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** What the bytes of a file are: a magic-bytes type, text, or neither. */
export interface Sniffed {
  /** The type file-type found from magic bytes, if any. */
  detected: string | null;
  /** No binary signature, no NUL, valid UTF-8 in the first 64 KiB. */
  text: boolean;
}

/** Reads the head of a stored file: file-type's magic bytes, then the text check. */
export async function sniffFile(path: string): Promise<Sniffed> {
  const found = await fileTypeFromFile(path);
  // file-type also knows a few text formats by their opening (XML, vCard...):
  // those are text, not a binary signature.
  const textual = found && (found.mime.startsWith('text/') || found.mime === 'application/xml');
  if (found && !textual) return { detected: found.mime, text: false };
  return { detected: found?.mime ?? null, text: looksLikeText(await readSample(path, TEXT_SAMPLE_BYTES)) };
}

/**
 * The content type a declared header resolves to, before looking at bytes.
 * Used to refuse a type the task does not take before storing anything.
 * `application/vnd.ms-excel` is what browsers send for `.csv`; it counts as
 * `text/csv` for a task that takes CSV (the bytes must then be text).
 */
export function declaredCandidates(declared: string | null, accepts: readonly string[], filename: string): string[] {
  if (declared === null || declared === 'application/octet-stream') {
    // No claim: the bytes decide; a text file is typed by its extension.
    return [...accepts];
  }
  const out = [declared];
  if (declared === 'application/vnd.ms-excel' && accepts.includes('text/csv')) out.push('text/csv');
  if (declared === 'text/plain' && accepts.includes('text/csv') && extname(filename).toLowerCase() === '.csv') out.push('text/csv');
  return out.filter((t) => accepts.includes(t));
}

/**
 * Checks a stored file against its declared type and the task's `accepts`,
 * returning the content type to put in the handle. Throws
 * {@link UnsupportedUploadTypeError} (415, field `file`) when the task does
 * not take the type, or when the bytes contradict the header.
 */
export async function checkContentType(path: string, declaredHeader: string | undefined | null, accepts: readonly string[], filename: string): Promise<string> {
  const declared = normalizeContentType(declaredHeader);
  const refuse = (message: string, detected: string | null) => new UnsupportedUploadTypeError(message, { declared, detected, accepts });
  const candidates = declaredCandidates(declared, accepts, filename);
  if (candidates.length === 0) throw refuse(`type ${declared} is not accepted (accepted: ${accepts.join(', ')})`, null);

  const sniffed = await sniffFile(path);
  const generic = declared === null || declared === 'application/octet-stream';
  for (const candidate of candidates) {
    if (TEXT_TYPES.has(candidate)) {
      if (!sniffed.text) continue;
      // A generic claim on text: the extension says which text it is.
      if (generic && TEXT_EXTENSIONS[extname(filename).toLowerCase()] !== candidate && candidate !== 'text/plain') continue;
      return candidate;
    }
    if (sniffed.detected && (sniffed.detected === candidate || CONTAINERS[candidate] === sniffed.detected)) return candidate;
  }
  const what = sniffed.detected ?? (sniffed.text ? 'text' : 'unrecognised binary data');
  const message = generic ? `content is ${what}, which is not an accepted type (accepted: ${accepts.join(', ')})` : `declared as ${declared} but the content is ${what}`;
  throw refuse(message, sniffed.detected);
}
