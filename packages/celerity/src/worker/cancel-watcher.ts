import type { Logger } from 'pino';
import { keys } from '../broker/keys.ts';
import { createRedis, type RedisClient, type RedisTarget } from '../broker/connection.ts';
import { JobCancelled } from './limits.ts';
import { ChurnMap } from '../churn-map.ts';

/**
 * Delivers cancellations to the jobs this process runs, whichever process or
 * machine asked. Two paths, so that neither a lost message nor a slow poll
 * decides alone:
 * - a pub/sub channel, for speed: the cancel arrives in milliseconds;
 * - a poll of the cancel markers of the running jobs (one MGET per
 *   `pollMs`, only while jobs run), for the messages a subscriber missed
 *   while its connection was down.
 * A message for a job not running here yet is remembered for a minute, in
 * case the job is being fetched at that very moment.
 */
export class CancelWatcher {
  // A ChurnMap, not a Map: an entry per job (src/churn-map.ts).
  private readonly running = new ChurnMap<(reason: Error) => void>();
  private readonly recent = new Map<string, number>();
  private readonly subscriber: RedisClient;
  private readonly redis: RedisClient;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: { target: RedisTarget; prefix: string; redis: RedisClient; logger: Logger; pollMs?: number }) {
    this.prefix = opts.prefix;
    this.redis = opts.redis;
    this.log = opts.logger;
    this.pollMs = opts.pollMs ?? 500;
    this.subscriber = createRedis(opts.target, 'worker');
  }

  async start(): Promise<void> {
    this.subscriber.on('message', (_channel: string, jobId: string) => this.deliver(jobId));
    // ioredis re-subscribes by itself after a reconnect.
    await this.subscriber.subscribe(keys.cancelChannel(this.prefix)).catch((err) => this.log.warn({ err }, 'cancel channel not subscribed yet; polling covers it'));
    this.timer = setInterval(() => void this.poll(), this.pollMs);
    this.timer.unref();
  }

  /** Watches a running job; returns the function that stops watching it. */
  track(jobId: string, cancel: (reason: Error) => void): () => void {
    this.running.set(jobId, cancel);
    if (this.recent.delete(jobId)) cancel(new JobCancelled());
    return () => this.running.delete(jobId);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.subscriber.disconnect();
  }

  private deliver(jobId: string): void {
    const cancel = this.running.get(jobId);
    if (cancel) {
      this.log.info({ job_id: jobId }, 'cancelling running job');
      this.running.delete(jobId);
      cancel(new JobCancelled());
      return;
    }
    const now = Date.now();
    for (const [id, expires] of this.recent) if (expires < now) this.recent.delete(id);
    this.recent.set(jobId, now + 60_000);
  }

  private async poll(): Promise<void> {
    if (this.running.size === 0 || this.redis.status !== 'ready') return;
    const ids = [...this.running.keys()];
    try {
      const markers = await this.redis.mget(...ids.map((id) => keys.cancel(this.prefix, id)));
      markers.forEach((marker, i) => {
        if (marker !== null) this.deliver(ids[i]!);
      });
    } catch (err) {
      this.log.debug({ err }, 'cancel poll failed');
    }
  }
}
