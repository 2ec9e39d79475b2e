import { CelerityError, type FieldIssue } from '../../errors.ts';

/**
 * A position in the event feed: for each queue, the id of the last entry of
 * its BullMQ event stream that was taken into account. The streams are per
 * queue, so one id cannot say where a client is; the SSE `id:` carries all
 * of them, as `<queue>@<stream id>` joined by `;`. Queue names hold only
 * letters, digits, `_`, `.` and `-` (assertQueueName), and stream ids are
 * `<ms>-<seq>`, so neither separator can occur inside a part.
 */
export type Position = ReadonlyMap<string, string>;

/** Longest position a client may send back (a few hundred queues). */
export const MAX_POSITION_LENGTH = 8_192;

const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;
const PART = /^([A-Za-z0-9_.-]{1,200})@(\d{1,20}-\d{1,20})$/;

/** A `Last-Event-ID` (or `last_event_id`) that is not a position this API made. */
export class InvalidEventIdError extends CelerityError {
  readonly code = 'invalid_request';
  override readonly httpStatus = 400;
  declare readonly details: { issues: FieldIssue[] };

  /** `path` names where it came from: `headers.last-event-id` or `querystring.last_event_id`. */
  constructor(path: string, message: string) {
    super(`Invalid request: ${path} ${message}`, { issues: [{ path, message }] });
  }
}

export function encodePosition(position: Position): string {
  let out = '';
  for (const [queue, id] of position) out += out === '' ? `${queue}@${id}` : `;${queue}@${id}`;
  return out;
}

/** Parses a position sent back by a client; throws {@link InvalidEventIdError} naming `path`. */
export function parsePosition(text: string, path: string): Map<string, string> {
  if (text.length === 0) throw new InvalidEventIdError(path, 'is empty');
  if (text.length > MAX_POSITION_LENGTH) throw new InvalidEventIdError(path, `is longer than ${MAX_POSITION_LENGTH} characters`);
  const position = new Map<string, string>();
  for (const part of text.split(';')) {
    const match = PART.exec(part);
    if (!match) throw new InvalidEventIdError(path, 'must be the id of an event of this API (`<queue>@<stream id>;...`)');
    const [, queue, id] = match as unknown as [string, string, string];
    if (!isSafeStreamId(id)) throw new InvalidEventIdError(path, `holds a stream id out of range: ${id}`);
    if (position.has(queue)) throw new InvalidEventIdError(path, `names the queue "${queue}" twice`);
    position.set(queue, id);
  }
  return position;
}

function isSafeStreamId(id: string): boolean {
  const match = STREAM_ID.exec(id);
  if (!match) return false;
  // Redis stream ids are two unsigned 64-bit numbers.
  return BigInt(match[1]!) < 2n ** 64n && BigInt(match[2]!) < 2n ** 64n;
}

/** Orders two stream ids (`<ms>-<seq>`) as Redis does. */
export function compareStreamIds(a: string, b: string): number {
  if (a === b) return 0;
  const da = a.indexOf('-');
  const db = b.indexOf('-');
  const c = compareDigits(a.slice(0, da), b.slice(0, db));
  return c !== 0 ? c : compareDigits(a.slice(da + 1), b.slice(db + 1));
}

function compareDigits(a: string, b: string): number {
  // Decimal strings without sign; leading zeros are stripped so that length orders them.
  const x = a.replace(/^0+(?=\d)/, '');
  const y = b.replace(/^0+(?=\d)/, '');
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The time part of a stream id: when Redis appended the entry (its clock, epoch ms). */
export function streamIdTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}
