/**
 * `csv.import`: imports an uploaded Jira CSV export into `imported_records`,
 * reporting progress as it streams. See import.ts for how, jira.ts for what.
 */
import type { Kysely } from 'kysely';
import { z } from 'zod';
import { defineTask, uploadRefSchema, type TableHandle, type Task } from 'celerity';
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
 * handle on the app's (migrated) documents tables, which receive the rows.
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
        writer: sqlRowWriter(store, jiraTable, ctx.jobId),
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
  imported_records: ImportedRecord;
}

function imports(store: Pick<TableHandle, 'db'>): Kysely<ImportsDatabase> {
  // The jobs' Database type does not list the workloads' tables.
  return store.db as unknown as Kysely<ImportsDatabase>;
}

/** How many rows a `csv.import` job has stored. */
export async function countImported(store: Pick<TableHandle, 'db'>, jobId: string): Promise<number> {
  const row = await imports(store)
    .selectFrom('imported_records')
    .select((eb) => eb.fn.countAll<number | string>().as('n'))
    .where('job_id', '=', jobId)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** A `csv.import` job's rows in file order, from the line after `afterLine` (a cursor). */
export async function listImported(store: Pick<TableHandle, 'db'>, jobId: string, opts: { limit?: number; afterLine?: number } = {}): Promise<ImportedRecord[]> {
  const rows = await imports(store)
    .selectFrom('imported_records')
    .selectAll()
    .where('job_id', '=', jobId)
    .where('line', '>', opts.afterLine ?? 0)
    .orderBy('line')
    .limit(opts.limit ?? 100)
    .execute();
  // pg returns bigint columns as numbers already (see db.ts); SQLite integers are numbers too.
  return rows.map((r) => ({ ...r, created_at: Number(r.created_at) }));
}
