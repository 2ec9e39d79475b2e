import { format } from 'node:util';
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import { type JobLogLevel, type JobLogRow, MAX_JOB_LOG_LINE_BYTES, MAX_JOB_LOG_LINES } from '../job-record.ts';

/** A line as a handler logged it: the level and pino's arguments. */
export interface LoggedLine {
  level: JobLogLevel;
  msg: string;
  data?: Record<string, unknown>;
}

const KEPT_LEVELS: readonly JobLogLevel[] = ['info', 'warn', 'error', 'fatal'];

/**
 * A logger that logs as `log` does and also hands each info-or-above line to
 * `keep`, whatever the logger's own level (the dashboard shows a job's lines
 * even when the process logs only warnings). Its children keep too.
 */
export function keepingLogger(log: Logger, keep: (line: LoggedLine) => void): Logger {
  return new Proxy(log, {
    get(target, prop, receiver) {
      if (prop === 'child') {
        return (...args: Parameters<Logger['child']>) => keepingLogger(target.child(...args) as unknown as Logger, keep);
      }
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function' || !KEPT_LEVELS.includes(prop as JobLogLevel)) return value;
      return (...args: unknown[]) => {
        try {
          keep(lineOf(prop as JobLogLevel, args));
        } catch {
          // Keeping a line must never break the handler's logging.
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** pino's call forms: `(msg, ...args)`, `(obj, msg?, ...args)`, `(err, msg?, ...args)`. */
function lineOf(level: JobLogLevel, args: unknown[]): LoggedLine {
  const [first, ...rest] = args;
  if (typeof first === 'string') return { level, msg: format(first, ...rest) };
  const msg = typeof rest[0] === 'string' ? format(rest[0], ...rest.slice(1)) : '';
  if (first instanceof Error) return { level, msg: msg || first.message, data: { err: errorData(first) } };
  if (first === null || typeof first !== 'object') return { level, msg: msg || String(first ?? '') };
  const data: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(first)) data[k] = v instanceof Error ? errorData(v) : v;
  const ownMsg = typeof data.msg === 'string' ? data.msg : '';
  delete data.msg;
  return { level, msg: msg || ownMsg, ...(Object.keys(data).length > 0 ? { data } : {}) };
}

/** An error as a log line keeps it: no stack (the server's paths stay in the process's log). */
function errorData(err: Error): { type: string; message: string } {
  return { type: err.name, message: err.message };
}

/**
 * The JSON row of a line, within `maxBytes`: the fields go first, then the
 * message is cut. Fields that JSON cannot hold (cycles, bigints) are left out.
 */
export function logRow(line: LoggedLine, attempt: number, time: number, maxBytes = MAX_JOB_LOG_LINE_BYTES): string {
  const row: JobLogRow = { celerity_log: time, level: line.level, attempt, msg: line.msg };
  if (line.data) {
    try {
      const text = JSON.stringify({ ...row, data: line.data });
      if (Buffer.byteLength(text) <= maxBytes) return text;
    } catch {
      // Unserializable fields: the message alone.
    }
    row.truncated = true;
  }
  let text = JSON.stringify(row);
  if (Buffer.byteLength(text) <= maxBytes) return text;
  row.truncated = true;
  // A character may take up to 6 bytes in JSON (a \u escape of 4 hex digits); cut until it fits.
  let keep = Math.max(0, maxBytes - 120);
  do {
    row.msg = `${line.msg.slice(0, keep)}…`;
    text = JSON.stringify(row);
    keep = Math.floor(keep / 2);
  } while (Buffer.byteLength(text) > maxBytes && keep > 0);
  return text;
}

/**
 * Appends one attempt's log lines to the job's BullMQ log (`job.log`, one
 * row per line), which also holds the attempt rows.
 *
 * Nothing is done for a job that never logs: the writer exists only once the
 * handler touches `ctx.log`. Writes never hold the handler up: lines queue
 * while a batch is in flight and go together in the next (one round trip
 * per batch on the worker's connection). A job keeps at most `maxLines`
 * lines over all its attempts: this attempt stops at its own count or when
 * `job.log`'s answer (the list's length, attempt rows included) reaches the
 * cap; the dropped lines are then counted in one last line. A write that
 * fails loses lines, never the job.
 */
export class JobLogWriter {
  private queued: string[] = [];
  private inflight: Promise<void> | null = null;
  private accepted = 0;
  private dropped = 0;
  /** Rows the job's log may still take; null until a write's answer tells (a later attempt follows earlier rows). */
  private room: number | null;
  private warned = false;
  private marked = false;
  private readonly job: Job;
  private readonly attempt: number;
  private readonly warn: (err: unknown) => void;
  private readonly mark: () => Promise<unknown>;
  private readonly maxLines: number;

  /** `mark`: tells the recorder the job has lines (`jobLogMarker`), once per attempt, with the first write. */
  constructor(job: Job, attempt: number, warn: (err: unknown) => void, mark: () => Promise<unknown> = async () => {}, maxLines = MAX_JOB_LOG_LINES) {
    this.job = job;
    this.attempt = attempt;
    this.warn = warn;
    this.mark = mark;
    this.maxLines = maxLines;
    this.room = attempt === 1 ? maxLines : null;
  }

  keep(line: LoggedLine): void {
    if (this.room === 0 || this.accepted >= this.maxLines) {
      this.dropped++;
      return;
    }
    this.accepted++;
    this.queued.push(logRow(line, this.attempt, Date.now()));
    this.inflight ??= this.flush();
  }

  /** Resolves when every line kept so far was written or given up, then notes how many were dropped. */
  async settled(): Promise<void> {
    while (this.inflight) await this.inflight;
    if (this.dropped > 0) {
      const dropped = this.dropped;
      this.dropped = 0;
      const note = logRow({ level: 'warn', msg: `${dropped} more log line${dropped === 1 ? '' : 's'} not kept: a job keeps at most ${this.maxLines}` }, this.attempt, Date.now());
      await this.write([note]);
    }
  }

  private async flush(): Promise<void> {
    while (this.queued.length > 0) {
      // Until the log's length is known, one line asks for it.
      const batch = this.queued.splice(0, this.room ?? 1);
      if (batch.length === 0) {
        this.dropped += this.queued.length;
        this.queued = [];
        break;
      }
      await this.write(batch);
    }
    this.inflight = null;
  }

  /** Sent back to back on one connection: Redis runs them in order, in one round trip. */
  private async write(rows: string[]): Promise<void> {
    const marking = this.marked ? [] : [this.mark()];
    this.marked = true;
    const [results] = await Promise.all([Promise.allSettled(rows.map((row) => this.job.log(row))), Promise.allSettled(marking)]);
    const counts = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    if (counts.length > 0) this.room = Math.max(0, this.maxLines - Math.max(...counts));
    const failure = results.find((r) => r.status === 'rejected');
    if (!failure) return;
    const err = failure.reason as unknown;
    // The job is gone (deleted while it ran): BullMQ's addLog refuses with "Missing key".
    if (err instanceof Error && err.message.startsWith('Missing key')) {
      this.room = 0;
      return;
    }
    if (!this.warned) {
      this.warned = true;
      this.warn(err);
    }
  }
}
