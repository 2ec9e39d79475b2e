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
import { loadConfig } from '../../src/config.ts';
import { JobStore } from '../../src/store/job-store.ts';
import { importCsv, sqlRowWriter } from '../../src/workloads/csv/import.ts';
import { JIRA_HEADER_ALIASES, jiraRowSchema, jiraTable } from '../../src/workloads/csv/jira.ts';
import { countImported } from '../../src/workloads/csv/task.ts';

const path = process.env.BENCH_CSV_PATH;
if (!path) {
  console.error('csv-import: BENCH_CSV_PATH is required');
  process.exit(2);
}
const config = loadConfig({ env: process.env });
const store = new JobStore({
  databaseUrl: config.databaseUrl,
  sqlitePath: config.sqlitePath,
  ...(config.databaseSchema ? { schema: config.databaseSchema } : {}),
});
await store.migrate();
const rssBefore = process.memoryUsage().rss;
const jobId = 'bench-csv';
const summary = await importCsv({
  path,
  schema: jiraRowSchema,
  headerAliases: JIRA_HEADER_ALIASES,
  writer: sqlRowWriter(store, jiraTable, jobId),
  batchSize: Number(process.env.BENCH_CSV_BATCH ?? '1000'),
  parseIn: process.env.BENCH_CSV_PARSE === 'main' ? 'main' : 'thread',
});
// maxRSS is in KiB: the process's peak, import included.
const peakRss = process.resourceUsage().maxRSS * 1024;
const stored = await countImported(store, jobId);
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
