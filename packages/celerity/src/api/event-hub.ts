import type { Logger } from 'pino';
import type { App } from '../app.ts';
import { keys, type CancelMarker } from '../broker/keys.ts';
import { createRedis, type RedisClient, viaBroker, waitReady } from '../broker/connection.ts';
import { ALL_TENANTS } from '../auth/principal.ts';
import type { JobEnvelope } from '../job-record.ts';
import { withTenantScope } from '../store/tenant-scope.ts';
import { attemptsBefore, FEED_EVENTS, labelEvent, type JobEventState, type JobEventType, type Labelled } from './events/job-events.ts';
import { compareStreamIds, encodePosition, streamIdTime, type Position } from './events/position.ts';

/**
 * The live event feed of one API process: ONE dedicated Redis connection
 * blocks on XREAD over every queue's BullMQ event stream and fans each entry
 * out to every open SSE client. A client costs no Redis command while it
 * follows the feed; only a client that resumes from a position older than
 * what the hub keeps in memory reads the streams (XRANGE), once.
 *
 * Entries name a job id only. The hub looks up each job's task and tenant
 * once (one pipeline per XREAD batch, from the job hash; for a job whose hash
 * is gone, the cancel marker's record or the SQL history) and caches them,
 * bounded. A job it cannot place is dropped rather than shown to a client
 * that might not be allowed to see it.
 */
export interface EventHubOptions {
  app: App;
  /** Events kept in memory for clients that resume (Last-Event-ID) without a Redis read. */
  ringSize?: number;
  /** Most characters of SSE text the ring holds (progress snapshots may be large). */
  ringBytes?: number;
  /** Jobs whose task, tenant and status the hub remembers. */
  cacheSize?: number;
  /** Block time of one XREAD; also how long a close waits at most. */
  blockMs?: number;
  /** Entries per XREAD. */
  batchSize?: number;
  /** How often an idle stream gets a comment (and its position), so that proxies keep it open. */
  heartbeatMs?: number;
  /** A client whose unsent bytes pass this is told it lagged and disconnected, to resume with Last-Event-ID. */
  maxBufferedBytes?: number;
  /** Most events one resume replays from Redis; past it the client is told it lagged and joins the live feed. */
  maxReplay?: number;
}

/** One job event as the feed carries it. */
export interface HubEvent {
  queue: string;
  /** Id of the stream entry it comes from. */
  streamId: string;
  jobId: string;
  task: string;
  tenant: string | null;
  type: JobEventType;
  attempt?: number;
  progress?: unknown;
  /** When Redis appended the entry (epoch ms, from its id). */
  at: number;
  /** The JSON of the SSE message's `data:`. */
  data: string;
}

/** One message already addressed: the feed's position after it, and its SSE text. */
interface FeedItem {
  event: HubEvent;
  /** The hub's position after this event, encoded. */
  position: string;
  /** `id:`, `event:` and `data:` lines and the blank line. */
  frame: string;
}

/** An open stream as the hub sees it; the route implements it over the HTTP response. */
export interface EventSink {
  /** True when this client is to receive the event (tenant, task patterns, filters). */
  matches(event: HubEvent): boolean;
  /**
   * Sinks with the same key match the same events (same tenant scope, task
   * patterns and filters): a batch's text is then built and encoded once for
   * all of them. Undefined: built for this sink alone.
   */
  readonly filterKey?: string;
  write(text: string | Buffer): void;
  /** Bytes written and not yet sent to the client. */
  readonly bufferedBytes: number;
  /** Ends the response (the client went away, lagged, or the server closes). */
  end(): void;
}

export interface EventHubStats {
  /** Redis connections the hub opened (one, once started). */
  connections: number;
  /** XREAD calls on the shared connection. */
  reads: number;
  /** Pipelines of job hash reads (at most one per XREAD batch, plus one per resume). */
  lookups: number;
  /** XRANGE calls made for resuming clients. */
  replays: number;
  /** Stream entries read. */
  entries: number;
  /** Clients told they lagged (too slow, or resumed past what is kept). */
  lagged: number;
  /** Events dropped because the job could not be placed (no hash, no history). */
  unplaced: number;
}

interface JobMeta {
  task: string;
  tenant: string | null;
  /** The job this one retries (its envelope's `retryOf`), told in its `queued` message. */
  retryOf?: string;
}

interface Subscription {
  sink: EventSink;
  /** Replaying: live events wait here until the replay is written. */
  pending: FeedItem[] | null;
  closed: boolean;
}

type RawEntry = [id: string, fields: string[]];

const DEFAULTS = {
  ringSize: 10_000,
  ringBytes: 16 * 1024 * 1024,
  cacheSize: 50_000,
  blockMs: 5_000,
  batchSize: 1_000,
  heartbeatMs: 15_000,
  maxBufferedBytes: 1024 * 1024,
  maxReplay: 10_000,
};

export class EventHub {
  private readonly app: App;
  private readonly logger: Logger;
  private readonly opts: typeof DEFAULTS;
  private readonly queues: string[];
  private readonly streamKeys: string[];
  private readonly queueOfKey: Map<string, string>;
  private redis: RedisClient | null = null;
  private starting: Promise<void> | null = null;
  private loop: Promise<void> | null = null;
  private running = false;
  private heartbeat: NodeJS.Timeout | null = null;
  /** For each queue, the id of the last entry delivered. */
  private readonly position = new Map<string, string>();
  /** For each queue, the id after which the ring holds every event of it. */
  private readonly floor = new Map<string, string>();
  private ring: FeedItem[] = [];
  private ringStart = 0;
  /** Characters of the frames in the ring. */
  private ringBytes = 0;
  private readonly subs = new Set<Subscription>();
  private readonly meta: Lru<string, JobMeta>;
  private readonly states: Lru<string, JobEventState>;
  readonly stats: EventHubStats = { connections: 0, reads: 0, lookups: 0, replays: 0, entries: 0, lagged: 0, unplaced: 0 };

  constructor(options: EventHubOptions) {
    this.app = options.app;
    this.logger = options.app.logger;
    this.opts = { ...DEFAULTS, ...definedOnly(options) };
    this.meta = new Lru(this.opts.cacheSize);
    this.states = new Lru(this.opts.cacheSize);
    this.queues = options.app.queueNames();
    this.streamKeys = this.queues.map((q) => options.app.broker.eventsKey(q));
    this.queueOfKey = new Map(this.streamKeys.map((k, i) => [k, this.queues[i]!]));
  }

  /** Open streams. */
  get subscribers(): number {
    return this.subs.size;
  }

  /**
   * Starts the shared reader if it is not running: the feed starts at each
   * stream's last entry. Throws BrokerUnavailableError when Redis does not
   * answer, so that the request gets a 503 before its stream opens.
   */
  start(): Promise<void> {
    if (this.starting) return this.starting;
    const starting = this.open();
    this.starting = starting;
    // A failed start is retried by the next client.
    starting.catch(() => {
      if (this.starting === starting) this.starting = null;
    });
    return starting;
  }

  private async open(): Promise<void> {
    // Named, so that an operator (and the tests) can find the one reader in CLIENT LIST.
    const redis = this.redis ?? createRedis(this.app.config, 'worker', { name: `${this.app.config.prefix}:celerity:events` });
    if (!this.redis) {
      this.redis = redis;
      this.stats.connections++;
    }
    await waitReady(redis, 5_000);
    const heads = await viaBroker(redis, () => lastIds(redis, this.streamKeys));
    for (const [i, queue] of this.queues.entries()) {
      this.position.set(queue, heads[i]!);
      this.floor.set(queue, heads[i]!);
    }
    this.running = true;
    this.loop = this.run(redis);
    this.heartbeat = setInterval(() => this.beat(), this.opts.heartbeatMs);
    this.heartbeat.unref();
  }

  /**
   * Adds a client. Without `from` it follows the feed from now. With `from`
   * (a position it was sent), it first gets every event after it: from
   * memory when the ring still holds them, else from the streams; then it
   * joins the live feed, with nothing missed and nothing twice. A position
   * older than what the streams keep gets a `lagged` message first.
   */
  async subscribe(sink: EventSink, from: Position | null): Promise<() => void> {
    await this.start();
    const sub: Subscription = { sink, pending: null, closed: false };
    const unsubscribe = () => {
      sub.closed = true;
      this.subs.delete(sub);
    };
    // Everything from here to `subs.add` runs without a turn of the event
    // loop, so no batch is delivered between the snapshot and the join.
    const snapshot = new Map(this.position);
    const cursor = new Map<string, string>();
    let fromRedis = false;
    for (const [queue, head] of snapshot) {
      const asked = from?.get(queue);
      // A queue the client has no position for (none given, or added since) starts now;
      // one ahead of the feed (another Redis, a forged id) is taken as now.
      const at = asked === undefined || compareStreamIds(asked, head) > 0 ? head : asked;
      cursor.set(queue, at);
      if (compareStreamIds(at, head) < 0 && compareStreamIds(at, this.floor.get(queue)!) < 0) fromRedis = true;
    }
    if (!fromRedis) {
      let out = '';
      if (from) {
        for (let i = this.ringStart; i < this.ring.length; i++) {
          const item = this.ring[i]!;
          const { queue, streamId } = item.event;
          if (compareStreamIds(streamId, cursor.get(queue)!) <= 0) continue;
          cursor.set(queue, streamId);
          if (sink.matches(item.event)) out += frameOf(encodePosition(cursor), item.event);
        }
      }
      if (out) sink.write(out);
      this.subs.add(sub);
      return unsubscribe;
    }
    sub.pending = [];
    this.subs.add(sub);
    try {
      await this.replayFromRedis(sub, cursor, snapshot);
    } catch (err) {
      unsubscribe();
      throw err;
    }
    return unsubscribe;
  }

  /** Writes the events between `cursor` and `snapshot` read from the streams, then what came live meanwhile. */
  private async replayFromRedis(sub: Subscription, cursor: Map<string, string>, snapshot: Map<string, string>): Promise<void> {
    const redis = this.app.broker.redis;
    const entries: { queue: string; id: string; fields: Record<string, string> }[] = [];
    const gaps: string[] = [];
    await viaBroker(redis, async () => {
      for (const [queue, head] of snapshot) {
        const from = cursor.get(queue)!;
        if (compareStreamIds(from, head) >= 0) continue;
        const key = this.app.broker.eventsKey(queue);
        this.stats.replays++;
        // From `from` itself: finding it proves nothing was trimmed between it and the rest.
        const [info, range] = await Promise.all([
          redis.xinfo('STREAM', key).catch(() => null) as Promise<unknown[] | null>,
          redis.xrange(key, from, head, 'COUNT', this.opts.maxReplay + 1) as Promise<RawEntry[]>,
        ]);
        const stream = info ? pairs(info) : null;
        const firstInStream = stream && Number(stream.length) > 0 ? firstEntryId(stream['first-entry']) : null;
        const trimmedBefore = stream !== null && Number(stream['entries-added'] ?? 0) > Number(stream.length ?? 0);
        if (range[0]?.[0] !== from && trimmedBefore && (firstInStream === null || compareStreamIds(from, firstInStream) < 0)) gaps.push(queue);
        let taken = 0;
        for (const [id, raw] of range) {
          if (id === from) continue;
          if (++taken > this.opts.maxReplay) {
            gaps.push(queue);
            break;
          }
          entries.push({ queue, id, fields: fieldsOf(raw) });
        }
      }
    });
    if (sub.closed) return;
    let out = '';
    for (const queue of new Set(gaps)) {
      this.stats.lagged++;
      out += `event: lagged\ndata: ${JSON.stringify({ reason: 'gap', queue, message: `events of the queue "${queue}" since the position given are no longer kept; read the jobs you follow again` })}\n\n`;
    }
    entries.sort((a, b) => compareStreamIds(a.id, b.id));
    const events = await this.label(entries, new Map(), true);
    for (const { queue, id, event } of events) {
      cursor.set(queue, id);
      if (event && sub.sink.matches(event)) out += frameOf(encodePosition(cursor), event);
    }
    if (sub.closed) return;
    for (const [queue, head] of snapshot) cursor.set(queue, head);
    const pending = sub.pending ?? [];
    sub.pending = null;
    for (const item of pending) if (sub.sink.matches(item.event)) out += item.frame;
    if (out) sub.sink.write(out);
  }

  private async run(redis: RedisClient): Promise<void> {
    let failing = false;
    while (this.running) {
      try {
        const ids = this.queues.map((q) => this.position.get(q)!);
        const reply = (await redis.xread('COUNT', this.opts.batchSize, 'BLOCK', this.opts.blockMs, 'STREAMS', ...this.streamKeys, ...ids)) as [string, RawEntry[]][] | null;
        this.stats.reads++;
        if (!reply || !this.running) continue;
        const entries: { queue: string; id: string; fields: Record<string, string> }[] = [];
        for (const [key, list] of reply) {
          const queue = this.queueOfKey.get(key)!;
          for (const [id, raw] of list) entries.push({ queue, id, fields: fieldsOf(raw) });
        }
        this.stats.entries += entries.length;
        // Streams are ordered each on its own; across queues, Redis' clock orders them.
        if (reply.length > 1) entries.sort((a, b) => compareStreamIds(a.id, b.id));
        const labelled = await this.label(entries, this.states, false);
        if (this.running) this.deliver(labelled);
        if (failing) this.logger.info('event hub: reading the event streams again');
        failing = false;
      } catch (err) {
        if (!this.running) return;
        // Once per outage: the batch is read again (positions moved only on delivery), every 500 ms until it goes through.
        if (!failing) this.logger.warn({ err }, 'event hub: reading the event streams failed; retrying');
        failing = true;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * Names the events of a batch and places their jobs. `states` is the
   * live feed's memory of each job, or a fresh map for a replay (whose
   * jobs' states are rebuilt from their attempt counts).
   */
  private async label(
    entries: { queue: string; id: string; fields: Record<string, string> }[],
    states: Lru<string, JobEventState> | Map<string, JobEventState>,
    replay: boolean,
  ): Promise<{ queue: string; id: string; event: HubEvent | null }[]> {
    const wanted = new Map<string, string>();
    // Jobs whose cancel marker names their event: `failed` (a cancel or a failure) and `removed` (a cancel or a delete).
    const marked = new Set<string>();
    const actives = new Map<string, number>();
    const first = new Map<string, Record<string, string>>();
    for (const e of entries) {
      const jobId = e.fields.jobId;
      const event = e.fields.event ?? '';
      if (!jobId || !FEED_EVENTS.has(event)) continue;
      if (!this.meta.has(jobId) || !states.has(jobId)) wanted.set(jobId, e.queue);
      if (!first.has(jobId)) first.set(jobId, e.fields);
      if (event === 'failed' || event === 'removed') marked.add(jobId);
      if (event === 'active') actives.set(jobId, (actives.get(jobId) ?? 0) + 1);
    }
    const found = wanted.size > 0 || marked.size > 0 ? await this.lookup(wanted, marked) : { ats: new Map<string, number>(), cancelled: new Set<string>() };
    for (const [jobId] of wanted) {
      if (!states.has(jobId) && this.meta.has(jobId)) states.set(jobId, stateBefore(first.get(jobId)!, found.ats.get(jobId) ?? 0, actives.get(jobId) ?? 0));
    }
    const out: { queue: string; id: string; event: HubEvent | null }[] = [];
    for (const e of entries) {
      const jobId = e.fields.jobId;
      const type = e.fields.event ?? '';
      const meta = jobId ? this.meta.get(jobId) : undefined;
      const state = jobId ? states.get(jobId) : undefined;
      if (!jobId || !FEED_EVENTS.has(type) || !meta || !state) {
        if (jobId && FEED_EVENTS.has(type) && !replay) this.stats.unplaced++;
        out.push({ queue: e.queue, id: e.id, event: null });
        continue;
      }
      const labelled = labelEvent(type, e.fields, state, found.cancelled.has(jobId));
      out.push({ queue: e.queue, id: e.id, event: labelled ? hubEvent(e.queue, e.id, jobId, meta, labelled) : null });
    }
    return out;
  }

  /**
   * One pipeline for the batch: each unknown job's task, envelope and
   * attempts from its hash, and whether each of `marked` has a cancel marker.
   * Jobs whose hash is gone are placed from their cancel marker or the SQL
   * history, or not at all.
   */
  private async lookup(wanted: Map<string, string>, marked: Set<string>): Promise<{ ats: Map<string, number>; cancelled: Set<string> }> {
    const redis = this.app.broker.redis;
    const { prefix } = this.app.config;
    const ats = new Map<string, number>();
    const cancelled = new Set<string>();
    const jobs = [...wanted];
    const flagged = [...marked];
    this.stats.lookups++;
    const pipeline = redis.pipeline();
    for (const [id, queue] of jobs) pipeline.hmget(this.app.broker.queue(queue).toKey(id), 'name', 'data', 'ats');
    for (const id of flagged) pipeline.exists(keys.cancel(prefix, id));
    const results = (await viaBroker(redis, () => pipeline.exec())) ?? [];
    const missing: string[] = [];
    jobs.forEach(([id], i) => {
      const [err, value] = results[i] ?? [null, null];
      const [name, data, attempts] = (err ? [null, null, null] : value) as [string | null, string | null, string | null];
      if (name === null) {
        missing.push(id);
        return;
      }
      this.meta.set(id, { task: name, ...placeOf(data) });
      ats.set(id, Number(attempts) || 0);
    });
    flagged.forEach((id, i) => {
      const [err, value] = results[jobs.length + i] ?? [null, 0];
      if (!err && Number(value) > 0) cancelled.add(id);
    });
    if (missing.length > 0) await this.placeGone(missing, ats);
    return { ats, cancelled };
  }

  /**
   * Jobs no longer in Redis: a cancelled queued job's marker keeps its
   * record; else the SQL history, tombstones included: a deleted job's
   * tombstone keeps its task and tenant, which place its `deleted` message
   * (the delete may have written it before the feed reads the event).
   */
  private async placeGone(ids: string[], ats: Map<string, number>): Promise<void> {
    const redis = this.app.broker.redis;
    const markers = await viaBroker(redis, () => redis.mget(...ids.map((id) => keys.cancel(this.app.config.prefix, id)))).catch(() => ids.map(() => null));
    const rest: string[] = [];
    ids.forEach((id, i) => {
      const record = parseMarker(markers[i] ?? null)?.record;
      if (record) {
        this.meta.set(id, { task: record.task, tenant: record.tenant, ...(record.retryOf ? { retryOf: record.retryOf } : {}) });
        ats.set(id, record.attempts);
      } else rest.push(id);
    });
    if (rest.length === 0) return;
    try {
      const store = await this.app.openStore();
      const rows = await withTenantScope(store, ALL_TENANTS, (db) => db.selectFrom('jobs').select(['id', 'task', 'tenant', 'attempts', 'retry_of']).where('id', 'in', rest).execute());
      for (const row of rows) {
        this.meta.set(row.id, { task: row.task, tenant: row.tenant, ...(row.retry_of ? { retryOf: row.retry_of } : {}) });
        ats.set(row.id, Number(row.attempts));
      }
    } catch (err) {
      this.logger.warn({ err, jobs: rest.length }, 'event hub: the job history could not place jobs gone from Redis; their events are dropped');
    }
  }

  /** Advances the feed by a batch: position, ring, and one write per client. */
  private deliver(batch: { queue: string; id: string; event: HubEvent | null }[]): void {
    const items: FeedItem[] = [];
    for (const { queue, id, event } of batch) {
      this.position.set(queue, id);
      if (!event) continue;
      const position = encodePosition(this.position);
      items.push({ event, position, frame: frameOf(position, event) });
    }
    if (items.length === 0) return;
    this.remember(items);
    // Clients that see the same events share one encoded buffer per batch:
    // with many dashboards open, the fan-out costs one write per client.
    const shared = new Map<string, Buffer | null>();
    for (const sub of this.subs) {
      if (sub.pending) {
        for (const item of items) sub.pending.push(item);
        if (sub.pending.length > this.opts.maxReplay) this.lag(sub, 'slow');
        continue;
      }
      const key = sub.sink.filterKey;
      let out = key === undefined ? undefined : shared.get(key);
      if (out === undefined) {
        let text = '';
        for (const item of items) if (sub.sink.matches(item.event)) text += item.frame;
        out = text === '' ? null : Buffer.from(text);
        if (key !== undefined) shared.set(key, out);
      }
      if (out === null) continue;
      sub.sink.write(out);
      if (sub.sink.bufferedBytes > this.opts.maxBufferedBytes) this.lag(sub, 'slow');
    }
  }

  private remember(items: FeedItem[]): void {
    for (const item of items) {
      this.ring.push(item);
      this.ringBytes += item.frame.length;
    }
    // Bounded by count and by size: progress snapshots may be large.
    let first = this.ringStart;
    while (first < this.ring.length && (this.ring.length - first > this.opts.ringSize || this.ringBytes > this.opts.ringBytes)) {
      const { event, frame } = this.ring[first]!;
      this.floor.set(event.queue, event.streamId);
      this.ringBytes -= frame.length;
      first++;
    }
    this.ringStart = first;
    // Compacted now and then rather than shifted per event.
    if (this.ringStart >= 1_024 && this.ringStart * 2 >= this.ring.length) {
      this.ring = this.ring.slice(this.ringStart);
      this.ringStart = 0;
    }
  }

  /**
   * A client too slow for the feed: its memory would grow without bound. It
   * is told so and disconnected; the EventSource reconnects with the id of
   * the last message it got and resumes from there.
   */
  private lag(sub: Subscription, reason: 'slow'): void {
    this.stats.lagged++;
    sub.closed = true;
    this.subs.delete(sub);
    sub.sink.write(`event: lagged\ndata: ${JSON.stringify({ reason, message: 'this stream fell behind the feed; reconnect with Last-Event-ID to resume' })}\n\n`);
    sub.sink.end();
  }

  /** A comment keeps proxies from closing an idle stream; the id-only message moves the client's resume position. */
  private beat(): void {
    const position = encodePosition(this.position);
    for (const sub of this.subs) if (!sub.pending) sub.sink.write(`: heartbeat\nid: ${position}\n\n`);
  }

  /** Ends every stream and stops the reader. */
  async close(): Promise<void> {
    this.running = false;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const sub of this.subs) {
      sub.closed = true;
      sub.sink.end();
    }
    this.subs.clear();
    // The blocking XREAD would hold a close for up to blockMs: the connection is dropped instead.
    this.redis?.disconnect();
    await this.loop?.catch(() => {});
    this.redis = null;
    this.starting = null;
    this.loop = null;
  }
}

/**
 * A job's state before the first of its events in hand, for a job the feed
 * (or a replay) meets for the first time. Born in hand (`added`): nothing
 * yet. Else its attempts are the hash's count, read after the events, less
 * the starts among them; and what its last message said is inferred, so
 * that BullMQ's second announcement of a wait (`waiting` after `added` or
 * `delayed`) is not sent twice: with no attempt yet the job was announced
 * `queued`, and a wait that follows a delay after an attempt was announced
 * `retrying` with the delay.
 */
function stateBefore(first: Record<string, string>, ats: number, actives: number): JobEventState {
  if (first.event === 'added') return { attempts: 0, last: null };
  const attempts = attemptsBefore(ats, actives);
  if (attempts === 0) return { attempts, last: 'queued' };
  return { attempts, last: first.event === 'waiting' && first.prev === 'delayed' ? 'retrying' : null };
}

function frameOf(position: string, event: HubEvent): string {
  return `id: ${position}\nevent: ${event.type}\ndata: ${event.data}\n\n`;
}

function hubEvent(queue: string, streamId: string, jobId: string, meta: JobMeta, labelled: Labelled): HubEvent {
  const at = streamIdTime(streamId);
  const body: Record<string, unknown> = { job_id: jobId, task: meta.task, queue, tenant: meta.tenant, status: labelled.type };
  if (labelled.progress !== undefined) body.progress = labelled.progress;
  if (labelled.attempt !== undefined) body.attempt = labelled.attempt;
  if (labelled.type === 'queued' && meta.retryOf !== undefined) body.retry_of = meta.retryOf;
  body.at = new Date(at).toISOString();
  return {
    queue,
    streamId,
    jobId,
    task: meta.task,
    tenant: meta.tenant,
    type: labelled.type,
    ...(labelled.attempt !== undefined ? { attempt: labelled.attempt } : {}),
    ...(labelled.progress !== undefined ? { progress: labelled.progress } : {}),
    at,
    data: JSON.stringify(body),
  };
}

/** The tenant and `retryOf` of a job's envelope (its hash's `data`). */
function placeOf(data: string | null): { tenant: string | null; retryOf?: string } {
  if (!data) return { tenant: null };
  try {
    const envelope = JSON.parse(data) as JobEnvelope | null;
    return { tenant: typeof envelope?.tenant === 'string' ? envelope.tenant : null, ...(typeof envelope?.retryOf === 'string' ? { retryOf: envelope.retryOf } : {}) };
  } catch {
    return { tenant: null };
  }
}

function parseMarker(text: string | null): CancelMarker | null {
  if (!text) return null;
  try {
    return JSON.parse(text) as CancelMarker;
  } catch {
    return null;
  }
}

/** Each stream's last generated id (`0-0` for one that does not exist yet): where the feed starts. */
async function lastIds(redis: RedisClient, streamKeys: string[]): Promise<string[]> {
  if (streamKeys.length === 0) return [];
  const pipeline = redis.pipeline();
  for (const key of streamKeys) pipeline.xinfo('STREAM', key);
  const results = (await pipeline.exec()) ?? [];
  return streamKeys.map((_, i) => {
    const [err, info] = results[i] ?? [null, null];
    if (err) {
      if (/no such key/i.test(String((err as Error).message))) return '0-0';
      throw err;
    }
    return String(pairs(info as unknown[])['last-generated-id'] ?? '0-0');
  });
}

function fieldsOf(raw: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) fields[raw[i]!] = raw[i + 1]!;
  return fields;
}

function pairs(list: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < list.length; i += 2) out[String(list[i])] = list[i + 1];
  return out;
}

function firstEntryId(entry: unknown): string | null {
  return Array.isArray(entry) && typeof entry[0] === 'string' ? entry[0] : null;
}

function definedOnly(options: EventHubOptions): Partial<typeof DEFAULTS> {
  const out: Partial<typeof DEFAULTS> = {};
  for (const key of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
    const value = options[key];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** A Map that forgets its least recently used entries past `capacity`. */
class Lru<K, V> {
  private readonly map = new Map<K, V>();
  private readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value as K);
  }
}

const hubs = new WeakMap<App, { hub: EventHub; users: number }>();

/**
 * The app's hub in this process, shared by every server that mounts its
 * API; each user releases it with the returned function, and the last
 * release closes it.
 */
export function acquireEventHub(app: App, options: Omit<EventHubOptions, 'app'> = {}): { hub: EventHub; release: () => Promise<void> } {
  let entry = hubs.get(app);
  if (!entry) {
    entry = { hub: new EventHub({ ...options, app }), users: 0 };
    hubs.set(app, entry);
  }
  entry.users++;
  const held = entry;
  let released = false;
  return {
    hub: held.hub,
    release: async () => {
      if (released) return;
      released = true;
      if (--held.users > 0) return;
      if (hubs.get(app) === held) hubs.delete(app);
      await held.hub.close();
    },
  };
}

/** The app's hub in this process, if an API serving it is open (for metrics and tests). */
export function eventHubOf(app: App): EventHub | undefined {
  return hubs.get(app)?.hub;
}
