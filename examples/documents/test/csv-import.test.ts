import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { App } from 'celerity';
import type { TableHandle } from 'celerity';
import type { UploadRef } from 'celerity';
import { writeJiraCsv, type JiraCsvRow } from '../workloads/csv/generate.ts';
import { CsvMalformedError, CsvMissingColumnsError, importCsv, sqlRowWriter, UploadMissingError, type ImportCsvOptions, type ImportProgress, type RowWriter } from '../workloads/csv/import.ts';
import { JIRA_HEADER_ALIASES, jiraRowSchema, jiraTable, parseIsoDate, type JiraRow } from '../workloads/csv/jira.ts';
import { countImported, csvImportTask, listImported } from '../workloads/csv/task.ts';
import { onCleanup, openTestApp, randomToken, startWorker, stores, useCleanup, type StoreKind } from '../../../packages/celerity/test/helpers.ts';
import { documentsTables } from '../workloads/tables.ts';

useCleanup();

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'celerity-csv-'));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Where POST /v1/uploads would have put a file: `<uploadDir>/<upload_id>/<filename>` (the worker checks it). */
function uploadPath(app: App, filename: string): string {
  const dir = join(resolve(app.config.uploadDir), randomToken(13).slice(0, 26));
  mkdirSync(dir, { recursive: true });
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, filename);
}

function uploadRef(path: string): UploadRef {
  return { upload_id: basename(dirname(path)), path, filename: basename(path), content_type: 'text/csv', size: statSync(path).size };
}

/** An app whose store is migrated, with the csv.import task wired to it. */
async function appFor(kind: StoreKind): Promise<{ app: App; store: TableHandle }> {
  let app!: App;
  const task = csvImportTask({ store: () => app.tables(documentsTables) });
  app = await openTestApp(kind, { tasks: [task], tables: [documentsTables] });
  return { app, store: await app.tables(documentsTables) };
}

function run(store: TableHandle, jobId: string, path: string, extra: Partial<ImportCsvOptions<typeof jiraRowSchema>> = {}) {
  return importCsv({ path, schema: jiraRowSchema, headerAliases: JIRA_HEADER_ALIASES, writer: sqlRowWriter(store, jiraTable, jobId), ...extra });
}

const TRICKY = [
  'Issue key,Summary,Status,Assignee,Created,Description',
  'CEL-1,"Crash, then hang",Done,Ada Lovelace,2024-03-05T14:22:01Z,"He said ""no"", then:',
  'line two, with a comma',
  '',
  'line four after a blank one"',
  '',
  'CEL-2,Plain,To Do,,2024-03-05,',
  'CEL-3,Bad status,Nope,Grace Hopper,2024-03-05,"multi',
  'line"',
  'CEL-4,"Quote "" only",In Progress,  Alan Turing  ,2024-02-29 10:00:00+01:00,"crlf\r\ninside"',
  'CEL-5,Short row,Done',
  'CEL-6,Bad date,Done,,2023-02-29,x',
  'CEL-7,Last,Done,Barbara Liskov,2024-01-01T00:00:00.5Z,"ends the file, no newline"',
].join('\n');

describe('parseIsoDate', () => {
  it('reads ISO dates and rejects impossible ones', () => {
    expect(parseIsoDate('2024-03-05')).toBe(Date.UTC(2024, 2, 5));
    expect(parseIsoDate('2024-03-05T14:22:01.123Z')).toBe(Date.UTC(2024, 2, 5, 14, 22, 1, 123));
    expect(parseIsoDate('2024-03-05 14:22+02:00')).toBe(Date.UTC(2024, 2, 5, 12, 22));
    for (const bad of ['2023-02-29', '2024-13-01', '2024-01-01T24:00', 'yesterday', '05/03/2024', '']) expect(parseIsoDate(bad), bad).toBeNull();
  });
});

describe.each(stores)('csv import (%s store)', (kind) => {
  it.each(['thread', 'main'] as const)('stores good rows exactly and reports bad ones by line (parse in %s)', async (parseIn) => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'tricky.csv');
    writeFileSync(path, TRICKY);
    const summary = await run(store, 'job-tricky', path, { parseIn });
    expect(summary).toMatchObject({ records_processed: 7, records_failed: 3, records_imported: 4 });
    expect(summary.bad_rows).toEqual([
      { line: 8, errors: [{ column: 'status', message: expect.stringContaining('Nope') }] },
      { line: 12, errors: [{ column: null, message: 'expected 6 fields, got 3' }] },
      { line: 13, errors: [{ column: 'created', message: expect.stringContaining('2023-02-29') }] },
    ]);
    const rows = await listImported(store, 'job-tricky');
    expect(rows).toEqual([
      {
        job_id: 'job-tricky',
        line: 2,
        key: 'CEL-1',
        summary: 'Crash, then hang',
        status: 'Done',
        assignee: 'Ada Lovelace',
        created_at: Date.UTC(2024, 2, 5, 14, 22, 1),
        description: 'He said "no", then:\nline two, with a comma\n\nline four after a blank one',
      },
      { job_id: 'job-tricky', line: 7, key: 'CEL-2', summary: 'Plain', status: 'To Do', assignee: null, created_at: Date.UTC(2024, 2, 5), description: '' },
      { job_id: 'job-tricky', line: 10, key: 'CEL-4', summary: 'Quote " only', status: 'In Progress', assignee: 'Alan Turing', created_at: Date.UTC(2024, 1, 29, 9), description: 'crlf\r\ninside' },
      {
        job_id: 'job-tricky',
        line: 14,
        key: 'CEL-7',
        summary: 'Last',
        status: 'Done',
        assignee: 'Barbara Liskov',
        created_at: Date.UTC(2024, 0, 1, 0, 0, 0, 500),
        description: 'ends the file, no newline',
      },
    ]);
  });

  it('imports a generated export: every value, and the bad rows at their lines', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'gen.csv');
    const expected = new Map<string, JiraCsvRow & { line: number }>();
    const info = await writeJiraCsv(path, {
      rows: 3_000,
      badRows: 30,
      seed: 7,
      jiraHeaders: true,
      onRow: (row, { line, bad }) => void (bad ? undefined : expected.set(row.key, { ...row, line })),
    });
    expect(info.bad).toHaveLength(30);
    // The descriptions' line breaks push records off their index.
    expect(info.lines).toBeGreaterThan(3_500);
    const summary = await run(store, 'job-gen', path, { batchSize: 250 });
    expect(summary).toMatchObject({ records_processed: 3_000, records_failed: 30, records_imported: 2_970 });
    expect(summary.bad_rows.map((b) => b.line)).toEqual(info.bad.map((b) => b.line));
    expect(summary.bad_rows.map((b) => b.errors.map((e) => e.column))).toEqual(info.bad.map((b) => [b.column]));
    expect(await countImported(store, 'job-gen')).toBe(2_970);
    const stored = await listImported(store, 'job-gen', { limit: 10_000 });
    expect(stored).toHaveLength(2_970);
    for (const row of stored) {
      const want = expected.get(row.key)!;
      expect(row).toEqual({
        job_id: 'job-gen',
        line: want.line,
        key: want.key,
        summary: want.summary,
        status: want.status,
        assignee: want.assignee || null,
        created_at: Date.parse(want.created),
        description: want.description,
      });
    }
    expect(stored.some((r) => /,/.test(r.description) && /"/.test(r.description) && /\n/.test(r.description))).toBe(true);
  });

  it('stores a field holding a NUL byte (as U+FFFD on PostgreSQL, whose text cannot hold it) with the rest of its batch', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'nul.csv');
    writeFileSync(path, ['Issue key,Summary,Status,Assignee,Created,Description', 'CEL-1,A,Done,,2024-01-01,bin\u0000ary', 'CEL-2,B,Done,,2024-01-02,plain'].join('\n'));
    expect(await run(store, 'job-nul', path)).toMatchObject({ records_imported: 2, records_failed: 0 });
    const rows = await listImported(store, 'job-nul');
    expect(rows.map((r) => r.description)).toEqual([kind === 'postgres' ? 'bin\uFFFDary' : 'bin\u0000ary', 'plain']);
  });

  it('keeps the first 100 bad rows and counts them all', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'bad.csv');
    const info = await writeJiraCsv(path, { rows: 1_000, badRows: 250, seed: 3 });
    const summary = await run(store, 'job-bad', path);
    expect(summary.records_failed).toBe(250);
    expect(summary.bad_rows).toHaveLength(100);
    expect(summary.bad_rows.map((b) => b.line)).toEqual(info.bad.slice(0, 100).map((b) => b.line));
    expect(await countImported(store, 'job-bad')).toBe(750);
  });

  it('reports progress while importing, then the total', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'progress.csv');
    await writeJiraCsv(path, { rows: 2_000, badRows: 5 });
    const seen: ImportProgress[] = [];
    const inner = sqlRowWriter(store, jiraTable, 'job-progress');
    const slow: RowWriter<JiraRow> = {
      write: async (rows) => {
        await new Promise((r) => setTimeout(r, 15));
        return inner.write(rows);
      },
    };
    await run(store, 'job-progress', path, { writer: slow, batchSize: 100, progressIntervalMs: 20, onProgress: (p) => void seen.push(p) });
    expect(seen.length).toBeGreaterThan(5);
    const counts = seen.map((p) => p.records_processed);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(seen.some((p) => p.records_processed > 0 && p.records_processed < 2_000 && p.total === undefined && p.percent > 0 && p.percent < 100)).toBe(true);
    expect(seen.at(-1)).toEqual({ records_processed: 2_000, records_failed: 5, total: 2_000, percent: 100, bytes_read: statSync(path).size });
  });

  it('does not duplicate rows when an import is retried or re-run', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'retry.csv');
    await writeJiraCsv(path, { rows: 2_000, badRows: 10 });
    const inner = sqlRowWriter(store, jiraTable, 'job-retry');
    let batches = 0;
    const flaky: RowWriter<JiraRow> = {
      write: async (rows) => {
        if (++batches === 4) throw new Error('connection reset');
        return inner.write(rows);
      },
    };
    await expect(run(store, 'job-retry', path, { writer: flaky, batchSize: 300 })).rejects.toThrow('connection reset');
    const partial = await countImported(store, 'job-retry');
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(1_990);
    const again = await run(store, 'job-retry', path);
    expect(again).toMatchObject({ records_processed: 2_000, records_failed: 10 });
    expect(await countImported(store, 'job-retry')).toBe(1_990);
    await run(store, 'job-retry', path, { batchSize: 77 });
    expect(await countImported(store, 'job-retry')).toBe(1_990);
  });

  it('stops on cancellation and throws the signal reason', async () => {
    const { store } = await appFor(kind);
    const path = join(tempDir(), 'cancel.csv');
    await writeJiraCsv(path, { rows: 5_000 });
    const controller = new AbortController();
    const inner = sqlRowWriter(store, jiraTable, 'job-cancel');
    let batches = 0;
    const writer: RowWriter<JiraRow> = {
      write: async (rows) => {
        if (++batches === 2) controller.abort(new Error('cancelled by test'));
        return inner.write(rows);
      },
    };
    await expect(run(store, 'job-cancel', path, { writer, batchSize: 200, signal: controller.signal })).rejects.toThrow('cancelled by test');
    const stored = await countImported(store, 'job-cancel');
    expect(stored).toBeGreaterThan(0);
    expect(stored).toBeLessThan(1_000);
    expect(batches).toBeLessThan(5);
  });

  it('fails a file that is not a usable CSV with a non-retryable error', async () => {
    const { store } = await appFor(kind);
    const dir = tempDir();
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const missing = await run(store, 'job-x', write('missing.csv', 'key,summary,assignee\nCEL-1,a,b\n')).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(CsvMissingColumnsError);
    expect(missing).toMatchObject({ code: 'csv_missing_columns', missing: ['status', 'created'] });
    expect((missing as Error).message).toContain('status, created');
    await expect(run(store, 'job-x', write('empty.csv', ''))).rejects.toMatchObject({ code: 'csv_missing_columns' });
    const broken = await run(store, 'job-x', write('broken.csv', 'key,summary,status,assignee,created,description\nCEL-1,"a"b,Done,,2024-01-01,x\n')).catch((e: unknown) => e);
    expect(broken).toBeInstanceOf(CsvMalformedError);
    expect(broken).toMatchObject({ code: 'csv_malformed', line: 2 });
    await expect(run(store, 'job-x', join(dir, 'nope.csv'))).rejects.toBeInstanceOf(UploadMissingError);
    expect(await countImported(store, 'job-x')).toBe(0);
  });

  it('runs csv.import through a worker: result, progress and rows', async () => {
    const { app, store } = await appFor(kind);
    await startWorker(app, { queues: ['imports'] });
    const path = uploadPath(app, 'jira.csv');
    const info = await writeJiraCsv(path, { rows: 5_000, badRows: 7, seed: 11 });
    const handle = await app.enqueueByName('csv.import', { file: uploadRef(path) });
    const done = await handle.wait({ timeoutMs: 30_000, pollMs: 50 });
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.result).toMatchObject({ records_processed: 5_000, records_failed: 7, duration_ms: expect.any(Number) });
    expect((done.result as { bad_rows: { line: number }[] }).bad_rows.map((b) => b.line)).toEqual(info.bad.map((b) => b.line));
    expect(done.progress).toMatchObject({ records_processed: 5_000, records_failed: 7, total: 5_000, percent: 100 });
    expect(await countImported(store, handle.id)).toBe(4_993);

    // A file without the required columns fails the job at once, without retries.
    const badPath = uploadPath(app, 'missing-columns.csv');
    writeFileSync(badPath, 'key,summary\nCEL-1,x\n');
    const bad = await app.enqueueByName('csv.import', { file: uploadRef(badPath) });
    const failed = await bad.wait({ timeoutMs: 15_000, pollMs: 50 });
    expect(failed.status).toBe('failed');
    expect(failed.attempts).toBe(1);
    expect(failed.error?.message).toContain('lacks required column(s) status, created');
  });
});
