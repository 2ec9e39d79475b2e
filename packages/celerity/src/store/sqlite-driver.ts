import { createRequire } from 'node:module';
import { StoreSetupError } from '../errors.ts';

/**
 * The part of a better-sqlite3 connection Celerity uses. Declared here, not
 * imported from `@types/better-sqlite3`, so that the published types compile
 * for a user who runs on PostgreSQL and never installs SQLite.
 */
export interface SqliteStatement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

export interface SqliteDatabase {
  prepare(source: string): SqliteStatement;
  exec(source: string): SqliteDatabase;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction<F extends (...args: any[]) => unknown>(fn: F): SqliteTransaction<F>;
  close(): SqliteDatabase;
}

/** A transaction function: `BEGIN` (deferred) when called; `immediate` takes the write lock at `BEGIN IMMEDIATE`. */
export type SqliteTransaction<F> = F & { immediate: F };

type SqliteConstructor = new (path: string) => SqliteDatabase;

let driver: SqliteConstructor | undefined;

/**
 * Opens a SQLite file with better-sqlite3, an optional dependency: a
 * PostgreSQL user needs no native compile. Loaded synchronously (it is a
 * CommonJS addon) and only when SQLite is chosen.
 */
export function openSqlite(path: string): SqliteDatabase {
  if (!driver) {
    try {
      driver = createRequire(import.meta.url)('better-sqlite3') as SqliteConstructor;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_DLOPEN_FAILED') throw err;
      throw new StoreSetupError(
        'DATABASE_URL',
        'the SQLite store needs the optional package better-sqlite3, which is not installed (or not built for this Node)',
        'run `npm install better-sqlite3`, or set DATABASE_URL to a PostgreSQL database',
      );
    }
  }
  try {
    return new driver(path);
  } catch (err) {
    throw new StoreSetupError('CELERITY_SQLITE_PATH', `cannot open ${path}: ${(err as Error).message}`, 'point CELERITY_SQLITE_PATH at a writable file');
  }
}
