import { type Kysely, type PostgresPool, sql } from 'kysely';
import pg from 'pg';
import type { TenantScope } from '../auth/principal.ts';
import type { Dialect } from './db.ts';
import { storableText } from './storable.ts';

/**
 * The PostgreSQL setting the `jobs` table's row-level security policy reads
 * (migration `0006_row_level_security`). Transaction-local: a pooled
 * connection never carries one request's scope into the next.
 */
export const TENANT_SETTING = 'celerity.tenant';

/**
 * The setting's value for a scope: `*` every tenant, `none` the jobs without
 * a tenant, `t:<tenant>` one tenant. The policy reads an unset or empty value
 * as no tenant at all: a query that forgot its scope sees no row.
 */
export function tenantSettingOf(scope: TenantScope): string {
  if (scope.all) return '*';
  // Stored tenants went through storableText (the recorder's serializers): compare like with like.
  return scope.tenant === null ? 'none' : `t:${storableText(scope.tenant)}`;
}

/** What {@link withTenantScope} needs of the store (JobStore provides it). */
export interface ScopedTarget<DB> {
  readonly db: Kysely<DB>;
  readonly dialect: Dialect;
}

/**
 * Runs `fn` in a transaction whose row-level security scope is `scope`:
 * every statement Celerity runs on `jobs` on PostgreSQL must go through
 * here (or, the recorder's writes, {@link runAsAllTenants}), or the policy
 * hides every row from it (unless its role bypasses row security). On
 * SQLite, which has no row security, `fn` runs on the store's connection as
 * it is; the queries' own tenant conditions scope it.
 *
 * Cost: BEGIN and set_config travel together as one simple-protocol
 * message, so a read is three round trips (that, the query, COMMIT), not
 * four. A simple-protocol message takes no parameters, hence the setting as
 * an escaped literal; it never holds a NUL (see {@link tenantSettingOf}),
 * which would end the message early.
 */
export async function withTenantScope<DB, T>(target: ScopedTarget<DB>, scope: TenantScope, fn: (db: Kysely<DB>) => Promise<T>): Promise<T> {
  if (target.dialect !== 'postgres') return fn(target.db);
  const begin = sql.raw(`begin; ${setScope(scope)}`);
  return target.db.connection().execute(async (db) => {
    let result: T;
    try {
      await begin.execute(db);
      result = await fn(db);
    } catch (err) {
      // A broken connection cannot roll back; the pool drops it, and the server ends the transaction with it.
      await sql`rollback`.execute(db).catch(() => {});
      throw err;
    }
    await sql`commit`.execute(db);
    return result;
  });
}

/** The statement that sets `scope` for the rest of the transaction (an escaped literal: simple-protocol messages take no parameters). */
function setScope(scope: TenantScope): string {
  return `select set_config('${TENANT_SETTING}', ${pg.escapeLiteral(tenantSettingOf(scope))}, true)`;
}

const ALL_TENANTS_SETTING = setScope({ all: true });

/**
 * Runs `statements` as every tenant (scope `*`) in one round trip, and
 * returns each statement's rows. The recorder's writes take this path:
 * {@link withTenantScope} costs three round trips (BEGIN with the setting,
 * the statement, COMMIT), and on a machine shared with the database each
 * one is a socket write that wakes the server and a read that waits for it,
 * on the event loop the recorder shares with a worker's jobs.
 *
 * Why one message is still one transaction: PostgreSQL runs a
 * simple-protocol message of several statements as one implicit
 * transaction (all of it or none), so the transaction-local setting covers
 * every statement and ends with them; the pooled connection carries nothing
 * into the next query. A simple-protocol message takes no parameters: values
 * travel inline, as {@link dollarQuoted} literals.
 */
export async function runAsAllTenants(pool: PostgresPool, statements: readonly string[]): Promise<unknown[][]> {
  if (statements.length === 0) return [];
  const client = await pool.connect();
  try {
    // No parameters: pg sends the text as one simple-protocol Query message.
    const results = (await client.query(`${ALL_TENANTS_SETTING};\n${statements.join(';\n')}`, [])) as unknown as { rows: unknown[] }[];
    // Several statements: pg answers one result per statement, the setting's first.
    return results.slice(1).map((r) => r.rows);
  } finally {
    // A client whose connection broke is not queryable; the pool drops it on release.
    client.release();
  }
}

/**
 * `text` as a dollar-quoted SQL literal, which PostgreSQL reads verbatim (no
 * escapes), under a tag that does not occur in it. `text` must hold no NUL,
 * which would end the message early (JSON.stringify's output never does: it
 * writes `\u0000`).
 */
export function dollarQuoted(text: string): string {
  let tag = '$celerity$';
  for (let i = 0; text.includes(tag); i++) tag = `$celerity${i}$`;
  return `${tag}${text}${tag}`;
}
