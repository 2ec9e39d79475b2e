/**
 * Isolated environments: a Redis key prefix, a PostgreSQL schema or a SQLite
 * file per run, each removed when its scope closes. Nothing a benchmark
 * writes outlives it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createApp, type App } from '../../packages/celerity/src/app.ts';
import { loadConfig, OPTIONS } from '../../packages/celerity/src/config.ts';
import type { Task } from '../../packages/celerity/src/task.ts';
import { noop } from '../apps/tasks.ts';
import { deleteRedisKeys } from '../../packages/celerity/src/cli/dev-redis.ts';
import type { RedisTarget } from '../../packages/celerity/src/broker/connection.ts';
import { memoryLogger, summariseLogs } from './logs.ts';
import type { Scope } from './scope.ts';
import type { ScenarioContext } from './types.ts';

export type StoreKind = 'postgres' | 'sqlite';

export function token(bytes = 5): string {
  return randomBytes(bytes).toString('hex');
}

/**
 * A fresh Redis key prefix whose keys are deleted when `scope` closes; on a
 * cluster (`ctx.redisCluster`) a hash tag, so that all its keys share a slot.
 */
export function redisPrefix(scope: Scope, redisUrl: string, cluster = false): string {
  const prefix = cluster ? `{bench${token()}}` : `bench${token()}`;
  scope.defer(`delete redis keys ${prefix}:*`, () => deleteRedisKeys({ brokerUrl: redisUrl, redisCluster: cluster ? 'on' : 'off' }, prefix));
  return prefix;
}

/** Where the scenario's Redis is, as Celerity's connection factory takes it. */
export function redisTarget(ctx: ScenarioContext): RedisTarget {
  return { brokerUrl: ctx.redisUrl, redisCluster: ctx.redisCluster ? 'on' : 'off' };
}

export interface StoreEnv {
  kind: StoreKind;
  prefix: string;
  schema: string | undefined;
  sqlitePath: string | undefined;
  /** Raw config (flags) for createApp / loadConfig. */
  flags: Record<string, string>;
  /** The environment of a child `celerity` process using this store and prefix. */
  childEnv(extra?: Record<string, string>): NodeJS.ProcessEnv;
}

/** Allocates a prefix and a store (PostgreSQL schema or SQLite file), removed with `scope`. */
export function storeEnv(ctx: ScenarioContext, scope: Scope, kind: StoreKind): StoreEnv {
  const prefix = redisPrefix(scope, ctx.redisUrl, ctx.redisCluster);
  let schema: string | undefined;
  let sqlitePath: string | undefined;
  if (kind === 'postgres') {
    schema = `bench_${token()}`;
    scope.defer(`drop schema ${schema}`, () => dropSchema(ctx.databaseUrl, schema!));
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'celerity-bench-'));
    scope.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    sqlitePath = join(dir, 'jobs.db');
  }
  const flags: Record<string, string> = {
    redisUrl: ctx.redisUrl,
    prefix,
    ...(ctx.redisCluster ? { redisCluster: 'on' } : {}),
    logLevel: 'warn',
    ...(kind === 'postgres' ? { databaseUrl: ctx.databaseUrl, databaseSchema: schema! } : { sqlitePath: sqlitePath! }),
  };
  return {
    kind,
    prefix,
    schema,
    sqlitePath,
    flags,
    childEnv(extra = {}) {
      const env = cleanEnv();
      for (const [name, value] of Object.entries(flags)) env[OPTIONS[name as keyof typeof OPTIONS].env] = value;
      return { ...env, ...extra };
    },
  };
}

/**
 * The bench process's own app on a store env (the API process's role:
 * producer and recorder). What it logs at warn and above becomes notes.
 */
export async function openApp(ctx: ScenarioContext, scope: Scope, env: StoreEnv, tasks: Task<any, any>[] = [noop]): Promise<App> {
  const config = loadConfig({ env: {}, flags: env.flags });
  const sink = memoryLogger();
  scope.defer('collect bench-process warnings', () => {
    for (const note of summariseLogs('bench process', sink.lines)) ctx.note(note);
  });
  const app = createApp({ tasks, config, logger: sink.logger, ...(env.schema ? { dbSchema: env.schema } : {}) });
  scope.defer('close app', () => app.close());
  await app.broker.ready();
  await app.openStore();
  return app;
}

/**
 * process.env without anything that would point a child at another Redis,
 * store or prefix (a DATABASE_URL in the shell must not turn a SQLite run
 * into a PostgreSQL one).
 */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const meta of Object.values(OPTIONS)) delete env[meta.env];
  for (const name of Object.keys(env)) if (name.startsWith('CELERITY_') || name.startsWith('BENCH_')) delete env[name];
  return env;
}

/**
 * Drops a PostgreSQL schema and the schemas of its table sets
 * (`<schema>_<name>`: s4's documents app keeps its tables in
 * `<schema>_documents`), with everything in them.
 */
export async function dropSchema(url: string, schema: string): Promise<void> {
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
