import type { Kysely, Migration } from 'kysely';
import type { Dialect } from '../db.ts';

/** Placeholder, filled by the workloads work. */
export function migration(_dialect: Dialect): Migration {
  return {
    async up(_db: Kysely<any>) {},
  };
}
