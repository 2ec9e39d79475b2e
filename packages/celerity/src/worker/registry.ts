import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { RedisClient } from '../broker/connection.ts';
import type { Logger } from 'pino';
import { keys } from '../broker/keys.ts';

/**
 * A worker's entry expires this many heartbeat intervals after its last
 * beat: a killed worker leaves the registry within `3 × heartbeatInterval`,
 * while a live one may miss two beats (a GC pause, a slow Redis) unseen.
 */
export const HEARTBEAT_TTL_FACTOR = 3;

/** Index members not refreshed for this long are dropped by beating workers, whatever readers do. */
const INDEX_HYGIENE_MS = 24 * 60 * 60 * 1000;

/** How long a closing worker waits to remove its entry; past it the entry just expires. */
const UNREGISTER_TIMEOUT_MS = 1_000;

/** A job a worker runs now, as its registry entry lists it. */
export interface ActiveJob {
  id: string;
  task: string;
  queue: string;
}

/** A live worker, as read from the registry. */
export interface WorkerInfo {
  /** `<host>:<pid>:<random>`. */
  id: string;
  host: string;
  pid: number;
  queues: string[];
  /** Jobs run at once, per queue. */
  concurrency: number;
  active: ActiveJob[];
  /** ms since the epoch, by the worker's clock. */
  startedAt: number;
  lastBeatAt: number;
  /** The worker's heartbeat interval; its entry expires {@link HEARTBEAT_TTL_FACTOR} of them after `lastBeatAt`. */
  beatMs: number;
}

/** What the worker reports on each beat. */
export interface WorkerState {
  queues: readonly string[];
  concurrency: number;
  active: ActiveJob[];
}

export interface WorkerRegistryOptions {
  /** A worker-kind connection (it waits out outages; beats are skipped while it is not ready). */
  redis: RedisClient;
  prefix: string;
  /** Heartbeat interval in ms. */
  beatMs: number;
  logger: Logger;
  /** Called on each beat for the current state. */
  state: () => WorkerState;
  /** Default: a fresh {@link newWorkerId}. */
  id?: string;
}

/** `<host>:<pid>:<random>`: unique even for a pid reused on the same host, or two containers sharing a pid. */
export function newWorkerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/**
 * Keeps a worker's entry in the Redis registry: every `beatMs` it writes
 * `<prefix>:celerity:worker:<id>` with a TTL of {@link HEARTBEAT_TTL_FACTOR}
 * beats and scores the id by its beat in `<prefix>:celerity:workers`. The
 * TTL is the liveness test, kept by Redis' clock, so a killed worker
 * disappears within 3 × `beatMs` whatever the clocks of the readers say.
 * A failed beat is logged and the next one tries again: heartbeats never
 * stop the worker.
 */
export class WorkerRegistry {
  readonly id: string;
  private readonly opts: WorkerRegistryOptions;
  private readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private failing = false;
  private stopped = false;

  constructor(opts: WorkerRegistryOptions) {
    this.opts = opts;
    this.id = opts.id ?? newWorkerId();
  }

  /** Starts beating; resolves after the first beat (written or not) once the connection is up. */
  start(): Promise<void> {
    const { redis } = this.opts;
    this.timer = setInterval(() => void this.beat(), this.opts.beatMs);
    // The worker's BullMQ loops keep the process alive, not the heartbeat.
    this.timer.unref();
    // Back in the registry as soon as Redis is, not a beat later.
    redis.on('ready', this.onReady);
    if (redis.status === 'ready') return this.beat();
    return new Promise<void>((resolve) => redis.once('ready', resolve)).then(() => this.beat());
  }

  private readonly onReady = (): void => void this.beat();

  /** Stops beating and removes the entry at once (bounded: when Redis is away the entry expires instead). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    const { redis, prefix } = this.opts;
    redis.off('ready', this.onReady);
    const remove = async () => {
      // A beat still in flight would otherwise re-create the entry after the delete.
      await this.inFlight;
      if (redis.status !== 'ready') return;
      await redis.multi().del(keys.worker(prefix, this.id)).zrem(keys.workers(prefix), this.id).exec();
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), UNREGISTER_TIMEOUT_MS);
    });
    try {
      const outcome = await Promise.race([remove(), timeout]);
      if (outcome === 'timeout') this.opts.logger.debug({ worker_id: this.id }, 'could not remove the worker entry in time; it expires by itself');
    } catch (err) {
      this.opts.logger.debug({ err, worker_id: this.id }, 'could not remove the worker entry; it expires by itself');
    } finally {
      clearTimeout(timer);
    }
  }

  private beat(): Promise<void> {
    // One beat at a time: on a stalled connection, writes must not pile up.
    if (this.inFlight) return this.inFlight;
    if (this.stopped) return Promise.resolve();
    const { redis } = this.opts;
    if (redis.status !== 'ready') {
      // The worker connection would queue the write until Redis is back; a
      // stale beat is worthless, so skip it and let the next one write.
      this.failed(new Error(`connection ${redis.status}`));
      return Promise.resolve();
    }
    this.inFlight = this.write()
      .then(() => {
        if (this.failing) this.opts.logger.info({ worker_id: this.id }, 'worker heartbeat resumed');
        this.failing = false;
      })
      .catch((err: unknown) => this.failed(err))
      .finally(() => {
        this.inFlight = undefined;
      });
    return this.inFlight;
  }

  private async write(): Promise<void> {
    const { redis, prefix, beatMs } = this.opts;
    const now = Date.now();
    const state = this.opts.state();
    const entry: WorkerInfo = {
      id: this.id,
      host: hostname(),
      pid: process.pid,
      queues: [...state.queues],
      concurrency: state.concurrency,
      active: state.active,
      startedAt: this.startedAt,
      lastBeatAt: now,
      beatMs,
    };
    const results = await redis
      .multi()
      .set(keys.worker(prefix, this.id), JSON.stringify(entry), 'PX', beatMs * HEARTBEAT_TTL_FACTOR)
      .zadd(keys.workers(prefix), now, this.id)
      .zremrangebyscore(keys.workers(prefix), '-inf', now - INDEX_HYGIENE_MS)
      .exec();
    const failed = results?.find(([err]) => err);
    if (!results || failed) throw failed?.[0] ?? new Error('heartbeat transaction aborted');
  }

  private failed(err: unknown): void {
    // Warn once per outage, not on every beat of it.
    if (!this.failing) this.opts.logger.warn({ err, worker_id: this.id }, 'worker heartbeat failed; retrying on the next beat');
    else this.opts.logger.debug({ err, worker_id: this.id }, 'worker heartbeat failed again');
    this.failing = true;
  }
}

/**
 * Removes index members whose entry has expired, atomically with respect to
 * a worker's beat (its SET and ZADD are one MULTI), so that a worker beating
 * again right then is not dropped from the index.
 */
const PRUNE_SCRIPT = `
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed`;

/**
 * The live workers: the index's members whose entry has not expired, oldest
 * first. Expired members are pruned from the index on the way.
 */
export async function readWorkers(redis: RedisClient, prefix: string): Promise<WorkerInfo[]> {
  const ids = await redis.zrange(keys.workers(prefix), 0, -1);
  if (ids.length === 0) return [];
  const entryKeys = ids.map((id) => keys.worker(prefix, id));
  const raws = await redis.mget(...entryKeys);
  const workers: WorkerInfo[] = [];
  const gone: number[] = [];
  raws.forEach((raw, i) => {
    const info = raw === null ? undefined : parseEntry(raw);
    if (info) workers.push(info);
    else if (raw === null) gone.push(i);
  });
  if (gone.length > 0) {
    await redis.eval(PRUNE_SCRIPT, gone.length + 1, keys.workers(prefix), ...gone.map((i) => entryKeys[i]!), ...gone.map((i) => ids[i]!));
  }
  return workers.sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
}

function parseEntry(raw: string): WorkerInfo | undefined {
  try {
    const v = JSON.parse(raw) as Partial<WorkerInfo>;
    if (typeof v.id !== 'string' || typeof v.lastBeatAt !== 'number') return undefined;
    return {
      id: v.id,
      host: String(v.host ?? ''),
      pid: Number(v.pid ?? 0),
      queues: Array.isArray(v.queues) ? v.queues.map(String) : [],
      concurrency: Number(v.concurrency ?? 0),
      active: Array.isArray(v.active) ? v.active : [],
      startedAt: Number(v.startedAt ?? v.lastBeatAt),
      lastBeatAt: v.lastBeatAt,
      beatMs: Number(v.beatMs ?? 0),
    };
  } catch {
    // An entry another version wrote in a shape this one cannot read: skip it, it expires.
    return undefined;
  }
}
