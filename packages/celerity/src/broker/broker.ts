import { FlowProducer, type Job, Queue } from 'bullmq';
import type { CelerityConfig } from '../config.ts';
import { createRedis, type RedisClient, waitReady } from './connection.ts';

/** Job ids whose queue a process remembers. */
const MAX_HINTS = 10_000;

/**
 * The producer side of Redis: one BullMQ `Queue` per routing queue, all
 * sharing one fail-fast connection. Workers open their own connections.
 */
export class Broker {
  readonly redis: RedisClient;
  private readonly queues = new Map<string, Queue>();
  private flowProducer: FlowProducer | undefined;
  /** Job id → its queue, for jobs this process enqueued or read: a status read then needs one round trip. */
  private readonly queueHints = new Map<string, string>();
  /**
   * The hinted ids in the order they came, a ring of {@link MAX_HINTS}: the
   * oldest is forgotten first. Not the map's own first key: a map that
   * deletes from its front keeps the holes until it rehashes, and every
   * `keys().next()` walks them (5 µs per enqueue at 10,000 hints).
   */
  private readonly hintOrder: (string | undefined)[] = new Array(MAX_HINTS);
  private hintAt = 0;

  readonly config: CelerityConfig;

  /**
   * Set while a recorder runs in this process (`App.startRecorder`): each
   * job this process adds as a new, plain job is handed to it, so that it
   * writes the job's queued row from what the producer knows instead of
   * reading the job back from Redis (`Recorder.noteAdded`).
   */
  addedSink: ((job: Job) => void) | undefined;

  constructor(config: CelerityConfig) {
    this.config = config;
    this.redis = createRedis(config, 'producer');
  }

  /** The BullMQ queue behind a routing queue name; created on first use. */
  queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, {
        connection: this.redis,
        prefix: this.config.prefix,
        // The recorder trims what it has stored (see store/recorder.ts); this
        // cap only matters when no recorder runs for a long time.
        streams: { events: { maxLen: this.config.eventsMaxLen } },
      });
      queue.on('error', () => {});
      this.queues.set(name, queue);
    }
    return queue;
  }

  /**
   * Remembers which queue holds a job. Only a hint: ids are unique across
   * queues and a job never changes queue, but it may have been removed since.
   */
  hintQueue(id: string, queue: string): void {
    // Already hinted: where it was last seen wins (a chosen id may come back
    // in another queue once its job is gone); its place in the ring stays.
    if (this.queueHints.has(id)) {
      this.queueHints.set(id, queue);
      return;
    }
    const oldest = this.hintOrder[this.hintAt];
    if (oldest !== undefined) this.queueHints.delete(oldest);
    this.hintOrder[this.hintAt] = id;
    this.hintAt = (this.hintAt + 1) % MAX_HINTS;
    this.queueHints.set(id, queue);
  }

  queueHint(id: string): string | undefined {
    return this.queueHints.get(id);
  }

  /** Adds workflows (trees of jobs) atomically; on the same connection. */
  get flows(): FlowProducer {
    if (!this.flowProducer) {
      this.flowProducer = new FlowProducer({ connection: this.redis, prefix: this.config.prefix });
      this.flowProducer.on('error', () => {});
    }
    return this.flowProducer;
  }

  /**
   * A job's log rows (Celerity's failed-attempt rows). One LRANGE: BullMQ's
   * getJobLogs wraps it in a MULTI with LLEN, which costs a Pipeline.
   */
  jobLogs(queue: string, id: string): Promise<string[]> {
    return this.redis.lrange(`${this.config.prefix}:${queue}:${id}:logs`, 0, -1);
  }

  /** Waits for Redis; rejects with BrokerUnavailableError after `timeoutMs`. */
  ready(timeoutMs = 5_000): Promise<void> {
    return waitReady(this.redis, timeoutMs);
  }

  get isReady(): boolean {
    return this.redis.status === 'ready';
  }

  /** Key of a queue's BullMQ event stream, which the recorder tails. */
  eventsKey(queue: string): string {
    return `${this.config.prefix}:${queue}:events`;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    await this.flowProducer?.close().catch(() => {});
    this.flowProducer = undefined;
    this.queues.clear();
    this.redis.disconnect();
  }
}
