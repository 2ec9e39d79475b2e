import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../src/app.ts';
import { loadConfig, OPTIONS } from '../src/config.ts';
import { StoreSetupError } from '../src/errors.ts';
import { defineTables } from '../src/store/tables.ts';
import { dropSchema, onCleanup, randomToken, TEST_DATABASE_URL, TEST_REDIS_URL, useCleanup } from './helpers.ts';
import { freePort, ROOT } from './process-helpers.ts';

/**
 * The store keeps to itself: in a database of its own, Celerity creates
 * tables only in its schema (an app's table sets in theirs), leaves a
 * user's `public.jobs` alone, and every start-up failure is one line.
 */

useCleanup();

const BIN = join(ROOT, 'packages/celerity/bin/celerity.js');
const APP = join(ROOT, 'examples/quickstart/app.ts');
const database = `celerity_setup_${randomToken()}`;
const admin = () => new pg.Client({ connectionString: TEST_DATABASE_URL });
const urlOf = (db: string) => {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${db}`;
  return url.toString();
};

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

const userTables = (url: string) =>
  query<{ schema: string; name: string }>(
    url,
    "select table_schema as schema, table_name as name from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema') order by 1, 2",
  );

/**
 * The environment of a child: Celerity's variables inherited from the test
 * process removed first (CI exports DATABASE_URL, which would turn a SQLite
 * case into a PostgreSQL one).
 */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'silent' };
  for (const meta of Object.values(OPTIONS)) delete env[meta.env];
  return { ...env, ...extra };
}

/** Runs the CLI to its exit (or kills it after `ms`), returning its code and stderr lines. */
function cli(args: string[], env: Record<string, string>, ms = 20_000): Promise<{ code: number | null; stderr: string[]; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr: stderr.trim().split('\n').filter(Boolean), stdout });
    });
  });
}

beforeAll(async () => {
  const c = admin();
  await c.connect();
  await c.query(`create database ${database}`);
  await c.end();
});

afterAll(async () => {
  const c = admin();
  await c.connect();
  await c.query(`drop database if exists ${database} with (force)`);
  await c.end();
});

describe('a fresh PostgreSQL database', () => {
  it("gets tables only in Celerity's schema, and an app's table set only in its own", async () => {
    const url = urlOf(database);
    const prefix = `t${randomToken()}`;
    const config = loadConfig({ env: {}, flags: { redisUrl: TEST_REDIS_URL, databaseUrl: url, prefix, logLevel: 'silent' } });
    const app = createApp({ tasks: [], config, maintenance: false });
    await app.openStore();
    await app.close();
    const core = await userTables(url);
    expect(core.length).toBeGreaterThan(0);
    expect(core.filter((t) => t.schema !== 'celerity')).toEqual([]);
    expect(core.map((t) => t.name)).toContain('jobs');

    const notes = defineTables({
      name: 'notes',
      migrations: () => ({
        '0001_notes': {
          up: (db) =>
            db.schema
              .createTable('notes')
              .addColumn('id', 'text', (c) => c.primaryKey())
              .execute(),
        },
      }),
    });
    const withTables = createApp({ tasks: [], config, maintenance: false, tables: [notes] });
    const handle = await withTables.tables(notes);
    await handle.db.insertInto('notes').values({ id: 'n1' }).execute();
    await withTables.close();
    const after = await userTables(url);
    expect(after.filter((t) => t.schema !== 'celerity' && t.schema !== 'celerity_notes')).toEqual([]);
    expect(
      after
        .filter((t) => t.schema === 'celerity_notes')
        .map((t) => t.name)
        .sort(),
    ).toEqual(['notes', 'notes_migrations', 'notes_migrations_lock']);
    // The core's history and the set's are apart: neither lists the other's migrations.
    const coreMigrations = await query<{ name: string }>(url, 'select name from celerity.celerity_migrations order by name');
    expect(coreMigrations.map((m) => m.name)).toEqual([
      '0001_jobs',
      '0002_attempt_history',
      '0003_list_order',
      '0004_api_keys',
      '0005_job_key_id',
      '0006_row_level_security',
      '0007_operating_actions',
      '0008_search_indexes',
      '0009_job_metrics',
      '0010_job_logs',
      '0011_lean_indexes',
      '0012_job_logs_row_security',
      '0013_job_metrics_pending',
      '0014_hot_updates',
    ]);
  });

  it("leaves a user's own public.jobs alone, and refuses in one line to share its schema", async () => {
    const url = urlOf(database);
    await query(url, 'create table if not exists public.jobs (id serial primary key, title text)');
    await query(url, "insert into public.jobs (title) values ('theirs')");
    const config = loadConfig({ env: {}, flags: { redisUrl: TEST_REDIS_URL, databaseUrl: url, prefix: `t${randomToken()}`, logLevel: 'silent' } });
    const app = createApp({ tasks: [], config, maintenance: false });
    await app.openStore();
    await app.close();
    expect(await query(url, 'select title from public.jobs')).toEqual([{ title: 'theirs' }]);

    // Told to use public, where a foreign jobs table already stands: one line, non-zero, no stack.
    const port = String(await freePort());
    const res = await cli(['serve', '--app', APP], { DATABASE_URL: url, CELERITY_DB_SCHEMA: 'public', PORT: port, CELERITY_PREFIX: `t${randomToken()}`, REDIS_URL: TEST_REDIS_URL });
    expect(res.code).not.toBe(0);
    expect(res.code).not.toBeNull();
    expect(res.stderr).toHaveLength(1);
    expect(res.stderr[0]).toMatch(/^celerity: CELERITY_DB_SCHEMA: .*"jobs" already exists.*; choose another schema with CELERITY_DB_SCHEMA$/);
  });
});

describe('a store migrated by another version', () => {
  it('runs on the schema of a newer version, whose migrations it does not know, and still refuses a gap among its own', async () => {
    const url = urlOf(database);
    const schema = `celerity_${randomToken()}`;
    const open = () => {
      const config = loadConfig({ env: {}, flags: { redisUrl: TEST_REDIS_URL, databaseUrl: url, databaseSchema: schema, prefix: `t${randomToken()}`, logLevel: 'silent' } });
      return createApp({ tasks: [], config, maintenance: false });
    };
    const first = open();
    await first.openStore();
    await first.close();
    // What a newer version leaves: a migration this one has never heard of, after its own.
    await query(url, `insert into ${schema}.celerity_migrations (name, timestamp) values ('9999_from_the_future', now()::text)`);
    const older = open();
    const store = await older.openStore();
    expect(await store.migrate()).toEqual(['9999_from_the_future']);
    await older.close();

    // An unknown name among its own is not a newer version's: refused as before.
    await query(url, `insert into ${schema}.celerity_migrations (name, timestamp) values ('0005_zz_stranger', now()::text)`);
    const confused = open();
    await expect(confused.openStore()).rejects.toThrow(/0005_zz_stranger is missing/);
    await confused.close();
  });
});

describe('start-up failures of the store are one line naming the setting and the fix', () => {
  it('a missing database', async () => {
    const res = await cli(['serve', '--app', APP], { DATABASE_URL: urlOf(`nope_${randomToken()}`), PORT: String(await freePort()), REDIS_URL: TEST_REDIS_URL });
    expect(res.code).toBe(1);
    expect(res.stderr).toHaveLength(1);
    expect(res.stderr[0]).toMatch(/^celerity: DATABASE_URL: database "nope_\w+" does not exist; create the database/);
  });

  it('a closed port', async () => {
    const res = await cli(['serve', '--app', APP], { DATABASE_URL: `postgres://root@127.0.0.1:${await freePort()}/test`, PORT: String(await freePort()), REDIS_URL: TEST_REDIS_URL });
    expect(res.code).toBe(1);
    expect(res.stderr).toEqual([expect.stringMatching(/^celerity: DATABASE_URL: PostgreSQL refused the connection at 127\.0\.0\.1:\d+; start PostgreSQL/)]);
  });

  it('refused credentials', async () => {
    const url = new URL(TEST_DATABASE_URL);
    url.username = `nobody_${randomToken()}`;
    const res = await cli(['serve', '--app', APP], { DATABASE_URL: url.toString(), PORT: String(await freePort()), REDIS_URL: TEST_REDIS_URL });
    expect(res.code).toBe(1);
    expect(res.stderr).toHaveLength(1);
    expect(res.stderr[0]).toMatch(/^celerity: DATABASE_URL: .*; fix the user and password in DATABASE_URL$/);
  });

  it('a SQLite path that cannot be opened', async () => {
    const res = await cli(['serve', '--app', APP], { CELERITY_SQLITE_PATH: '/etc/hostname/celerity.db', PORT: String(await freePort()), REDIS_URL: TEST_REDIS_URL });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toHaveLength(1);
    expect(res.stderr[0]).toMatch(/^celerity: CELERITY_SQLITE_PATH: /);
  });

  it('is a typed error in the library too', async () => {
    const config = loadConfig({ env: {}, flags: { redisUrl: TEST_REDIS_URL, databaseUrl: urlOf(`nope_${randomToken()}`), logLevel: 'silent' } });
    const app = createApp({ tasks: [], config, maintenance: false });
    const err = await app.openStore().catch((e: unknown) => e);
    await app.close();
    expect(err).toBeInstanceOf(StoreSetupError);
    expect((err as StoreSetupError).code).toBe('store_setup');
    expect((err as StoreSetupError).details.setting).toBe('DATABASE_URL');
  });
});

describe('without the optional better-sqlite3', () => {
  it('the SQLite store fails with one line naming the fix, and PostgreSQL needs no native module', async () => {
    // An install of the built package whose dependencies are the workspace's,
    // all but better-sqlite3 (as `npm install --omit=optional` leaves it).
    const dir = mkdtempSync(join(tmpdir(), 'celerity-nosqlite-'));
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    const pkgDir = join(dir, 'node_modules', 'celerity');
    cpSync(join(ROOT, 'packages/celerity/dist'), join(pkgDir, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'packages/celerity/package.json'), join(pkgDir, 'package.json'));
    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies)) {
      mkdirSync(dirname(join(dir, 'node_modules', dep)), { recursive: true });
      symlinkSync(join(ROOT, 'node_modules', dep), join(dir, 'node_modules', dep));
    }
    const schema = `nosqlite_${randomToken()}`;
    onCleanup(() => dropSchema(schema));
    const script = `
      import { createApp } from 'celerity';
      const open = async (config) => {
        const app = createApp({ tasks: [], config: { redisUrl: '${TEST_REDIS_URL}', logLevel: 'silent', ...config }, maintenance: false });
        try { await app.openStore(); return 'ok'; } catch (err) { return err.code + ' ' + err.message; } finally { await app.close(); }
      };
      console.log(await open({ sqlitePath: ${JSON.stringify(join(dir, 'jobs.db'))} }));
      console.log(await open({ databaseUrl: '${TEST_DATABASE_URL}', databaseSchema: '${schema}' }));
    `;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8', env: cleanEnv({}) })
      .trim()
      .split('\n');
    expect(out[0]).toBe(
      'store_setup DATABASE_URL: the SQLite store needs the optional package better-sqlite3, which is not installed (or not built for this Node); run `npm install better-sqlite3`, or set DATABASE_URL to a PostgreSQL database',
    );
    expect(out[1]).toBe('ok');
  });
});
