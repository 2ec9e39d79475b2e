/**
 * The recorder's writes on PostgreSQL: every statement of a batch in one
 * simple-protocol message (`runAsAllTenants`), its values inline as
 * dollar-quoted literals. What the store relies on: the message is one
 * transaction, the tenant setting ends with it, and a literal reads back
 * exactly, whatever it holds.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { postgresPool } from '../src/store/pg-pool.ts';
import { dollarQuoted, runAsAllTenants, TENANT_SETTING } from '../src/store/tenant-scope.ts';
import { dropSchema, onCleanup, randomToken, TEST_DATABASE_URL, useCleanup } from './helpers.ts';

useCleanup();

/** A pool of one connection, so that every call reuses the same session. */
async function onePool() {
  const schema = `t_${randomToken()}`;
  onCleanup(() => dropSchema(schema));
  const pool = postgresPool(TEST_DATABASE_URL, schema, 1);
  onCleanup(() => (pool as unknown as pg.Pool).end());
  await runAsAllTenants(pool, [`create schema ${pg.escapeIdentifier(schema)}`, 'create table t (n int primary key)']);
  return pool;
}

describe('runAsAllTenants', () => {
  it("returns each statement's rows, and its setting ends with the message", async () => {
    const pool = await onePool();
    const [inserted, seen] = await runAsAllTenants(pool, ['insert into t values (1), (2) returning n', `select current_setting('${TENANT_SETTING}') as scope`]);
    expect(inserted).toEqual([{ n: 1 }, { n: 2 }]);
    expect(seen).toEqual([{ scope: '*' }]);
    // The same connection, next query: the transaction-local setting is gone.
    const client = await pool.connect();
    try {
      const { rows } = await client.query<{ scope: string | null }>(`select current_setting('${TENANT_SETTING}', true) as scope`, []);
      expect(rows[0]!.scope ?? '').toBe('');
    } finally {
      client.release();
    }
  });

  it('answers an empty list for no statements', async () => {
    const pool = await onePool();
    expect(await runAsAllTenants(pool, [])).toEqual([]);
  });

  it('is one transaction: a statement that fails undoes the ones before it', async () => {
    const pool = await onePool();
    await expect(runAsAllTenants(pool, ['insert into t values (1)', 'insert into t values (1)'])).rejects.toMatchObject({ code: '23505' });
    const [rows] = await runAsAllTenants(pool, ['select count(*)::int as n from t']);
    expect(rows).toEqual([{ n: 0 }]);
  });
});

describe('dollarQuoted', () => {
  it('reads back exactly, under a tag the text does not hold', async () => {
    const pool = await onePool();
    const texts = ['', `it's a "quote" \\ and a backslash`, 'holds $celerity$ and $celerity0$, ends with $', '$celerity$', JSON.stringify({ s: '$$ $1 \u0001 \ud800 é 💥', t: "';drop table t;--" })];
    const statements = texts.map((text) => `select ${dollarQuoted(text)} as v`);
    const results = await runAsAllTenants(pool, statements);
    expect(results.map((rows) => (rows as { v: string }[])[0]!.v)).toEqual(texts);
    expect(dollarQuoted('a $celerity$ b $celerity0$')).toBe('$celerity1$a $celerity$ b $celerity0$$celerity1$');
    const [count] = await runAsAllTenants(pool, ['select count(*)::int as n from t']);
    expect(count).toEqual([{ n: 0 }]);
  });
});
