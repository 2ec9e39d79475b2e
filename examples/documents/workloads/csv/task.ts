/**
 * `csv.import`: imports an uploaded Jira CSV export into `imported_records`,
 * reporting progress as it streams. See import.ts for how, jira.ts for what.
 */
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { ALL_TENANTS, defineTask, uploadRefSchema, type TableHandle, type Task, type TenantScope } from 'celerity';
import { sameTenant } from '../tenant.ts';
import { importCsv, sqlRowWriter, type BadRow } from './import.ts';
import { JIRA_HEADER_ALIASES, jiraRowSchema, jiraTable, type ImportedRecord } from './jira.ts';

export const csvImportInput = z.object({
  file: uploadRefSchema,
  /** Rows per SQL write. */
  batch_size: z.number().int().min(1).max(10_000).optional(),
});

export interface CsvImportResult {
  /** Data records read, good and bad. */
  records_processed: number;
  records_failed: number;
  /** The first 100 bad rows, by the line where their record starts. */
  bad_rows: BadRow[];
  duration_ms: number;
}

/**
 * The `csv.import` task, on the `imports` queue. `deps.store` gives the
 * handle on the app's (migrated) documents tables, which receive the rows,
 * each with the job's tenant.
 *
 * Bad rows are counted and reported, and do not fail the job; a file that
 * is not a usable CSV (missing columns, broken quoting) fails it at once
 * with a non-retryable error. A retried attempt re-reads the file and adds
 * only the rows the failed one had not written.
 */
export function csvImportTask(deps: { store: () => Promise<TableHandle> }): Task<z.input<typeof csvImportInput>, CsvImportResult> {
  return defineTask({
    name: 'csv.import',
    queue: 'imports',
    description: 'Imports a Jira CSV export (key, summary, status, assignee, created, description) into imported_records.',
    accepts: ['text/csv'],
    input: csvImportInput,
    handler: async ({ file, batch_size }, ctx): Promise<CsvImportResult> => {
      const store = await deps.store();
      const summary = await importCsv({
        path: file.path,
        schema: jiraRowSchema,
        headerAliases: JIRA_HEADER_ALIASES,
        writer: sqlRowWriter(store, jiraTable, ctx.jobId, { tenant: ctx.tenant }),
        onProgress: (p) => ctx.progress({ ...p, stage: p.total === undefined ? 'importing' : 'done' }),
        signal: ctx.signal,
        ...(batch_size ? { batchSize: batch_size } : {}),
      });
      ctx.log.info({ records_processed: summary.records_processed, records_failed: summary.records_failed, ms: summary.duration_ms }, 'csv imported');
      return {
        records_processed: summary.records_processed,
        records_failed: summary.records_failed,
        bad_rows: summary.bad_rows,
        duration_ms: summary.duration_ms,
      };
    },
  });
}

interface ImportsDatabase {
  // tenant: migration 0005_import_tenant; null for rows of jobs without a tenant and rows imported before it.
  imported_records: ImportedRecord & { tenant: string | null };
}

function imports(store: Pick<TableHandle, 'db'>): Kysely<ImportsDatabase> {
  // The jobs' Database type does not list the workloads' tables.
  return store.db as unknown as Kysely<ImportsDatabase>;
}

/**
 * How many rows a `csv.import` job has stored within `scope`: 0 for another
 * tenant's job, as for an unknown one. The default scope, every tenant's, is
 * for tooling that imported the rows itself (the benchmark); code handed a
 * job id by a caller passes the caller's scope (`tenantScopeOf(principal)`,
 * or a job's own tenant).
 */
export async function countImported(store: Pick<TableHandle, 'db' | 'dialect'>, jobId: string, scope: TenantScope = ALL_TENANTS): Promise<number> {
  let q = imports(store)
    .selectFrom('imported_records')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('job_id', '=', jobId);
  if (!scope.all) q = q.where(sameTenant(store.dialect, 'tenant', scope.tenant));
  const row = await q.executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * A `csv.import` job's rows in file order, from the line after `afterLine` (a
 * cursor), within `opts.scope` (see {@link countImported}): none for another
 * tenant's job.
 */
export async function listImported(store: Pick<TableHandle, 'db' | 'dialect'>, jobId: string, opts: { limit?: number; afterLine?: number; scope?: TenantScope } = {}): Promise<ImportedRecord[]> {
  const scope = opts.scope ?? ALL_TENANTS;
  let q = imports(store)
    .selectFrom('imported_records')
    .select(['job_id', 'line', 'key', 'summary', 'status', 'assignee', 'created_at', 'description'])
    .where('job_id', '=', jobId)
    .where('line', '>', opts.afterLine ?? 0);
  if (!scope.all) q = q.where(sameTenant(store.dialect, 'tenant', scope.tenant));
  const rows = await q
    .orderBy('line')
    .limit(opts.limit ?? 100)
    .execute();
  // pg returns bigint columns as numbers already (see db.ts); SQLite integers are numbers too.
  return rows.map((r) => ({ ...r, created_at: Number(r.created_at) }));
}
