import type { Queue } from 'bullmq';
import type { RedisClient } from '../broker/connection.ts';
import type { Logger } from 'pino';
import { fairKeys } from '../broker/fair-keys.ts';
import { DISPATCH_LUA, DONE_LUA, PARK_LUA, SWEEP_LUA } from './scripts.ts';

/** Most jobs one dispatch call takes: keeps each script short. */
const MAX_TAKE = 200;

/** The fair stage's scripts as ioredis commands, defined once per connection. */
export interface FairCommands {
  celerityFairPark(jobKey: string, delayedKey: string, base: string, id: string, tenant: string, priority: number, timestamp: number, due: number): Promise<number>;
  celerityFairDispatch(waitKey: string, delayedKey: string, base: string, window: number, low: number, max: number, ...done: string[]): Promise<[string[], string]>;
  celerityFairSweep(base: string, staleMs: number, max: number): Promise<string[]>;
  celerityFairDone(base: string, ...ids: string[]): Promise<number>;
}

/** Defines the fair stage's scripts on a connection (and on its MULTIs). */
export function fairCommands(redis: RedisClient): RedisClient & FairCommands {
  const r = redis as RedisClient & Partial<FairCommands>;
  if (!r.celerityFairDispatch) {
    redis.defineCommand('celerityFairPark', { numberOfKeys: 2, lua: PARK_LUA });
    redis.defineCommand('celerityFairDispatch', { numberOfKeys: 2, lua: DISPATCH_LUA });
    redis.defineCommand('celerityFairSweep', { numberOfKeys: 0, lua: SWEEP_LUA });
    redis.defineCommand('celerityFairDone', { numberOfKeys: 0, lua: DONE_LUA });
  }
  return r as RedisClient & FairCommands;
}

export interface DispatcherOptions {
  redis: RedisClient;
  /** The BullMQ queue whose parked jobs this dispatcher promotes. */
  queue: Queue;
  prefix: string;
  /** Most jobs kept runnable in BullMQ (its wait list plus jobs being promoted). */
  window: number;
  /**
   * Least time between two dispatch passes (ms). Workers trigger one per
   * finished job; with half the window still runnable, waiting a few ms
   * leaves no slot idle and folds many triggers into one pass.
   */
  minGapMs?: number;
  logger?: Logger | undefined;
}

/**
 * Moves a queue's parked jobs into BullMQ's wait list, in fair order, as fast
 * as workers take them. `trigger()` coalesces: calls made while a dispatch
 * runs cause one more pass after it, never a pile of concurrent ones.
 */
export class FairDispatcher {
  private readonly redis: RedisClient & FairCommands;
  private readonly base: string;
  private readonly waitKey: string;
  private readonly delayedKey: string;
  private running: Promise<void> | undefined;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private dueTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastEnd = 0;
  private gapTimer: NodeJS.Timeout | undefined;

  private readonly opts: DispatcherOptions;

  constructor(opts: DispatcherOptions) {
    this.opts = opts;
    this.redis = fairCommands(opts.redis);
    const name = opts.queue.name;
    this.base = fairKeys.base(opts.prefix, name);
    this.waitKey = fairKeys.bullWait(opts.prefix, name);
    this.delayedKey = fairKeys.bullDelayed(opts.prefix, name);
  }

  get queueName(): string {
    return this.opts.queue.name;
  }

  /** Starts a dispatch soon; never throws (a failure is logged, the timer retries). */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    const wait = this.lastEnd + (this.opts.minGapMs ?? 0) - Date.now();
    if (wait > 0) {
      this.gapTimer ??= setTimeout(() => {
        this.gapTimer = undefined;
        this.lastEnd = 0;
        this.trigger();
      }, wait);
      return;
    }
    this.running = this.loop()
      .catch((err: unknown) => this.opts.logger?.warn({ err, queue: this.queueName }, 'fair dispatch failed; the next trigger or tick retries'))
      .finally(() => {
        this.running = undefined;
        this.lastEnd = Date.now();
        // A trigger that came during the loop's last call would be lost.
        if (this.again) {
          this.again = false;
          this.trigger();
        }
      });
  }

  /** Runs dispatch passes until nothing more is asked; resolves when done. For tests and the timer. */
  async dispatchNow(): Promise<void> {
    this.lastEnd = 0;
    this.trigger();
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    let done: string[] = [];
    do {
      this.again = false;
      const low = Math.max(0, Math.floor(this.opts.window / 2));
      const [taken, nextDue] = await this.redis.celerityFairDispatch(this.waitKey, this.delayedKey, this.base, this.opts.window, low, MAX_TAKE, ...done);
      this.armDue(Number(nextDue));
      done = await this.promote(taken);
      if (taken.length === MAX_TAKE) this.again = true;
    } while (this.again && !this.stopped);
    if (done.length > 0) await this.redis.celerityFairDone(this.base, ...done);
  }

  /**
   * Promotes jobs with BullMQ's own promote script (delayed → wait). A job no
   * longer delayed (cancelled, deleted, already promoted) makes BullMQ throw;
   * that job needs nothing more. Returns the ids to drop from `inflight`.
   */
  private async promote(ids: string[]): Promise<string[]> {
    if (ids.length === 0) return ids;
    const backend = this.opts.queue.backend as unknown as { promote(id: string): Promise<void> };
    const results = await Promise.allSettled(ids.map((id) => backend.promote(id)));
    const done: string[] = [];
    results.forEach((r, i) => {
      // A connection error leaves the job in `inflight`, for the sweep.
      if (r.status === 'fulfilled' || isNotDelayed(r.reason)) done.push(ids[i]!);
    });
    return done;
  }

  /**
   * Promotes jobs taken from a backlog more than `staleMs` ago and still not
   * promoted: their dispatcher died in between. Returns how many it found.
   */
  async sweep(staleMs: number): Promise<number> {
    const stale = await this.redis.celerityFairSweep(this.base, staleMs, 500);
    const done = await this.promote(stale);
    if (done.length > 0) await this.redis.celerityFairDone(this.base, ...done);
    return stale.length;
  }

  /**
   * The safety net of long-running processes (workers): a dispatch and a
   * sweep every `intervalMs`, so that a lost trigger or a dead dispatcher
   * delays jobs by one interval at most.
   */
  startTimer(intervalMs: number, staleMs: number): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => {
      this.trigger();
      this.sweep(staleMs).catch((err: unknown) => this.opts.logger?.warn({ err, queue: this.queueName }, 'fair sweep failed'));
    }, intervalMs);
    this.timer.unref();
  }

  /** A dispatch when the next deferred (user-delayed) job is due. */
  private armDue(at: number): void {
    if (!(at > 0) || this.stopped) return;
    const ms = Math.max(0, at - Date.now());
    if (ms > 60_000) return; // the timer's ticks come sooner
    clearTimeout(this.dueTimer);
    this.dueTimer = setTimeout(() => this.trigger(), ms + 1);
    this.dueTimer.unref();
  }

  /** Stops the timers and waits for a running dispatch. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.dueTimer);
    clearTimeout(this.gapTimer);
    this.timer = undefined;
    await this.running;
  }
}

/** BullMQ's answer to promoting a job that is not in `delayed` (code -3). */
function isNotDelayed(err: unknown): boolean {
  return err instanceof Error && /is not in the delayed state/.test(err.message);
}
