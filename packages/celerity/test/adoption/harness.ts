/**
 * What the adoption test does as a new user would: pack the core, install the
 * tarball into a project outside the repository, run its `celerity` bin.
 *
 * The project (`project/`, copied) holds two apps, one in TypeScript (`ts/`)
 * and one in plain ESM JavaScript (`js/`), installed once: the JavaScript app
 * runs on plain Node whatever else is installed (the CLI registers tsx only
 * for a .ts app), so sharing one install keeps each test honest and halves
 * the slowest step.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import pg from 'pg';
import { OPTIONS } from '../../src/config.ts';
import { redisAnswers } from '../../src/cli/dev-redis.ts';
import { ROOT } from '../process-helpers.ts';

export const CORE_DIR = join(ROOT, 'packages/celerity');
const TEMPLATE = join(import.meta.dirname, 'project');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end and returns its exit code and output; rejects
 * (with the output) only when it cannot start or exceeds `timeoutMs`.
 */
export function runCommand(command: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean; code?: number | string }) | null;
      if (e && (e.killed || typeof e.code !== 'number')) {
        reject(new Error(`${command} ${args.join(' ')} (in ${opts.cwd}) ${e.killed ? `still running after ${opts.timeoutMs} ms` : `failed: ${e.message}`}\n${stdout}\n${stderr}`.slice(-8000)));
        return;
      }
      resolve({ code: typeof e?.code === 'number' ? e.code : 0, stdout, stderr });
    });
  });
}

/** Like {@link runCommand}, but a non-zero exit rejects with the output. */
export async function mustRun(command: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> {
  const result = await runCommand(command, args, opts);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} (in ${opts.cwd}) exited with ${result.code}:\n${result.stdout}\n${result.stderr}`.slice(-8000));
  return result;
}

/**
 * The environment of npm and of the project's processes: the variables npm
 * sets for the script running the tests (`npm test` at the repository's root)
 * are removed, since a nested npm would read them as its own configuration
 * (prefix, workspace) and act on the repository instead of the project;
 * Celerity's variables are removed too, and NODE_OPTIONS, so that the project
 * runs on plain Node with only what it is given. The Node running the tests
 * comes first on PATH, for the bins' `#!/usr/bin/env node`.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const celerity = new Set<string>(Object.values(OPTIONS).map((o) => o.env));
  for (const [key, value] of Object.entries(process.env)) {
    if (/^npm_(package|lifecycle)_/i.test(key) || /^npm_config_(local_prefix|prefix|workspaces?|include_workspace_root)$/i.test(key)) continue;
    if (['INIT_CWD', 'NODE_OPTIONS', 'NODE_PATH', 'VITEST', 'VITEST_MODE', 'VITEST_POOL_ID', 'VITEST_WORKER_ID'].includes(key) || celerity.has(key)) continue;
    env[key] = value;
  }
  env.PATH = [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter);
  return { ...env, ...extra };
}

/** Fails with a message naming the service and how to point the test at it, instead of skipping. */
export async function requireServices(redisUrl: string, databaseUrl: string): Promise<void> {
  if (!(await redisAnswers(redisUrl))) {
    throw new Error(`adoption test: Redis does not answer at ${redisUrl}; start it or set TEST_REDIS_URL`);
  }
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
  } catch (err) {
    throw new Error(`adoption test: PostgreSQL is not reachable at ${databaseUrl} (${(err as Error).message}); start it or set TEST_DATABASE_URL`);
  } finally {
    await client.end().catch(() => {});
  }
}

/** The version the repository's lockfile installed of `name`: in the npm cache, so the project's install stays offline. */
export function lockedVersion(name: string): string {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const version = lock.packages[`node_modules/${name}`]?.version;
  if (!version) throw new Error(`${name} is not in package-lock.json`);
  return version;
}

/**
 * `npm pack` of the core into `dest`, as a publish would make it (`prepare`
 * builds dist/ first). Returns the tarball's path.
 */
export async function packCore(dest: string): Promise<string> {
  mkdirSync(dest, { recursive: true });
  await mustRun('npm', ['pack', '--pack-destination', dest, '--loglevel=error'], { cwd: CORE_DIR, env: cleanEnv(), timeoutMs: 180_000 });
  const tarballs = readdirSync(dest).filter((f) => f.endsWith('.tgz'));
  if (tarballs.length !== 1) throw new Error(`npm pack left ${tarballs.length} tarballs in ${dest}`);
  return join(dest, tarballs[0]!);
}

/**
 * A user's project at `dir`: the apps of `project/`, and a package.json that
 * depends on the tarball and on zod (which a user installs themselves: the
 * core does not re-export it), with TypeScript, Node's types and tsx as
 * devDependencies. Then `npm install`.
 *
 * `allowScripts` denies better-sqlite3's install script, as a PostgreSQL user
 * may: better-sqlite3 is an optional dependency the core loads only for the
 * SQLite store, and where no prebuilt binary can be downloaded its script
 * compiles it from source for minutes. Running on PostgreSQL without it
 * built is part of what the test shows.
 */
export async function createProject(dir: string, tarball: string): Promise<void> {
  cpSync(TEMPLATE, dir, { recursive: true });
  const pkg = {
    name: 'celerity-adoption',
    version: '0.0.0',
    private: true,
    type: 'module',
    dependencies: { celerity: `file:${tarball}`, zod: `^${lockedVersion('zod')}` },
    devDependencies: {
      typescript: lockedVersion('typescript'),
      '@types/node': lockedVersion('@types/node'),
      tsx: lockedVersion('tsx'),
    },
    allowScripts: { 'better-sqlite3': false, esbuild: true, 'msgpackr-extract': true },
  };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  await mustRun('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, env: cleanEnv(), timeoutMs: 240_000 });
}

/**
 * Polls `fn` (its errors count as "not yet") until it returns a value other
 * than undefined. `problem` is asked first on each round: a message (say, a
 * process has exited) fails at once; `describe` tells what was awaited when
 * the time is up.
 */
export async function until<T>(fn: () => Promise<T | undefined>, opts: { timeoutMs: number; describe: () => string; problem?: () => string | undefined }): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const problem = opts.problem?.();
    if (problem) throw new Error(problem);
    const value = await fn().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.describe()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
