import { sql, type RawBuilder } from 'kysely';
import type { Dialect, TaskContext, TenantScope } from 'celerity';

/**
 * The scope of what a job reads: its own tenant's rows (null: the rows
 * without a tenant), never another's, whoever submitted it (an admin key
 * included). An id in a job's input is the sender's to choose, so only the
 * job's tenant says whose rows it may reach.
 */
export function jobScope(ctx: Pick<TaskContext, 'tenant'>): TenantScope {
  return { all: false, tenant: ctx.tenant };
}

/**
 * A condition: `column` holds `tenant`, null matching null. `=` would never
 * match the rows without a tenant (null = null is not true), hence
 * `is not distinct from` on PostgreSQL and `IS` on SQLite.
 */
export function sameTenant(dialect: Dialect, column: string, tenant: string | null): RawBuilder<boolean> {
  const ref = sql.ref(column);
  return dialect === 'postgres' ? sql<boolean>`${ref} is not distinct from ${tenant}` : sql<boolean>`${ref} is ${tenant}`;
}
