/**
 * Spawning Celerity processes (and a private redis-server) for the
 * process-level reliability tests.
 *
 * Every process started here is registered with `onCleanup` (so
 * `useCleanup()` SIGKILLs it after each test, even a failed one) and with an
 * exit hook of the test process, so that no worker outlives its test file.
 * Their output is kept (and shown when a process misbehaves); set
 * TEST_PROC_OUTPUT=1 to stream it to stderr as well.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { OPTIONS } from '../src/config.ts';
import { freePort, redisAnswers } from '../src/cli/dev-redis.ts';
import { onCleanup, sleep, type TestEnv } from './helpers.ts';

export const ROOT = join(import.meta.dirname, '..', '..', '..');
export const RELIABILITY_APP = 'packages/celerity/test/fixtures/reliability-app.ts';

// ---------------------------------------------------------------------------
// Child processes

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A spawned process with its output kept for diagnostics. */
export class Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
  readonly exited: Promise<Exit>;
  /** When the process exited (Date.now()), or null. */
  exitedAt: number | null = null;
  private out = '';

  /**
   * `cleanup: false` leaves the SIGKILL at cleanup to the owner (a private
   * Redis restarted mid-test must outlive the cleanups registered after it).
   */
  constructor(name: string, command: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; cleanup?: boolean } = {}) {
    this.name = name;
    this.child = spawn(command, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    if (this.child.pid === undefined) throw new Error(`could not spawn ${name}`);
    this.pid = this.child.pid;
    live.add(this.child);
    const keep = (chunk: Buffer) => {
      this.out += chunk.toString();
      // Keep the last 64 KB: enough to diagnose, bounded for long chaos runs.
      if (this.out.length > 128 * 1024) this.out = this.out.slice(-64 * 1024);
      if (process.env.TEST_PROC_OUTPUT) process.stderr.write(`[${this.name}] ${chunk.toString()}`);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitedAt = Date.now();
        live.delete(this.child);
        resolve({ code, signal });
      });
    });
    if (opts.cleanup !== false) onCleanup(() => this.kill('SIGKILL'));
  }

  get running(): boolean {
    return this.exitedAt === null;
  }

  /** Everything the process wrote (its last 64 KB at least). */
  get output(): string {
    return this.out;
  }

  /** Sends a signal if the process still runs; resolves once it has exited when `SIGKILL`. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.child.kill(signal);
    if (signal === 'SIGKILL') await this.exited;
  }

  /** Resolves with the exit, or rejects (showing the output) if it takes longer than `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name} still running after ${timeoutMs} ms; output:\n${this.out.slice(-4000)}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

export interface WorkerProcOptions {
  /** CELERITY_CONCURRENCY (default 10). */
  concurrency?: number;
  /** CELERITY_SHUTDOWN_GRACE in ms (default 30000). */
  shutdownGrace?: number;
  /** CELERITY_LOCK_DURATION in ms (default here 2000). */
  lockDuration?: number;
  /** CELERITY_STALLED_INTERVAL in ms (default here 1000). */
  stalledInterval?: number;
  /** Any other variables, over the above. */
  env?: Record<string, string>;
  name?: string;
}

/**
 * The environment of a process that must use `env`'s Redis prefix and store:
 * every Celerity variable inherited from the test process is removed first
 * (a DATABASE_URL in CI must not turn a SQLite test into a PostgreSQL one).
 */
export function processEnv(env: TestEnv, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const meta of Object.values(OPTIONS)) delete out[meta.env];
  Object.assign(out, {
    REDIS_URL: env.config.redisUrl,
    CELERITY_BROKER_URL: env.config.brokerUrl,
    CELERITY_PREFIX: env.prefix,
    CELERITY_SQLITE_PATH: env.sqlitePath,
    LOG_LEVEL: 'warn',
    ...(env.kind === 'postgres' ? { DATABASE_URL: env.config.databaseUrl!, CELERITY_DB_SCHEMA: env.schema! } : {}),
    ...extra,
  });
  return out;
}

/** `celerity worker --app test/fixtures/reliability-app.ts` on `env`'s Redis prefix and store. */
export function spawnWorker(env: TestEnv, opts: WorkerProcOptions = {}): Proc {
  const vars: Record<string, string> = {
    CELERITY_CONCURRENCY: String(opts.concurrency ?? 10),
    CELERITY_SHUTDOWN_GRACE: String(opts.shutdownGrace ?? 30_000),
    CELERITY_LOCK_DURATION: String(opts.lockDuration ?? 2_000),
    CELERITY_STALLED_INTERVAL: String(opts.stalledInterval ?? 1_000),
    ...opts.env,
  };
  return new Proc(opts.name ?? 'worker', process.execPath, ['packages/celerity/bin/celerity.js', 'worker', '--app', RELIABILITY_APP], {
    env: processEnv(env, vars),
  });
}

/**
 * Resolves once `queue` has at least `count` connected BullMQ workers
 * (BullMQ names its workers' connections; CLIENT LIST finds them).
 */
export async function waitForWorkers(queue: Queue, count: number, timeoutMs = 20_000, procs: Proc[] = []): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = procs.find((p) => !p.running);
    if (dead) throw new Error(`${dead.name} exited while starting; output:\n${dead.output.slice(-4000)}`);
    try {
      if ((await queue.getWorkersCount()) >= count) return;
    } catch {
      // Redis not answering yet
    }
    if (Date.now() > deadline) {
      throw new Error(`fewer than ${count} workers on queue ${queue.name} after ${timeoutMs} ms; output:\n${procs.map((p) => `[${p.name}] ${p.output.slice(-2000)}`).join('\n')}`);
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------
// Ports and a private Redis

export { freePort };

/**
 * A redis-server of the test's own on a free port, with its data in a temp
 * dir and AOF fsynced on every write: it can be stopped and started again on
 * the same port and data (`start()` after `shutdown()`), as an outage does.
 * Stopped and its dir removed by `cleanup()`.
 */
export class PrivateRedis {
  readonly port: number;
  readonly dir: string;
  readonly url: string;
  proc: Proc | undefined;

  private constructor(port: number) {
    this.port = port;
    this.dir = mkdtempSync(join(tmpdir(), 'celerity-redis-'));
    this.url = `redis://127.0.0.1:${port}`;
    onCleanup(async () => {
      await this.proc?.kill('SIGKILL');
      rmSync(this.dir, { recursive: true, force: true });
    });
  }

  static async start(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort());
    await redis.start();
    return redis;
  }

  /** Starts redis-server on this port and dir, and waits until it answers PING. */
  async start(): Promise<void> {
    if (this.proc?.running) throw new Error('redis-server already running');
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no'];
    // Killed by this object's own cleanup, registered before the app's: the
    // app's Redis keys are deleted first.
    const proc = new Proc(`redis-server:${this.port}`, 'redis-server', args, { cleanup: false });
    this.proc = proc;
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (!proc.running) throw new Error(`redis-server exited at start; output:\n${proc.output}`);
      if (await this.ping()) return;
      if (Date.now() > deadline) throw new Error(`redis-server not answering after 10 s; output:\n${proc.output}`);
      await sleep(50);
    }
  }

  /** True if the server answers PING now. */
  ping(): Promise<boolean> {
    return redisAnswers(this.url);
  }

  /** SHUTDOWN NOSAVE (the AOF, fsynced on every write, already holds everything), then waits for the exit. */
  async shutdown(): Promise<void> {
    const proc = this.proc;
    if (!proc?.running) return;
    const client = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.call('SHUTDOWN', 'NOSAVE').catch(() => {});
    } finally {
      client.disconnect();
    }
    await proc.waitExit(10_000);
  }
}
