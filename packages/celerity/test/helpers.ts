/**
 * Test isolation for everything that touches Redis or SQL.
 *
 * Each test environment gets its own Redis key prefix, its own SQLite file
 * under the OS temp dir and, for PostgreSQL, its own schema. `cleanup()`
 * (registered with `afterEach` by `useCleanup()`) stops what was started, in
 * reverse order, then deletes the Redis keys, drops the schema and removes
 * the SQLite file.
 *
 * Environment:
 * - `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`);
 * - `TEST_DATABASE_URL`, else `DATABASE_URL`, else
 *   `postgres://root@127.0.0.1:5432/test`, for the `postgres` store;
 * - `TEST_LOG_LEVEL` (default `silent`).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterEach } from 'vitest';
import { createApp, type App, type AppOptions } from '../src/app.ts';
import { createRedis, type RedisTarget } from '../src/broker/connection.ts';
import { loadConfig, type CelerityConfig, type RawConfig } from '../src/config.ts';
import { Recorder, type RecorderOptions } from '../src/store/recorder.ts';
import type { Task } from '../src/task.ts';
import { newJobId } from '../src/ids.ts';
import type { UploadRef } from '../src/uploads/upload-ref.ts';
import type { Worker } from '../src/worker/worker.ts';
import { deleteRedisKeys as deleteKeysUnder } from '../src/cli/dev-redis.ts';

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
export const TEST_LOG_LEVEL = process.env.TEST_LOG_LEVEL ?? 'silent';

export type StoreKind = 'sqlite' | 'postgres';
/** For `describe.each(stores)('... (%s)', (kind) => ...)`. */
export const stores: StoreKind[] = ['sqlite', 'postgres'];

/** A short random lower-case token, safe in Redis prefixes and SQL identifiers. */
export function randomToken(bytes = 6): string {
  return randomBytes(bytes).toString('hex');
}

// ---------------------------------------------------------------------------
// Cleanup registry

type Cleanup = () => unknown;
const cleanups: Cleanup[] = [];

/** Registers a cleanup step; `cleanup()` runs them last-registered first. */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

/** Runs every registered cleanup step (LIFO), even if some fail; rethrows the first failure. */
export async function cleanup(): Promise<void> {
  let firstError: unknown;
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (err) {
      firstError ??= err;
    }
  }
  if (firstError) throw firstError;
}

/** Registers `cleanup` as an `afterEach` hook of the calling test file. */
export function useCleanup(): void {
  afterEach(cleanup);
}

// ---------------------------------------------------------------------------
// Isolated environments

export interface TestEnv {
  kind: StoreKind;
  /** Redis key prefix of this environment. */
  prefix: string;
  /** SQLite file (used when kind is `sqlite`). */
  sqlitePath: string;
  /** PostgreSQL schema (when kind is `postgres`), to pass as `dbSchema`. */
  schema: string | undefined;
  /** A validated config pointing at the above; the process environment is ignored. */
  config: CelerityConfig;
}

/**
 * Allocates an isolated environment and registers the removal of its Redis
 * keys, PostgreSQL schema and SQLite directory. `overrides` are raw config
 * values (as flags) layered over the test defaults.
 */
export function testEnv(kind: StoreKind, overrides: RawConfig = {}): TestEnv {
  // An override names the prefix (a test on a Redis Cluster gives a hash-tagged one).
  const prefix = overrides.prefix !== undefined ? String(overrides.prefix) : `t${randomToken()}`;
  const dir = mkdtempSync(join(tmpdir(), 'celerity-test-'));
  const sqlitePath = join(dir, 'jobs.db');
  const schema = kind === 'postgres' ? `t_${randomToken()}` : undefined;
  const config = loadConfig({
    env: {},
    flags: {
      redisUrl: TEST_REDIS_URL,
      prefix,
      sqlitePath,
      uploadDir: join(dir, 'uploads'),
      logLevel: TEST_LOG_LEVEL,
      // Most tests are about jobs, not keys; test/security*.test.ts turn keys on.
      auth: 'off',
      ...(kind === 'postgres' ? { databaseUrl: TEST_DATABASE_URL } : {}),
      ...overrides,
    },
  });
  onCleanup(async () => {
    const results = await Promise.allSettled([deleteRedisKeys(prefix, config), schema ? dropSchema(schema, config.databaseUrl ?? TEST_DATABASE_URL) : Promise.resolve()]);
    rmSync(dir, { recursive: true, force: true });
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  });
  return { kind, prefix, sqlitePath, schema, config };
}

/** The app's tasks, or its tasks and workflows. */
export type TestAppTasks = Task<any, any>[] | Pick<AppOptions, 'tasks' | 'workflows' | 'tables' | 'routes' | 'schedules'>;

/** An app on a fresh environment; closed (and its data removed) by `cleanup()`. */
export function createTestApp(kind: StoreKind, tasks: TestAppTasks, overrides: RawConfig = {}): App & { env: TestEnv } {
  const env = testEnv(kind, overrides);
  const defs = Array.isArray(tasks) ? { tasks } : tasks;
  const app = createApp({ ...defs, config: env.config, ...(env.schema ? { dbSchema: env.schema } : {}) });
  onCleanup(() => app.close());
  return Object.assign(app, { env });
}

/**
 * Like {@link createTestApp}, then waits for Redis and migrates the store, so
 * that the first enqueue does not race the connection.
 */
export async function openTestApp(kind: StoreKind, tasks: TestAppTasks, overrides: RawConfig = {}): Promise<App & { env: TestEnv }> {
  const app = createTestApp(kind, tasks, overrides);
  await app.broker.ready();
  await app.openStore();
  return app;
}

/**
 * Puts a file where POST /v1/uploads would (`<uploadDir>/<upload_id>/<name>`)
 * and returns its handle: for tests of tasks that take uploads without going
 * through HTTP. Workers refuse handles that point anywhere else.
 */
export function stageUpload(app: App, filename: string, content: string | Uint8Array, contentType: string): UploadRef {
  const uploadId = newJobId();
  const dir = join(resolve(app.config.uploadDir), uploadId);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, filename);
  writeFileSync(path, content);
  return { upload_id: uploadId, path, filename, content_type: contentType, size: statSync(path).size };
}

/** Creates, starts and awaits a worker for the app; closed by `cleanup()`. */
export async function startWorker(app: App, opts: { queues?: string[]; concurrency?: number } = {}): Promise<Worker> {
  const worker = app.createWorker(opts);
  worker.start();
  // Forced: a test that failed half-way may leave a job blocked on a promise.
  onCleanup(() => worker.close(0));
  await worker.ready();
  return worker;
}

/** Starts the app's recorder; stopped by `cleanup()`. */
export async function startRecorder(app: App, queues?: string[]): Promise<Recorder> {
  const recorder = await app.startRecorder(queues);
  onCleanup(() => recorder.stop());
  return recorder;
}

/**
 * A Recorder built by hand (for its tuning options: `claimIdleMs`,
 * `maintenanceMs`, `blockMs`...), on its own connection, as
 * `app.startRecorder` builds it. Started, and stopped by `cleanup()`.
 */
export async function startCustomRecorder(app: App, opts: Partial<Omit<RecorderOptions, 'redis' | 'store' | 'queues' | 'logger' | 'prefix'>> & { queues?: string[] } = {}): Promise<Recorder> {
  const { queues = app.queueNames(), ...tuning } = opts;
  const store = await app.openStore();
  const redis = createRedis(app.config, 'worker');
  const recorder = new Recorder({
    redis,
    store,
    queues: queues.map((q) => app.broker.queue(q)),
    logger: app.logger,
    batchSize: app.config.recorderBatch,
    ...tuning,
    prefix: app.config.prefix,
  });
  onCleanup(async () => {
    await recorder.stop();
    redis.disconnect();
  });
  await recorder.start();
  return recorder;
}

/** A plain Redis client for assertions (XLEN, XREADGROUP...); closed by `cleanup()`. */
export function testRedis(url: string = TEST_REDIS_URL): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  onCleanup(() => redis.disconnect());
  return redis;
}

/** Deletes every Redis key starting with `<prefix>:` (at a URL, or where a config points, cluster included). */
export function deleteRedisKeys(prefix: string, target: string | RedisTarget = TEST_REDIS_URL): Promise<number> {
  return deleteKeysUnder(target, prefix);
}

/** Drops a PostgreSQL schema and the schemas of its table sets (`<schema>_<name>`), with everything in them. */
export async function dropSchema(schema: string, url: string = TEST_DATABASE_URL): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string }>("select nspname as name from pg_namespace where nspname = $1 or left(nspname, length($1) + 1) = $1 || '_'", [schema]);
    for (const { name } of rows) await client.query(`drop schema if exists "${name.replace(/"/g, '""')}" cascade`);
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------------------
// Waiting

/**
 * Polls `fn` until it returns a truthy value without throwing, and returns
 * that value. `fn` may also use `expect`: a throw means "not yet". On timeout
 * it throws the last error (so a failed `expect` shows its diff), or an error
 * showing the last value.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, intervalMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let lastValue: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
      lastValue = value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      if (lastError) throw lastError;
      throw new Error(`waitFor: condition not met after ${timeoutMs} ms (last value: ${JSON.stringify(lastValue)})`);
    }
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

/** A promise resolved from outside: lets a test hold a handler mid-run. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
