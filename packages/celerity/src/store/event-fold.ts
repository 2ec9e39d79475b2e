import type { JobStatus } from '../job-record.ts';

/** One entry of a BullMQ queue event stream, as the recorder reads it. */
export interface StreamEvent {
  /** Stream entry id, `ms-seq`. */
  id: string;
  event: string;
  jobId: string | undefined;
  fields: Record<string, string>;
}

/** What a batch of events says about one job. */
export interface JobFold {
  jobId: string;
  /** Status implied by the last status-bearing event; null if only progress moved. */
  status: JobStatus | null;
  /** Whether `status` depends on attempts already made (`delayed` and `waiting` events). */
  statusNeedsAttempts: boolean;
  /** Position of the last event of this job in the batch. */
  seq: string;
  /** `returnvalue` carried by a `completed` event, for jobs Redis has already dropped. */
  returnvalue?: string;
  failedReason?: string;
  /** `attemptsMade` of a `retries-exhausted` event (it follows a final `failed`), for jobs Redis has already dropped. */
  attemptsMade?: number;
  /**
   * True when the batch shows only the happy path: the add (see
   * {@link fromAdd}), a delayed job made runnable (`waiting` from `delayed`)
   * before it starts, at most one `active`, at most one `completed`, and
   * progress. Such a job's row can be moved forward from the events alone,
   * without reading its hash.
   */
  happy: boolean;
  /** Times (Redis clock, from the stream ids) of the `active` and `completed` events. */
  activeAt?: number;
  completedAt?: number;
  /** The last `progress` event's snapshot, as JSON text. */
  progressData?: string;
  /**
   * True when the batch holds the job's `added` event, always a job's first:
   * the batch then holds the job's whole story, and its row may not exist
   * unless the producer handed it over (`Recorder.noteAdded`).
   */
  fromAdd: boolean;
  /**
   * True when the batch holds the job's `added` event and nothing after it
   * but the `waiting` event of the same add (BullMQ's add scripts append it
   * with no `prev`): the job is as its producer left it.
   */
  justAdded: boolean;
}

/**
 * Stream ids are `ms-seq`; padding both parts makes them compare as strings
 * in SQL exactly as Redis orders them.
 */
export function padStreamId(id: string): string {
  const dash = id.indexOf('-');
  const ms = dash < 0 ? id : id.slice(0, dash);
  const seq = dash < 0 ? '0' : id.slice(dash + 1);
  return `${(ms || '0').padStart(15, '0')}-${(seq || '0').padStart(10, '0')}`;
}

export function parseEntry(id: string, raw: string[]): StreamEvent {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) fields[raw[i]!] = raw[i + 1]!;
  return { id, event: fields.event ?? '', jobId: fields.jobId, fields };
}

// BullMQ event → Celerity status. `delayed` and `waiting` mean "queued" on the
// way in and "retrying" after a failed attempt; the job's attempt count decides.
const STATUS_OF: Record<string, JobStatus | 'queued-or-retrying'> = {
  added: 'queued',
  waiting: 'queued-or-retrying',
  delayed: 'queued-or-retrying',
  prioritized: 'queued-or-retrying',
  active: 'started',
  completed: 'completed',
  failed: 'failed',
  // Celerity removes a job from its queue only to cancel it (see client/cancel.ts).
  removed: 'cancelled',
};

/**
 * Folds a batch of events, in stream order, into one change per job. Events
 * that say nothing about a job's record (drained, paused, stalled...) are
 * dropped; stalled jobs announce themselves again with `waiting`.
 */
export function foldEvents(events: StreamEvent[]): Map<string, JobFold> {
  const folds = new Map<string, JobFold>();
  for (const e of events) {
    if (!e.jobId) continue;
    if (e.event === 'retries-exhausted') {
      // Says nothing the job hash does not, but outlives it: kept for a job
      // whose hash is gone before the recorder reads it.
      const fold = folds.get(e.jobId);
      const made = Number(e.fields.attemptsMade);
      if (fold && Number.isSafeInteger(made) && made > 0) fold.attemptsMade = made;
      continue;
    }
    const mapped = STATUS_OF[e.event];
    if (!mapped && e.event !== 'progress') continue;
    let fold = folds.get(e.jobId);
    let addStep: boolean;
    if (!fold) {
      addStep = e.event === 'added';
      fold = { jobId: e.jobId, status: null, statusNeedsAttempts: false, seq: '', happy: true, fromAdd: addStep, justAdded: addStep };
      folds.set(e.jobId, fold);
    } else {
      addStep = fold.justAdded && e.event === 'waiting' && e.fields.prev === undefined;
      if (!addStep) fold.justAdded = false;
    }
    // Padded once per job, below: only its last event's position is kept.
    fold.seq = e.id;
    const at = Number(e.id.slice(0, e.id.indexOf('-')));
    if (e.event === 'progress') fold.progressData = e.fields.data;
    else if (e.event === 'active' && fold.activeAt === undefined && fold.completedAt === undefined) fold.activeAt = at;
    else if (e.event === 'completed' && fold.completedAt === undefined) fold.completedAt = at;
    // A delayed job made runnable before its start (the fair stage's promote,
    // or a delay running out) leaves its row queued: still the happy path.
    // The recorder's `ats` = 1 check rules out a retry's return from delay.
    else if (e.event === 'waiting' && e.fields.prev === 'delayed' && fold.activeAt === undefined && fold.completedAt === undefined) {
      // nothing to record
    } else if (addStep) {
      // The add itself: the happy path still holds if the producer's row is
      // in the recorder's hand (it checks `fromAdd` against the rows handed to it).
    } else fold.happy = false;
    if (!mapped) continue;
    if (mapped === 'queued-or-retrying') {
      fold.status = 'queued';
      // The add's own `waiting` says the job is new: queued, even when its
      // hash, read late (a backlog caught up), already counts its attempts.
      // Read as `retrying`, a job that ran and completed in the meantime was
      // written with an interrupted attempt, which its start and end, read
      // next, could not move forward without a second read of its hash.
      fold.statusNeedsAttempts = !addStep;
    } else {
      fold.status = mapped;
      fold.statusNeedsAttempts = false;
    }
    if (e.event === 'completed' && e.fields.returnvalue !== undefined) fold.returnvalue = e.fields.returnvalue;
    if (e.event === 'failed' && e.fields.failedReason !== undefined) fold.failedReason = e.fields.failedReason;
  }
  for (const fold of folds.values()) fold.seq = padStreamId(fold.seq);
  return folds;
}
