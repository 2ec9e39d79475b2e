import { TERMINAL_STATUSES, type JobStatus } from '../../job-record.ts';

/** The `event:` of an SSE message: a job status, `progress`, or `deleted` (the job was deleted: it has no status any more). */
export type JobEventType = JobStatus | 'progress' | 'deleted';

export const JOB_EVENT_TYPES: readonly JobEventType[] = ['queued', 'started', 'progress', 'retrying', 'completed', 'failed', 'cancelled', 'deleted'];

/**
 * What the feed remembers of a job between its events, to name them as the
 * job's status would: a `waiting` after an attempt started is `retrying`,
 * and BullMQ's repeated announcements (`added` then `waiting`, `delayed`
 * then `waiting`) are one `queued`.
 */
export interface JobEventState {
  /** Attempts started so far (BullMQ's `ats` when the job was first seen, then one per `active`). */
  attempts: number;
  /** The last status announced (or `deleted`); null before any. */
  last: JobStatus | 'deleted' | null;
}

/** One message of the feed before it is addressed to anyone. */
export interface Labelled {
  type: JobEventType;
  attempt?: number;
  progress?: unknown;
}

/** BullMQ stream events that announce a job waiting for a run (the first, or another after an attempt). */
const WAITING = new Set(['added', 'waiting', 'delayed', 'prioritized', 'waiting-children']);

/** BullMQ events the feed turns into messages; the others (drained, stalled, retries-exhausted...) say nothing new of a job. */
export const FEED_EVENTS: ReadonlySet<string> = new Set([...WAITING, 'active', 'progress', 'completed', 'failed', 'removed']);

/**
 * Names one BullMQ stream event of a job, updating its state; null when the
 * event repeats what the job's last message said. `cancelled` (the job's
 * cancel marker exists) tells a `failed` event of a cancelled job from a
 * failure, and a `removed` event of a cancel from a delete.
 */
export function labelEvent(event: string, fields: Record<string, string>, state: JobEventState, cancelled: boolean): Labelled | null {
  let type: JobEventType;
  if (WAITING.has(event)) type = state.attempts > 0 ? 'retrying' : 'queued';
  else if (event === 'active') {
    state.attempts++;
    state.last = 'started';
    return { type: 'started', attempt: state.attempts };
  } else if (event === 'progress') return { type: 'progress', progress: parseProgress(fields.data), ...(state.attempts > 0 ? { attempt: state.attempts } : {}) };
  else if (event === 'completed') type = 'completed';
  else if (event === 'failed') type = cancelled ? 'cancelled' : 'failed';
  // BullMQ says `removed` only for an explicit removal (its retention and
  // `clean` say nothing), which Celerity makes to cancel a waiting job
  // (client/cancel.ts writes the cancel marker BEFORE removing the job, so
  // the marker is there when the event is read) or to delete a job
  // (client/job-actions.ts writes no marker; it removes one a cancel left).
  // A finished job cannot be cancelled: its removal is a delete whatever the
  // marker. (The next tick of a schedule the app no longer declares is
  // removed with its scheduler, without a marker: `deleted` too.)
  else if (event === 'removed') {
    const finished = state.last !== null && state.last !== 'deleted' && TERMINAL_STATUSES.has(state.last);
    type = cancelled && !finished ? 'cancelled' : 'deleted';
  } else return null;
  if (state.last === type) return null;
  state.last = type;
  return state.attempts > 0 ? { type, attempt: state.attempts } : { type };
}

function parseProgress(data: string | undefined): unknown {
  if (data === undefined) return null;
  try {
    return JSON.parse(data) as unknown;
  } catch {
    return data;
  }
}

/**
 * A job's attempts before the first of its events in hand: BullMQ's `ats`
 * counts every attempt started so far, including those the events in hand
 * will announce.
 */
export function attemptsBefore(ats: number, activesInHand: number): number {
  return Math.max(0, ats - activesInHand);
}
