import { describe, expect, it } from 'vitest';
import { JobStore } from '../src/store/job-store.ts';
import { dropSchema, onCleanup, randomToken, stores, testEnv, TEST_DATABASE_URL, useCleanup, type StoreKind } from './helpers.ts';

useCleanup();

function openStore(kind: StoreKind): JobStore {
  const env = testEnv(kind);
  const store = new JobStore({ databaseUrl: env.config.databaseUrl, sqlitePath: env.sqlitePath, ...(env.schema ? { schema: env.schema } : {}) });
  onCleanup(() => store.close());
  return store;
}

describe.each(stores)('job store (%s)', (kind) => {
  it('migrates idempotently and starts empty', async () => {
    const store = openStore(kind);
    await store.migrate();
    await store.migrate();
    await store.ping();
    expect(await store.list({ limit: 10 })).toEqual({ jobs: [], nextCursor: null });
    expect(await store.get('nope')).toBeNull();
  });
});

describe('job store (postgres schemas)', () => {
  it('stores in different schemas of one database each get their own tables', async () => {
    // Tests, and several apps sharing a database, isolate themselves with
    // `dbSchema`. The migration bookkeeping must be looked up in the store's
    // own schema, not in whichever schema of the database happens to hold it.
    const schemas = [`t_${randomToken()}`, `t_${randomToken()}`];
    const opened = schemas.map((schema) => {
      const store = new JobStore({ databaseUrl: TEST_DATABASE_URL, sqlitePath: ':memory:', schema });
      onCleanup(() => dropSchema(schema));
      onCleanup(() => store.close());
      return store;
    });
    for (const store of opened) await store.migrate();
    for (const store of opened) expect(await store.list({ limit: 1 })).toEqual({ jobs: [], nextCursor: null });
  });
});
