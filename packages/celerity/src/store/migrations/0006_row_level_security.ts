import { type Kysely, type Migration, sql } from 'kysely';
import type { Dialect } from '../db.ts';
import { TENANT_SETTING } from '../tenant-scope.ts';

/**
 * Row-level security on `jobs` (PostgreSQL; SQLite has none, and the
 * migration does nothing there): defence in depth behind the tenant
 * conditions every query of the store adds itself. A row is visible, and
 * may be written, only within the scope the transaction set with
 * `set_config('celerity.tenant', …, true)` (see `withTenantScope`): `*`
 * every tenant, `t:<tenant>` one, `none` the jobs without a tenant; unset or
 * empty, none at all, so a query that forgot its scope returns nothing
 * rather than everyone's jobs.
 *
 * FORCE, because the role that runs the migrations owns the table and
 * would otherwise be exempt. Superusers and BYPASSRLS roles still are
 * (PostgreSQL's rule): `JobStore.rowSecurityEnforced()` tells.
 *
 * The setting is read through scalar subqueries, which PostgreSQL
 * evaluates once per statement instead of once per row. A CASE, not an OR
 * of comparisons: the planner estimates a CASE at half the rows and an OR
 * of comparisons with a parameter at about one percent, and on that
 * estimate it sorted a tenant's every row for a page of 50 instead of
 * reading 50 from the ordered index.
 */
export function migration(dialect: Dialect): Migration {
  const setting = `(select current_setting('${TENANT_SETTING}', true))`;
  const visible = sql.raw(`case ${setting} when '*' then true when 'none' then tenant is null else ${setting} = ('t:' || tenant) end`);
  return {
    async up(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      await sql`alter table jobs enable row level security`.execute(db);
      await sql`alter table jobs force row level security`.execute(db);
      await sql`create policy jobs_tenant_scope on jobs using (${visible}) with check (${visible})`.execute(db);
    },
    async down(db: Kysely<any>) {
      if (dialect !== 'postgres') return;
      await sql`drop policy if exists jobs_tenant_scope on jobs`.execute(db);
      await sql`alter table jobs no force row level security`.execute(db);
      await sql`alter table jobs disable row level security`.execute(db);
    },
  };
}
