import type { PostgresPool } from 'kysely';
import pg from 'pg';

const INT8_OID = 20;

/**
 * A PostgreSQL pool whose connections see `schema` first (and only). Typed
 * as Kysely's pool interface, not `pg.Pool`: pg's types come from
 * `@types/pg`, a devDependency, and the shipped `.d.ts` must compile without it.
 */
export function postgresPool(databaseUrl: string, schema: string, max = 10): PostgresPool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max,
    // bigint columns hold epoch ms, well inside Number's safe range.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
    },
    // Unqualified names resolve in this schema only: Celerity never reads or
    // writes a table of the same name elsewhere (say, a user's public.jobs).
    options: `-c search_path=${schema}`,
  });
  // An idle client that loses its server emits 'error' on the pool; without a
  // listener that would crash the process. The next query reports it.
  pool.on('error', () => {});
  return pool;
}
