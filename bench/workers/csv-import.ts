/**
 * The importer alone, in its own process, so that its peak RSS is its own:
 * opens the store (migrated beforehand, outside the timing), imports one CSV
 * file with the `csv.import` pipeline (csv-parse, Jira schema, batched SQL
 * writes) and prints one JSON line with the numbers.
 *
 * Environment: BENCH_CSV_PATH, BENCH_CSV_BATCH (default 1000), BENCH_CSV_PARSE
 * (`thread` or `main`), and the store's own variables (DATABASE_URL,
 * CELERITY_DB_SCHEMA, CELERITY_SQLITE_PATH).
 */
import { loadConfig } from '../../packages/celerity/src/config.ts';
import { JobStore } from '../../packages/celerity/src/store/job-store.ts';
import { importCsv, sqlRowWriter } from '../../examples/documents/workloads/csv/import.ts';
import { JIRA_HEADER_ALIASES, jiraRowSchema, jiraTable } from '../../examples/documents/workloads/csv/jira.ts';
import { countImported } from '../../examples/documents/workloads/csv/task.ts';
import { documentsTables } from '../../examples/documents/workloads/tables.ts';

const path = process.env.BENCH_CSV_PATH;
if (!path) {
  console.error('csv-import: BENCH_CSV_PATH is required');
  process.exit(2);
}
const config = loadConfig({ env: process.env });
const store = new JobStore({
  databaseUrl: config.databaseUrl,
  sqlitePath: config.sqlitePath,
  schema: config.databaseSchema,
});
await store.migrate();
const tables = await store.tables(documentsTables);
const rssBefore = process.memoryUsage().rss;
const jobId = 'bench-csv';
const summary = await importCsv({
  path,
  schema: jiraRowSchema,
  headerAliases: JIRA_HEADER_ALIASES,
  writer: sqlRowWriter(tables, jiraTable, jobId),
  batchSize: Number(process.env.BENCH_CSV_BATCH ?? '1000'),
  parseIn: process.env.BENCH_CSV_PARSE === 'main' ? 'main' : 'thread',
});
// maxRSS is in KiB: the process's peak, import included.
const peakRss = process.resourceUsage().maxRSS * 1024;
const stored = await countImported(tables, jobId);
await store.close();
console.log(
  JSON.stringify({
    records_processed: summary.records_processed,
    records_failed: summary.records_failed,
    stored,
    bytes: summary.bytes,
    duration_ms: summary.duration_ms,
    rows_per_s: (summary.records_processed / summary.duration_ms) * 1000,
    peak_rss_mb: peakRss / 2 ** 20,
    rss_before_import_mb: rssBefore / 2 ** 20,
  }),
);
