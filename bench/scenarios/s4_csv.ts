/**
 * s4_csv: the `csv.import` pipeline (csv-parse, Zod validation of the Jira
 * schema, batched writes into imported_records) on generated Jira exports of
 * 100k and 1M rows (quick: 20k), on SQLite and on PostgreSQL. Each import
 * runs alone in a child process (bench/workers/csv-import.ts), so that its
 * peak RSS is the importer's own; the file is generated beforehand by the
 * bench process. There is no BullMQ counterpart: the table shows the
 * targets (≥ 100,000 rows/s, peak RSS ≤ 250 MB) in the metric's name.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeJiraCsv } from '../../examples/documents/workloads/csv/generate.ts';
import { storeEnv, type StoreKind } from '../lib/env.ts';
import { now, round } from '../lib/measure.ts';
import { Proc } from '../lib/procs.ts';
import { withScope } from '../lib/scope.ts';
import type { Row, Scenario } from '../lib/types.ts';

const TARGET_ROWS_PER_S = 100_000;
const TARGET_PEAK_RSS_MB = 250;

interface WorkerOutput {
  records_processed: number;
  records_failed: number;
  stored: number;
  bytes: number;
  duration_ms: number;
  rows_per_s: number;
  peak_rss_mb: number;
  rss_before_import_mb: number;
}

function label(rows: number): string {
  return rows >= 1_000_000 ? `${rows / 1_000_000}M` : `${rows / 1_000}k`;
}

export const s4Csv: Scenario = {
  name: 's4_csv',
  title: 'csv.import of generated Jira exports (100k and 1M rows): rows/s and peak RSS of the importer',
  async run(ctx) {
    const sizes = ctx.quick ? [20_000] : [100_000, 1_000_000];
    const storeKinds: StoreKind[] = ['sqlite', 'postgres'];
    const dir = mkdtempSync(join(tmpdir(), 'celerity-bench-csv-'));
    ctx.scope.defer(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    const fields: Record<string, unknown> = { target_rows_per_s: TARGET_ROWS_PER_S, target_peak_rss_mb: TARGET_PEAK_RSS_MB };
    const rows: Row[] = [];
    const notes: string[] = [];
    for (const size of sizes) {
      const path = join(dir, `jira-${size}.csv`);
      // One bad row in 10,000, as a real export might have.
      const bad = Math.max(1, Math.round(size / 10_000));
      const t0 = now();
      const generated = await writeJiraCsv(path, { rows: size, badRows: bad, seed: 42 });
      ctx.log(`generated ${label(size)} rows (${round(generated.bytes / 2 ** 20)} MB, ${generated.lines} lines) in ${round(now() - t0)} ms`);
      for (const kind of storeKinds) {
        const out = await withScope(ctx.scope, async (scope) => {
          const env = storeEnv(ctx, scope, kind);
          ctx.log(`${kind}: importing ${label(size)} rows`);
          const proc = new Proc(scope, `csv-import-${kind}`, process.execPath, ['--conditions=celerity-source', '--import', 'tsx', 'bench/workers/csv-import.ts'], {
            env: env.childEnv({ BENCH_CSV_PATH: path }),
          });
          const stdout = await proc.result(Math.max(120_000, size / 2));
          return JSON.parse(stdout.trim().split('\n').at(-1)!) as WorkerOutput;
        });
        if (out.records_processed !== size || out.records_failed !== bad || out.stored !== size - bad) {
          throw new Error(`${kind} ${label(size)}: processed ${out.records_processed}, failed ${out.records_failed}, stored ${out.stored}; expected ${size}, ${bad}, ${size - bad}`);
        }
        ctx.log(`${kind} ${label(size)}: ${round(out.rows_per_s)} rows/s, peak RSS ${round(out.peak_rss_mb)} MB`);
        if (out.rows_per_s < TARGET_ROWS_PER_S) notes.push(`${kind} ${label(size)}: ${round(out.rows_per_s)} rows/s, below the ${TARGET_ROWS_PER_S} target`);
        if (out.peak_rss_mb > TARGET_PEAK_RSS_MB) notes.push(`${kind} ${label(size)}: peak RSS ${round(out.peak_rss_mb)} MB, above the ${TARGET_PEAK_RSS_MB} MB target`);
        fields[`${kind}_${label(size)}`] = {
          rows_per_s: round(out.rows_per_s),
          peak_rss_mb: round(out.peak_rss_mb),
          duration_ms: out.duration_ms,
          mb_per_s: round(out.bytes / 2 ** 20 / (out.duration_ms / 1000)),
          detail: { rows: size, bad_rows: out.records_failed, stored: out.stored, file_mb: round(out.bytes / 2 ** 20), rss_before_import_mb: round(out.rss_before_import_mb) },
        };
        rows.push(
          { metric: `${kind}: import ${label(size)} rows (target ≥ ${TARGET_ROWS_PER_S.toLocaleString('en-US')})`, unit: 'rows/s', celerity: out.rows_per_s },
          { metric: `${kind}: peak RSS at ${label(size)} rows (target ≤ ${TARGET_PEAK_RSS_MB})`, unit: 'MB', celerity: out.peak_rss_mb },
        );
      }
      rmSync(path, { force: true });
    }
    return { fields, rows, notes, params: { sizes, stores: storeKinds, batch_size: 1_000, bad_rows_per_10k: 1, parse: 'thread' } };
  },
};
