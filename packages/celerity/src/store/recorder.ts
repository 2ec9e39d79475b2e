import { hostname } from 'node:os';
import type { Job, Queue } from 'bullmq';
import type { RedisClient } from '../broker/connection.ts';
import type { Logger } from 'pino';
import { attemptHistory, recordFromJob, statusFromState, TERMINAL_STATUSES, type AttemptRecord, type JobFacts, type JobRecord } from '../job-record.ts';
import { keepJobLogs } from './job-logs.ts';
import { foldEvents, padStreamId, parseEntry, type JobFold, type StreamEvent } from './event-fold.ts';
import { toRow, type JobStore, type RecordedState } from './job-store.ts';
import type { JobsTable } from './db.ts';
import type { HappyUpdate } from './batch-upsert.ts';
import { keys, type CancelMarker } from '../broker/keys.ts';
import { readHashes, readJobFactsAt } from '../broker/job-hashes.ts';
import { writeIsolating, type IsolationOutcome } from './isolate.ts';
import { classifyWriteError } from './write-errors.ts';
import { historyLagMs } from './history-lag.ts';
import { ATTEMPT_FIELDS, type AttemptFacts, attemptFactsOf, type Batch, RECORDER_GROUP, readBatch, type StreamEntries, waitForEntries } from './recorder-read.ts';
import { foldJobMetrics, METRICS_FOLD_EVERY_MS, VACUUM_PENDING_EVERY_ENTRIES, vacuumPendingMetrics } from './job-metrics.ts';

/**
 * The recorder keeps the SQL history in step with Redis without putting SQL
 * on the hot path.
 *
 * Its write-ahead log is BullMQ's own per-queue event stream: every state
 * change BullMQ makes (added, active, completed, failed, delayed...) is
 * appended to `<prefix>:<queue>:events` by the same Lua script that makes the
 * change, so an event exists if and only if the change happened. Enqueue and
 * the worker loop therefore pay nothing extra for the history.
 *
 * The recorder reads those streams through a Redis consumer group, folds a
 * batch into one change per job, reads the jobs' hashes for the data the
 * events do not carry, writes everything in one SQL transaction, and only
 * then acknowledges the entries. Hence:
 * - a recorder that crashes mid-batch leaves its entries pending in the
 *   group; any recorder claims them after `claimIdleMs` and writes them again
 *   (writes are idempotent: a row only moves forward in event order);
 * - a recorder that stops finishes its batch first;
 * - several recorders (one per worker and API process) share the work.
 * Acknowledged entries are trimmed from the stream; BullMQ's own length cap
 * (`eventsMaxLen`) is only a safety net for when no recorder runs. Should it
 * ever drop entries the group had not read, the recorder notices (Redis
 * records the largest deleted id) and reconciles that queue from Redis.
 */
export interface RecorderOptions {
  /** Dedicated connection: the recorder blocks on it. */
  redis: RedisClient;
  /** Key prefix, for Celerity's own keys (cancel markers). */
  prefix: string;
  store: JobStore;
  /** BullMQ queues whose streams to record. */
  queues: Queue[];
  logger: Logger;
  batchSize: number;
  /** Block time of one read; also the longest a stop waits for the read to return. */
  blockMs?: number;
  /** Pending entries idle this long are taken over from a recorder presumed dead. */
  claimIdleMs?: number;
  /** How often acknowledged entries are trimmed and the streams checked for gaps. */
  maintenanceMs?: number;
  /** Pause after a short batch, so that the next one gathers more events per job. */
  lingerMs?: number;
  /** PostgreSQL: entries recorded between two vacuums of the metrics' pending table (default {@link VACUUM_PENDING_EVERY_ENTRIES}). */
  vacuumEveryEntries?: number;
  /** Counters shared by the app's recorders, for its metrics; a private one by default. */
  stats?: RecorderStats;
  /**
   * Whether this process is busy with its own jobs. While it is, the
   * recorder leaves the streams to the group's other recorders for as long
   * as they keep up, looking every `yieldMs` (see {@link Recorder.yieldToIdle}).
   */
  busy?: () => boolean;
  /** How long a busy process's recorder leaves the streams to others before it looks whether they keep up; when they do not, it reads and catches up. */
  yieldMs?: number;
}

/**
 * What went wrong while recording, counted since the process started (the
 * app's metrics export them). Monotonic, shared by an app's recorders.
 */
export interface RecorderStats {
  /** Batches that could not be written and were left pending, to be retried whole. */
  failedBatches: number;
  /** Batches the store refused, split until the rows at fault were alone. */
  isolatedBatches: number;
  /** Rows the store refused, written in minimal form (`UnrecordableRow`). */
  minimalRows: number;
  /** Rows refused even in minimal form, or refused progress snapshots: not recorded. */
  droppedRows: number;
}

export function newRecorderStats(): RecorderStats {
  return { failedBatches: 0, isolatedBatches: 0, minimalRows: 0, droppedRows: 0 };
}

/**
 * A batch that failed this many times in a row for a reason the recorder
 * cannot classify is split to find the rows at fault (a known data error is
 * split at once; an unavailable store is never a reason to split).
 */
const SPLIT_UNKNOWN_AFTER = 2;

/** How often a yielding recorder asks again whether its process is still busy. */
const YIELD_STEP_MS = 50;

export { RECORDER_GROUP };

export class Recorder {
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly consumer = `${hostname()}:${process.pid}:${Math.random().toString(36).slice(2, 8)}`;
  private readonly keys: string[];
  /** Each stream with its queue's job hash key prefix, for {@link readBatch}. */
  private readonly streams: { key: string; jobKeyPrefix: string }[];
  private readonly queueByKey: Map<string, Queue>;
  private lastMaintenance = 0;
  /** When this recorder last folded the job metrics (PostgreSQL). */
  private lastFold = 0;
  /** It wrote a batch since (PostgreSQL): some jobs may wait in the pending table. */
  private unfolded = false;
  /** Entries recorded since this recorder last vacuumed the pending table (PostgreSQL). */
  private sinceVacuum = 0;
  /** After a failed batch, re-read this consumer's own pending entries before new ones. */
  private replayOwn = true;
  /** Entries written so far; tests and benchmarks use it to know the history caught up. */
  recorded = 0;
  /** Jobs whose whole hash was read to write their row (the others were written from their events, or from their producer's hand). */
  hashReads = 0;
  /** Failures in a row of the batch in hand (reset by a batch that goes through). */
  private consecutiveFailures = 0;
  readonly stats: RecorderStats;
  /** Queued rows handed over by this process's producer ({@link noteAdded}), waiting for their jobs' events, by job id, oldest first. */
  private readonly handed = new Map<string, { row: JobsTable; at: number }>();
  private readonly queueNames: Set<string>;
  /** When this recorder began leaving the streams to others; unset while it reads. */
  private yieldingSince: number | undefined;
  /** Its yield ran out: it reads until it has caught up before it may yield again. */
  private catchingUp = false;

  private readonly opts: RecorderOptions;

  constructor(opts: RecorderOptions) {
    this.opts = opts;
    this.stats = opts.stats ?? newRecorderStats();
    this.queueByKey = new Map(opts.queues.map((q) => [q.keys.events!, q]));
    this.keys = [...this.queueByKey.keys()];
    this.streams = opts.queues.map((q) => ({ key: q.keys.events!, jobKeyPrefix: q.toKey('') }));
    this.queueNames = new Set(opts.queues.map((q) => q.name));
  }

  /**
   * Takes the queued row of a job this process has just added, built from
   * the job the producer holds, so that when this recorder gets the job's
   * `added` event it needs no read of the job back from Redis: it writes
   * the row once, as far as the batch's events go (see {@link apply}).
   *
   * Only a shortcut, never the record of the job. The row waits here
   * {@link HANDED_HOLD_MS} at most: a job whose events went to another
   * recorder of the group (a worker's, say) is written by that recorder
   * from the hash, and a row dropped here (stale) or not taken (a full
   * hand) is written from the stream as it always was. The row is not
   * written ahead of its events: another recorder reads its events within
   * milliseconds, before a write ahead would land, so that write was a
   * second write of the same row, in the producer's process (docs/benchmarks.md, run 13).
   */
  noteAdded(job: Job): void {
    // A yielding recorder would not be the one to read this job's events. A
    // full hand takes no more: its oldest rows are the next this recorder
    // reads (the stream is read in order), and the stale go within a second.
    if (!this.running || this.yieldingSince !== undefined || this.handed.size >= MAX_HANDED || !this.queueNames.has(job.queueName)) return;
    const now = Date.now();
    let row: JobsTable;
    try {
      // Serialized now, as BullMQ's add did: the caller may change its input object once the enqueue returns.
      // Its position is the event's, set when it is written.
      row = toRow({ record: recordFromJob(job, job.queueName, 'queued'), eventSeq: '' }, now);
    } catch {
      // The job is in Redis: an enqueue must not fail after it (a toJSON that throws the second time, say). Its events write the row.
      return;
    }
    this.handed.set(job.id!, { row, at: now });
  }

  /** Drops the handed rows whose events did not come to this recorder in time: another recorder of the group writes them. */
  private dropStaleHanded(): void {
    const before = Date.now() - HANDED_HOLD_MS;
    for (const [id, { at }] of this.handed) {
      // Oldest first: the rest are younger.
      if (at > before) break;
      this.handed.delete(id);
    }
  }

  /** Starts recording in the background. Redis being away is not an error: the loop waits for it. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  private async ensureGroups(): Promise<void> {
    for (const key of this.keys) {
      try {
        // From id 0: whatever the stream still holds gets recorded, including
        // events written before any recorder ever ran.
        await this.opts.redis.xgroup('CREATE', key, RECORDER_GROUP, '0', 'MKSTREAM');
      } catch (err) {
        if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
      }
    }
  }

  /**
   * Stops after the batch in hand is written and acknowledged, then flushes:
   * writes every entry the streams hold that no recorder has read yet, so
   * that a process that stops (a worker's graceful shutdown) leaves the
   * history up to date with what it did.
   */
  async stop(): Promise<void> {
    const wasRunning = this.running;
    this.running = false;
    await this.loop;
    this.loop = null;
    if (wasRunning) await this.flush();
    this.handed.clear();
  }

  /**
   * Reads without blocking and writes, until nothing is left: this
   * consumer's own pending entries first (left by a failed batch), then new
   * ones. Bounded by `timeoutMs`; if Redis or SQL is away, what is not
   * written stays in the stream for the next recorder, as always.
   */
  private async flush(timeoutMs = 3_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let from: '0' | '>' = '0';
    try {
      while (Date.now() < deadline) {
        const batch = await readBatch(this.opts.redis, this.streams, RECORDER_GROUP, this.consumer, this.opts.batchSize, from);
        if (batch === null) from = '>';
        else if ('idle' in batch) return;
        else await this.applyReply(batch.streams, batch.facts);
      }
    } catch (err) {
      this.opts.logger.warn({ err }, 'recorder: could not flush on stop; the next recorder will record the rest');
    }
  }

  private async run(): Promise<void> {
    const { redis, logger } = this.opts;
    const blockMs = this.opts.blockMs ?? 500;
    let groupsReady = false;
    while (this.running) {
      try {
        if (!groupsReady) {
          await this.ensureGroups();
          groupsReady = true;
        }
        if (Date.now() - this.lastMaintenance >= (this.opts.maintenanceMs ?? 2_000)) {
          this.lastMaintenance = Date.now();
          await this.claimAbandoned();
          await this.maintain();
        }
        this.dropStaleHanded();
        if (await this.yieldToIdle()) continue;
        const batch = await readBatch(redis, this.streams, RECORDER_GROUP, this.consumer, this.opts.batchSize, this.replayOwn ? '0' : '>');
        if (batch === null) {
          // None of this consumer's own entries left pending: new ones next.
          this.replayOwn = false;
          continue;
        }
        if ('idle' in batch) {
          this.catchingUp = false;
          // Idle: what the last batches appended is added now rather than at the next batch.
          await this.foldMetricsIfDue();
          if (this.running) await waitForEntries(redis, this.keys, batch.idle, blockMs);
          continue;
        }
        await this.applyReply(batch.streams, batch.facts);
        // A short batch means the recorder has caught up. Waiting a moment
        // lets a job's next events (its start, its completion) join the
        // same batch, which then writes its row once instead of per event.
        const read = batch.streams.reduce((n, [, entries]) => n + entries.length, 0);
        if (read < this.opts.batchSize) this.catchingUp = false;
        if (read < this.opts.batchSize && this.running) await sleep(this.opts.lingerMs ?? 50);
      } catch (err) {
        // Redis or SQL is away (or SQL refused the batch for a reason not yet
        // known to be the data's: see writeIsolating). Nothing was
        // acknowledged, so nothing is lost: the entries stay pending and are
        // written once both are back.
        logger.warn({ err }, 'recorder: batch not recorded, will retry');
        this.stats.failedBatches += 1;
        this.consecutiveFailures += 1;
        this.replayOwn = true;
        // The group may be gone with the stream (a flushed Redis); recreate it.
        if (String((err as Error).message).includes('NOGROUP')) groupsReady = false;
        await sleep(1_000);
      }
    }
  }

  /**
   * While this process is busy with its own jobs, its recorder leaves the
   * streams to the group's other recorders (an idle worker's, a `celerity
   * recorder`'s), which take the entries it does not ask for, so that the
   * history's CPU is spent where there is some to spare. Each time `yieldMs`
   * runs out it looks whether the others keep up ({@link othersKeepUp}):
   * if they do, it yields again; if not (no other recorder, or one too slow
   * or stuck), it reads until it has caught up. With no other recorder the
   * history trails by about `yieldMs` more, and is written in larger
   * batches. True when it yielded (slept) instead of reading.
   */
  private async yieldToIdle(): Promise<boolean> {
    // Asked every time, catching up or not: the probe measures from its last call.
    const busy = this.opts.busy?.() ?? false;
    if (this.catchingUp || !busy) {
      this.yieldingSince = undefined;
      return false;
    }
    const now = Date.now();
    this.yieldingSince ??= now;
    const yieldMs = this.opts.yieldMs ?? 1_000;
    if (now - this.yieldingSince >= yieldMs) {
      if (await this.othersKeepUp(yieldMs / 2)) {
        // A busy worker that took its turn every second split the drain's
        // history with the idle recorder: its CPU came off the jobs, and a
        // job's start and end went to two batches (docs/benchmarks.md, run 28).
        this.yieldingSince = Date.now();
      } else {
        this.yieldingSince = undefined;
        this.catchingUp = true;
        return false;
      }
    }
    await sleep(YIELD_STEP_MS);
    return true;
  }

  /**
   * Whether the group's other recorders keep up without this one: on every
   * stream the history's lag ({@link historyLagMs}: the age of the oldest
   * entry not yet acknowledged, undelivered or held by a recorder, on Redis's
   * clock) is under `maxWaitMs`. A stream nobody reads (no other recorder, or
   * every one yielding or stuck) ages at once, and one that gets no entries
   * needs no reader. A question Redis does not answer counts as no: this
   * recorder then reads, as it would have.
   */
  private async othersKeepUp(maxWaitMs: number): Promise<boolean> {
    try {
      for (const key of this.keys) {
        const lag = await historyLagMs(this.opts.redis, key);
        if (lag === null || lag >= maxWaitMs) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  /** Writes a batch's entries, stream by stream, then acknowledges them; `facts`, the happy path's hash fields read with them ({@link readBatch}), if any. */
  private async applyReply(reply: StreamEntries[], facts?: Batch['facts']): Promise<void> {
    // Redis answers an add before it wakes this blocked read, but both
    // replies may reach this process in one turn of the event loop: one turn
    // more lets the producer hand over the job first (noteAdded).
    await new Promise((resolve) => setImmediate(resolve));
    for (const [key, entries] of reply) {
      const queue = this.queueByKey.get(key)!;
      const events = entries.filter(([, raw]) => raw !== null).map(([id, raw]) => parseEntry(id, raw!));
      await this.apply(queue, events, facts?.get(key));
      // A nil body is an entry trimmed after it was delivered and before it
      // was written (Celerity deletes no entry; a stream's length cap can
      // trim a backlog): its change is not in hand, so the queue is rewritten
      // from Redis, as for pending entries trimmed before a claim.
      if (events.length < entries.length) {
        this.opts.logger.error({ stream: key, lost: entries.length - events.length }, 'recorder: events were trimmed before being recorded; reconciling the queue from Redis');
        await this.reconcile(queue);
      }
      // SQLite: the jobs that just ended go from the pending table into the metrics, synchronously, on the batch's connection.
      if (this.opts.store.sqlite) await foldJobMetrics(this.opts.store);
      this.consecutiveFailures = 0;
      if (entries.length > 0) {
        await this.opts.redis.xack(key, RECORDER_GROUP, ...entries.map(([id]) => id));
        this.recorded += entries.length;
        if (!this.opts.store.sqlite) {
          this.unfolded = true;
          this.sinceVacuum += entries.length;
        }
      }
    }
    await this.foldMetricsIfDue();
  }

  /**
   * PostgreSQL: adds the jobs its batches appended to the metrics pending
   * since the last fold (store/job-metrics.ts). Never fails a batch: the
   * batch is written, and what stays pending is added by the next fold,
   * this recorder's, another's, or a reader's.
   */
  private async foldMetricsIfDue(): Promise<void> {
    if (!this.unfolded || Date.now() - this.lastFold < METRICS_FOLD_EVERY_MS) return;
    this.lastFold = Date.now();
    this.unfolded = false;
    try {
      await foldJobMetrics(this.opts.store);
    } catch (err) {
      // Still pending: this recorder tries again a second later, idle or not.
      this.unfolded = true;
      this.opts.logger.warn({ err }, 'recorder: job metrics not folded; the next fold adds them');
      return;
    }
    // After the fold: the rows it just deleted are dead, and go in this vacuum.
    if (this.sinceVacuum < (this.opts.vacuumEveryEntries ?? VACUUM_PENDING_EVERY_ENTRIES)) return;
    this.sinceVacuum = 0;
    try {
      await vacuumPendingMetrics(this.opts.store);
    } catch (err) {
      this.opts.logger.warn({ err }, 'recorder: the job metrics pending table was not vacuumed; the next vacuum is due after as many entries again');
    }
  }

  /**
   * Writes one queue's batch to SQL. Throws if it could not be written and
   * must be retried; rows the store refuses do not make it throw (see
   * {@link writeIsolating}).
   */
  private async apply(queue: Queue, events: StreamEvent[], known?: ReadonlyMap<string, AttemptFacts | null>): Promise<void> {
    let folds = [...foldEvents(events).values()];
    if (folds.length === 0) return;
    // Jobs added in this batch whose producer handed their row to this
    // recorder (noteAdded), to be written here once, as far as the batch's
    // events go. Handed ids are new ids (the producer hands no job of a
    // chosen id), so a handed row is this job's.
    const inHand = new Map<string, JobsTable>();
    for (const f of folds) {
      if (!f.fromAdd) continue;
      const held = this.handed.get(f.jobId);
      if (held) {
        this.handed.delete(f.jobId);
        inHand.set(f.jobId, held.row);
      }
    }
    // The happy path (started, completed) is written from the events and a
    // few small fields of the hash; only jobs whose row or attempt count is
    // not where the events expect need their whole hash. A batch that holds
    // the job's add takes this path only with the job's handed row: else the
    // row may not exist yet.
    const happy = folds.filter((f) => f.happy && (f.activeAt !== undefined || f.completedAt !== undefined) && (!f.fromAdd || inHand.has(f.jobId)));
    if (happy.length > 0) {
      const moved = await this.advance(queue, happy, inHand, known);
      if (moved.size > 0) folds = folds.filter((f) => !moved.has(f.jobId));
      if (folds.length === 0) return;
    }
    // A job the batch knows only as added, whose producer handed its row
    // over, needs no read: its row is the producer's.
    const fresh: JobsTable[] = [];
    for (const f of folds) {
      const row = f.justAdded ? inHand.get(f.jobId) : undefined;
      if (row) fresh.push({ ...row, event_seq: f.seq });
    }
    if (fresh.length > 0 && (await this.writeRows(fresh))) {
      const written = new Set(fresh.map((r) => r.id));
      folds = folds.filter((f) => !written.has(f.jobId));
      if (folds.length === 0) return;
    }
    this.hashReads += folds.length;
    const { jobs, logged } = await readJobs(queue, folds);
    const states: RecordedState[] = [];
    const progressOnly: RecordedState[] = [];
    // Jobs gone from Redis: a job cancelled while queued left its final record
    // in its cancel marker; a job that ended and whose hash went (retention
    // ran out before we got here) is finished from its event; any other keeps
    // the row recorded before.
    const gone = folds.filter((_, i) => !jobs[i]);
    if (gone.length > 0) {
      const markers = await this.opts.redis.mget(...gone.map((f) => keys.cancel(this.opts.prefix, f.jobId)));
      const unmarked: JobFold[] = [];
      markers.forEach((marker, i) => {
        const record = marker ? (JSON.parse(marker) as CancelMarker).record : undefined;
        if (record) states.push({ record, eventSeq: gone[i]!.seq });
        else unmarked.push(gone[i]!);
      });
      for (const fold of unmarked) {
        if (fold.status !== 'failed' && fold.status !== 'completed') continue;
        const row = await this.opts.store.get(fold.jobId);
        const record = row ? finishFromEvent(row, fold) : null;
        if (record) states.push({ record, eventSeq: fold.seq });
      }
    }
    const withLogs: RecordedState[] = [];
    for (let i = 0; i < folds.length; i++) {
      const fold = folds[i]!;
      const job = jobs[i];
      if (!job) continue;
      const record = recordOf(job, queue.name, fold);
      const state = { record, eventSeq: fold.seq };
      (fold.status ? states : progressOnly).push(state);
      // The happy path (one attempt, completed or running) needs no history read.
      if (fold.status && (record.attempts > 1 || (record.status !== 'completed' && record.status !== 'started' && record.status !== 'queued'))) {
        withLogs.push(state);
      }
    }
    const logs = await Promise.all(withLogs.map((s) => queue.getJobLogs(s.record.id)));
    withLogs.forEach((s, i) => (s.record.attemptHistory = attemptHistory(s.record, logs[i]!.logs)));
    await this.write(states, progressOnly);
    // Finished jobs that kept log lines (only their marker is read for the others): the lines go to job_logs.
    const finished = states.filter((s) => TERMINAL_STATUSES.has(s.record.status) && logged.has(s.record.id)).map((s) => s.record.id);
    if (finished.length > 0) await this.keepLogs(queue, finished);
  }

  /**
   * Copies finished jobs' log lines from their BullMQ logs to `job_logs`.
   * Never fails the batch: the lines stay in Redis until the job leaves it.
   */
  private async keepLogs(queue: Queue, ids: string[]): Promise<void> {
    try {
      const logs = await Promise.all(ids.map((id) => queue.getJobLogs(id)));
      await keepJobLogs(
        this.opts.store,
        ids.map((id, i) => ({ id, rows: logs[i]!.logs })),
      );
    } catch (err) {
      this.opts.logger.warn({ err, jobs: ids.length }, 'recorder: job log lines not kept in the history');
    }
  }

  /**
   * Moves happy-path jobs forward from their events; returns the ids that
   * need no full write: those moved, and those whose row another recorder
   * already wrote past these events (a batch that split a job's start from
   * its completion: the full write would be refused as older anyway).
   *
   * Why the attempt count is read: the `event_seq` guard only orders writes,
   * it does not make a write complete. With several recorders, one may hold
   * a job's first attempt (active, failed, retry) while another holds the
   * second attempt's `active` and `completed`. Those events alone look like
   * a first attempt, and the row (still queued, or started by the first
   * attempt) is where a first attempt would find it: applied, the update
   * would record one attempt and no history at the newest position, and the
   * full write of the first attempt would then be refused as older. So the
   * update only applies when the job's own counter says it is the first and
   * only attempt (`ats` = 1, which BullMQ increments on every start and
   * never decrements; the limit gate lowers it only for a start it held
   * back, which ran nothing: src/rate-limits/): then the events in hand are
   * the whole story since the row's state. Anything else gets a full write from the hash. Times come
   * from the hash too, so the row equals what the API reads from Redis.
   */
  private async advance(queue: Queue, happy: JobFold[], inHand: ReadonlyMap<string, JobsTable>, known?: ReadonlyMap<string, AttemptFacts | null>): Promise<Set<string>> {
    // A happy job has an `active` or `completed` entry, so the batch's read took its facts.
    const facts = known ? happy.map((f) => known.get(f.jobId) ?? null) : await readAttemptFacts(queue, happy);
    const now = Date.now();
    const updates: HappyUpdate[] = [];
    // A handed row still in hand is written once, as the update leaves it.
    const finished: JobsTable[] = [];
    happy.forEach((f, i) => {
      const fact = facts[i];
      if (fact?.started !== 1) return;
      const update = happyUpdate(f, fact, now);
      const row = inHand.get(f.jobId);
      if (row) finished.push(advancedRow(row, update));
      else updates.push(update);
    });
    if (updates.length === 0 && finished.length === 0) return new Set();
    try {
      const { settled } = await this.opts.store.advance(updates);
      if (finished.length > 0 && (await this.writeRows(finished))) for (const r of finished) settled.add(r.id);
      // Settled, not only moved: a completion delivered again after a crash
      // between its write and this copy finds its row already completed, and
      // this is the copy's one retry (keeping lines again replaces nothing longer).
      const done = happy.filter((f, i) => facts[i]?.logged && f.completedAt !== undefined && settled.has(f.jobId)).map((f) => f.jobId);
      if (done.length > 0) await this.keepLogs(queue, done);
      return settled;
    } catch (err) {
      // A refused update is retried as a full write, which isolates the row at fault.
      if (classifyWriteError(err) === 'unavailable') throw err;
      this.opts.logger.warn({ err }, 'recorder: happy-path update refused; writing those jobs in full');
      return new Set();
    }
  }

  /**
   * Upserts rows built here (handed rows, as far as their batch's events
   * go). False if the store refused them as data: the jobs then take the
   * full write from their hashes, which isolates the row at fault.
   */
  private async writeRows(rows: JobsTable[]): Promise<boolean> {
    try {
      await this.opts.store.writeRows(rows);
      return true;
    } catch (err) {
      if (classifyWriteError(err) === 'unavailable') throw err;
      this.opts.logger.warn({ err }, 'recorder: handed rows refused; writing those jobs in full');
      return false;
    }
  }

  /** Writes a batch's rows; a row the store refuses is isolated instead of holding the history up. */
  private async write(states: RecordedState[], progressOnly: RecordedState[] = []): Promise<void> {
    // A batch already known to fail for an unclassified reason is split: better
    // one job recorded in minimal form than no history for every later job.
    const splitUnknown = this.consecutiveFailures >= SPLIT_UNKNOWN_AFTER;
    const outcome = await writeIsolating(this.opts.store, states, progressOnly, { splitUnknown });
    this.count(outcome);
  }

  private count(outcome: IsolationOutcome): void {
    if (!outcome.isolated) return;
    this.stats.isolatedBatches += 1;
    this.stats.minimalRows += outcome.minimal.length;
    this.stats.droppedRows += outcome.dropped.length;
    const ids = (list: RecordedState[]) => list.map((s) => s.record.id);
    if (outcome.minimal.length > 0) this.opts.logger.error({ jobIds: ids(outcome.minimal) }, 'recorder: the job store refused these rows; recorded in minimal form (UnrecordableRow)');
    if (outcome.dropped.length > 0) this.opts.logger.error({ jobIds: ids(outcome.dropped) }, 'recorder: the job store refused these rows even in minimal form; not recorded');
  }

  /** Takes over entries left pending by a recorder that died mid-batch. */
  private async claimAbandoned(): Promise<void> {
    const idle = this.opts.claimIdleMs ?? 30_000;
    for (const key of this.keys) {
      let cursor = '0-0';
      do {
        const [next, entries, deleted] = (await this.opts.redis.xautoclaim(key, RECORDER_GROUP, this.consumer, idle, cursor, 'COUNT', this.opts.batchSize)) as [
          string,
          [string, string[]][],
          string[]?,
        ];
        if (entries.length > 0) await this.applyReply([[key, entries]]);
        if (deleted && deleted.length > 0) {
          this.opts.logger.error({ stream: key, lost: deleted.length }, 'recorder: pending events were trimmed before being recorded; reconciling the queue from Redis');
          await this.opts.redis.xack(key, RECORDER_GROUP, ...deleted);
          await this.reconcile(this.queueByKey.get(key)!);
        }
        cursor = next;
      } while (cursor !== '0-0' && this.running);
    }
  }

  /**
   * Trims what the group has acknowledged, and detects entries dropped by the
   * length cap before the group read them (a gap in the history).
   */
  private async maintain(): Promise<void> {
    for (const key of this.keys) {
      const [[, streamInfo], [, groups]] = (await this.opts.redis.multi().xinfo('STREAM', key).xinfo('GROUPS', key).exec()) as [[null, unknown[]], [null, unknown[][]]];
      const stream = pairs(streamInfo);
      const group = groups.map(pairs).find((g) => g.name === RECORDER_GROUP);
      if (!group) continue;
      const lastDelivered = String(group['last-delivered-id']);
      const maxDeleted = String(stream['max-deleted-entry-id'] ?? '0-0');
      // Trimming (XADD MAXLEN, XTRIM) does not move max-deleted-entry-id; only XDEL does.
      const length = Number(stream.length);
      const added = Number(stream['entries-added'] ?? 0);
      const firstId = String(length > 0 ? stream['recorded-first-entry-id'] : stream['last-generated-id']);
      const read = group['entries-read'] == null ? null : Number(group['entries-read']);
      const trimmedUnread = added > length && compareIds(lastDelivered, firstId) < 0 && (read === null || added - length > read);
      if (trimmedUnread) {
        this.opts.logger.error({ stream: key }, 'recorder: events were trimmed before being recorded; reconciling the queue from Redis');
        await this.opts.redis.xgroup('SETID', key, RECORDER_GROUP, lastDelivered, 'ENTRIESREAD', added - length);
        await this.reconcile(this.queueByKey.get(key)!);
        continue;
      }
      if (compareIds(maxDeleted, lastDelivered) > 0) {
        this.opts.logger.error({ stream: key }, 'recorder: events were trimmed before being recorded; reconciling the queue from Redis');
        // Move the group past the gap first so the gap is reported once.
        await this.opts.redis.xgroup('SETID', key, RECORDER_GROUP, maxDeleted);
        await this.reconcile(this.queueByKey.get(key)!);
        continue;
      }
      let minKeep = lastDelivered;
      if (Number(group.pending) > 0) {
        const summary = (await this.opts.redis.xpending(key, RECORDER_GROUP)) as [number, string, string, unknown];
        if (summary[1]) minKeep = summary[1];
      }
      await this.opts.redis.xtrim(key, 'MINID', '~', minKeep);
    }
  }

  /**
   * Rewrites every job Redis still holds for a queue, each at the queue's
   * current stream position, so that SQL agrees with Redis after a gap.
   */
  async reconcile(queue: Queue): Promise<void> {
    const info = pairs((await this.opts.redis.xinfo('STREAM', queue.keys.events!)) as unknown[]);
    const lastId = String(info['last-generated-id'] ?? '0-0');
    const seq = padStreamId(lastId);
    const types = ['completed', 'failed', 'active', 'waiting', 'delayed', 'prioritized', 'waiting-children'] as const;
    for (const type of types) {
      for (let start = 0; ; start += 500) {
        const jobs = await queue.getJobs([type], start, start + 499, true);
        if (jobs.length === 0) break;
        const states = jobs.filter((j): j is Job => Boolean(j)).map((job) => ({ record: recordFromJob(job, queue.name, statusFromState(type, job.attemptsMade)!), eventSeq: seq }));
        await this.write(states);
        if (jobs.length < 500) break;
      }
    }
  }
}

function happyUpdate(f: JobFold, fact: AttemptFacts, now: number): HappyUpdate {
  const started = f.activeAt !== undefined;
  const completed = f.completedAt !== undefined;
  return {
    id: f.jobId,
    seq: f.seq,
    status: completed ? 'completed' : 'started',
    // A first start finds the row queued; a completion alone finds it started,
    // or still queued when another recorder holds the start.
    from: started ? 'queued' : 'queued-or-started',
    // The hash's start time in both cases: a completion alone that finds the row queued writes the start too.
    startedAt: fact.processedOn ?? f.activeAt ?? null,
    finishedAt: completed ? (fact.finishedOn ?? f.completedAt!) : null,
    result: completed ? (f.returnvalue ?? 'null') : null,
    progress: f.progressData ?? null,
    updatedAt: now,
  };
}

async function readAttemptFacts(queue: Queue, folds: readonly JobFold[]): Promise<(AttemptFacts | null)[]> {
  const client = await queue.getBackend().client;
  const facts: (AttemptFacts | null)[] = [];
  for (let i = 0; i < folds.length; i += READ_CHUNK) {
    const chunk = folds.slice(i, i + READ_CHUNK);
    const replies = await readHashes(
      client,
      chunk.map((f) => queue.toKey(f.jobId)),
      ATTEMPT_FIELDS,
    );
    for (const values of replies) facts.push(attemptFactsOf(values));
  }
  return facts;
}

/**
 * The final record of a job that ended (its `completed` or `failed` event in
 * hand) but whose hash Redis dropped before the recorder read it, built from
 * its recorded row and the event: otherwise it would read `started` for ever.
 * The failure's message comes from the event; its type and stack only if the
 * row already had that same error.
 */
function finishFromEvent(row: JobRecord, fold: JobFold): JobRecord | null {
  const finishedAt = Number(fold.seq.slice(0, fold.seq.indexOf('-')));
  const attempts = Math.max(fold.attemptsMade ?? 0, row.attempts, 1);
  let error: JobRecord['error'] = null;
  let result: unknown = null;
  if (fold.status === 'failed') {
    const message = fold.failedReason ?? row.error?.message ?? 'failed';
    error = row.error?.message === message ? row.error : { type: 'Error', message, stack: null };
  } else {
    try {
      result = fold.returnvalue === undefined ? null : JSON.parse(fold.returnvalue);
    } catch {
      result = fold.returnvalue;
    }
  }
  const history: AttemptRecord[] = [...(row.attemptHistory ?? [])].slice(0, attempts);
  while (history.length < attempts) history.push({ attempt: history.length + 1, status: 'interrupted', startedAt: null, finishedAt: null, error: null });
  const last = history[attempts - 1]!;
  history[attempts - 1] = {
    attempt: attempts,
    status: fold.status === 'failed' ? 'failed' : 'completed',
    startedAt: last.startedAt ?? (attempts === row.attempts ? row.startedAt : null),
    finishedAt,
    error: error ? { type: error.type, message: error.message } : null,
  };
  return { ...row, status: fold.status as 'failed' | 'completed', attempts, result, error, finishedAt, attemptHistory: history };
}

/**
 * Reads what the batch's jobs' records are built from, a chunk at a time,
 * one command per chunk (src/broker/job-hashes.ts), and for the jobs whose
 * events say they ended, whether they kept log lines (the log marker, a
 * field of the same hash). A chunk's replies are parsed in one synchronous
 * run, so chunks keep that run short: a worker sharing the event loop gets
 * its turn in between (a whole 2,000-job batch at once stalled it for tens
 * of ms).
 */
async function readJobs(queue: Queue, folds: readonly JobFold[]): Promise<{ jobs: (JobFacts | undefined)[]; logged: Set<string> }> {
  const client = await queue.getBackend().client;
  const keyOf = (id: string) => queue.toKey(id);
  const jobs: (JobFacts | undefined)[] = [];
  const logged = new Set<string>();
  for (let i = 0; i < folds.length; i += READ_CHUNK) {
    const chunk = folds.slice(i, i + READ_CHUNK);
    const read = await readJobFactsAt(
      client,
      keyOf,
      chunk.map((f) => f.jobId),
    );
    chunk.forEach((f, j) => {
      const { job, logged: kept } = read[j]!;
      jobs.push(job);
      if (job && kept && f.status !== null && TERMINAL_STATUSES.has(f.status)) logged.add(f.jobId);
    });
  }
  return { jobs, logged };
}

const READ_CHUNK = 100;

/**
 * Handed rows held at most: far more than a producer adds while its recorder
 * reads one batch. Past it, new rows are not taken (written from their events).
 */
const MAX_HANDED = 20_000;

/**
 * How long a handed row waits for its job's events to come to this
 * recorder: a few of its cycles (a batch, then the linger of 50 ms). Past
 * that, the events went to another recorder of the group, which writes the
 * row from the hash, or this recorder is behind, and reads it too.
 */
const HANDED_HOLD_MS = 1_000;

/** A handed row moved forward by a happy update, as the update would leave the stored row. */
function advancedRow(row: JobsTable, u: HappyUpdate): JobsTable {
  return {
    ...row,
    status: u.status,
    attempts: 1,
    started_at: u.startedAt ?? row.started_at,
    finished_at: u.finishedAt,
    result: u.result,
    progress: u.progress ?? row.progress,
    error_type: null,
    error_message: null,
    error_stack: null,
    attempt_history: null,
    updated_at: u.updatedAt,
    event_seq: u.seq,
  };
}

function recordOf(job: JobFacts, queue: string, fold: JobFold): JobRecord {
  let status = fold.status;
  if (status && fold.statusNeedsAttempts && job.attemptsMade > 0) status = 'retrying';
  const record = recordFromJob(job, queue, status ?? 'queued');
  return record;
}

function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}

function compareIds(a: string, b: string): number {
  const pa = padStreamId(a);
  const pb = padStreamId(b);
  return pa < pb ? -1 : pa > pb ? 1 : 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
