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
 * evaluates once per statement instead of once per row.
 */
export function migration(dialect: Dialect): Migration {
  const setting = `(select current_setting('${TENANT_SETTING}', true))`;
  const visible = sql.raw(`${setting} = '*' or (tenant is null and ${setting} = 'none') or (tenant is not null and ${setting} = ('t:' || tenant))`);
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
