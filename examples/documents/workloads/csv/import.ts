/**
 * Streaming CSV import, independent of BullMQ (the `csv.import` task wraps
 * it, the benchmark runs it alone): the file is parsed by csv-parse, each
 * record validated against a Zod object schema whose keys are the column
 * names, and the good rows handed to a {@link RowWriter} in batches. Bad rows
 * are counted, and the first ones kept with their line numbers; they never
 * stop the import. A malformed file (missing columns, broken quoting) does,
 * with a non-retryable error.
 *
 * csv-parse runs in a worker thread by default (it is the slowest stage),
 * beside validation and the writes on the event loop.
 *
 * Memory does not grow with the file: at most one batch is being written
 * while the next one is validated, the parsing thread runs at most two
 * batches ahead, and while those are pending nothing more is read from the
 * file.
 */
import { pgJson, NonRetryableError, type Dialect } from 'celerity';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CsvError, parse } from 'csv-parse';
import { CompiledQuery, type Kysely } from 'kysely';
import type { z } from 'zod';

/** A validated row and the line of the source file where its record starts (1-based; the header is line 1). */
export interface ImportedRow<T> {
  line: number;
  value: T;
}

/** Where good rows go. A batch's write is awaited before the one after it starts. */
export interface RowWriter<T> {
  write(rows: ImportedRow<T>[]): Promise<void>;
}

export interface CellError {
  /** The schema's column name; null for an error of the whole record (wrong number of fields). */
  column: string | null;
  message: string;
}

export interface BadRow {
  /** Line of the source file where the record starts. */
  line: number;
  errors: CellError[];
}

export interface ImportProgress {
  /** Records read so far, good and bad. */
  records_processed: number;
  records_failed: number;
  /** Known once the whole file has been read. */
  total?: number;
  /** Estimated from the bytes parsed and the file's size. */
  percent: number;
  bytes_read: number;
}

export interface ImportSummary {
  /** Every data record read, good and bad (`records_imported + records_failed`). */
  records_processed: number;
  records_failed: number;
  /** Good rows handed to the writer (a re-run may find them already stored). */
  records_imported: number;
  /** The first `maxBadRows` bad rows, in file order. */
  bad_rows: BadRow[];
  bytes: number;
  duration_ms: number;
}

/** An object schema: its keys are the CSV's column names. */
export type RowSchema = z.ZodObject<z.ZodRawShape>;

export interface ImportCsvOptions<S extends RowSchema> {
  path: string;
  schema: S;
  /** Other header names for the schema's columns, lower-case (e.g. `'issue key': 'key'`). */
  headerAliases?: Readonly<Record<string, string>>;
  writer: RowWriter<z.output<S>>;
  /** Called at start, every `progressIntervalMs` while importing, and at the end (awaited there). Its errors are ignored. */
  onProgress?: (progress: ImportProgress) => unknown;
  progressIntervalMs?: number;
  /** Aborting stops the reading; the import then throws `signal.reason`. */
  signal?: AbortSignal;
  /** Rows per write. Default 1,000. */
  batchSize?: number;
  /** Bad rows kept with their errors. Default 100. */
  maxBadRows?: number;
  /** A record longer than this (characters) fails the file: it bounds memory against an unclosed quote. Default 1 MiB. */
  maxRecordSize?: number;
  /**
   * Where csv-parse runs: in a worker thread (default), beside validation and
   * writing, or on the event loop (`main`: no thread, half the throughput).
   */
  parseIn?: 'thread' | 'main';
}

/** The header lacks columns the schema requires, or the file is empty. */
export class CsvMissingColumnsError extends NonRetryableError {
  override readonly code = 'csv_missing_columns';
  readonly missing: string[];

  constructor(missing: string[], found: string[]) {
    super(found.length === 0 ? `The CSV file is empty: expected a header with ${missing.join(', ')}` : `The CSV header lacks required column(s) ${missing.join(', ')} (found: ${found.join(', ')})`);
    this.missing = missing;
  }
}

/** The file is not parseable CSV from some line on (broken quoting, oversized record). */
export class CsvMalformedError extends NonRetryableError {
  override readonly code = 'csv_malformed';
  readonly line: number | undefined;

  constructor(message: string, line: number | undefined, cause: unknown) {
    super(`The CSV file is malformed${line === undefined ? '' : ` near line ${line}`}: ${message}`, { cause });
    this.line = line;
  }
}

/** The uploaded file is gone (it is kept until the job's last attempt ends, so this is not transient). */
export class UploadMissingError extends NonRetryableError {
  override readonly code = 'upload_missing';

  constructor(path: string, cause: unknown) {
    super(`The uploaded file ${path} does not exist`, { cause });
  }
}

const DEFAULT_BATCH = 1_000;
const DEFAULT_BAD_ROWS = 100;
const DEFAULT_PROGRESS_MS = 250;
const DEFAULT_MAX_RECORD = 1024 * 1024;

/**
 * Imports a CSV file: header first, then one record per row, validated
 * against `schema` and written in batches of `batchSize`. Resolves with the
 * counts once every batch is written.
 *
 * @throws CsvMissingColumnsError, CsvMalformedError, UploadMissingError
 *   (non-retryable); the writer's errors as they are; `signal.reason` when
 *   aborted.
 */
export async function importCsv<S extends RowSchema>(opts: ImportCsvOptions<S>): Promise<ImportSummary> {
  const started = performance.now();
  const batchSize = Math.max(1, opts.batchSize ?? DEFAULT_BATCH);
  const maxBadRows = opts.maxBadRows ?? DEFAULT_BAD_ROWS;
  const { signal, writer } = opts;
  signal?.throwIfAborted();

  let size: number;
  try {
    size = (await stat(opts.path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UploadMissingError(opts.path, err);
    throw err;
  }

  const source: ParseSource = { path: opts.path, batchSize, maxRecordSize: opts.maxRecordSize ?? DEFAULT_MAX_RECORD };
  const batches = opts.parseIn === 'main' ? parseInline(source) : parseInThread(source);
  let processed = 0;
  let failed = 0;
  let imported = 0;
  let bytes = 0;
  const badRows: BadRow[] = [];
  const progress = (): ImportProgress => ({
    records_processed: processed,
    records_failed: failed,
    percent: size > 0 ? Math.min(99, Math.floor((bytes / size) * 100)) : 0,
    bytes_read: bytes,
  });
  const report = (p: ImportProgress): Promise<void> => {
    if (!opts.onProgress) return Promise.resolve();
    try {
      return Promise.resolve(opts.onProgress(p)).then(
        () => {},
        () => {},
      );
    } catch {
      return Promise.resolve();
    }
  };
  void report(progress());
  const timer = setInterval(() => void report(progress()), opts.progressIntervalMs ?? DEFAULT_PROGRESS_MS);
  timer.unref();

  // One write in flight while the next batch is validated: the database and
  // the parser work at the same time, and memory stays at a few batches.
  let inflight: Promise<void> | undefined;
  let batch: ImportedRow<z.output<S>>[] = [];
  const flush = async () => {
    if (inflight) await inflight;
    inflight = undefined;
    if (batch.length === 0) return;
    const rows = batch;
    batch = [];
    inflight = writer.write(rows).then(() => void (imported += rows.length));
    // Awaited before the next write or at the end; this only keeps a failure
    // from being reported as unhandled in between.
    inflight.catch(() => {});
  };

  try {
    let columns: Column[] | undefined;
    let width = 0;
    const row: Record<string, string> = {};
    for await (const parsed of batches) {
      bytes = parsed.bytes;
      const { records, lines } = parsed;
      for (let r = 0; r < records.length; r++) {
        if (signal?.aborted) throw signal.reason;
        const record = records[r]!;
        if (!columns) {
          columns = mapHeader(record, opts.schema, opts.headerAliases ?? {});
          width = record.length;
          continue;
        }
        processed++;
        let errors: CellError[];
        if (record.length !== width) {
          errors = [{ column: null, message: `expected ${width} fields, got ${record.length}` }];
        } else {
          for (const c of columns) row[c.name] = record[c.index]!;
          const result = opts.schema.safeParse(row);
          if (result.success) {
            batch.push({ line: lines[r]!, value: result.data });
            if (batch.length >= batchSize) await flush();
            continue;
          }
          errors = result.error.issues.map((i) => ({ column: i.path.length > 0 ? String(i.path[0]) : null, message: i.message }));
        }
        failed++;
        if (badRows.length < maxBadRows) badRows.push({ line: lines[r]!, errors });
      }
    }
    if (!columns) throw new CsvMissingColumnsError(requiredColumns(opts.schema), []);
    await flush();
    await flush(); // the last batch's own write
  } catch (err) {
    // Stop the source (its thread, its file) before waiting for the database.
    await batches.return(undefined).catch(() => {});
    if (inflight) await inflight.catch(() => {});
    if (signal?.aborted) throw signal.reason;
    throw err;
  } finally {
    clearInterval(timer);
  }
  await report({ records_processed: processed, records_failed: failed, total: processed, percent: 100, bytes_read: bytes });
  return { records_processed: processed, records_failed: failed, records_imported: imported, bad_rows: badRows, bytes, duration_ms: Math.round(performance.now() - started) };
}

// ---------------------------------------------------------------------------
// Parsing: records in batches, each with the line where it starts

interface ParseSource {
  path: string;
  batchSize: number;
  maxRecordSize: number;
}

/** Parsed records (the header first), empty lines left out. */
interface RecordBatch {
  records: string[][];
  lines: number[];
  /** Bytes of the file parsed so far. */
  bytes: number;
}

function parserOptions(source: ParseSource) {
  return {
    bom: true,
    // Checked by the importer, so that a short or long record is a bad row, not the end of the import.
    relax_column_count: true,
    // Kept, so that every physical line is accounted for in the line numbers.
    skip_empty_lines: false,
    // Bounds memory against an unclosed quote swallowing the rest of the file.
    max_record_size: source.maxRecordSize,
  };
}

function malformed(err: { message: string; lines?: number | undefined }): CsvMalformedError {
  return new CsvMalformedError(err.message, err.lines, err);
}

/** csv-parse on the event loop. */
async function* parseInline(source: ParseSource): AsyncGenerator<RecordBatch, void, undefined> {
  const file = createReadStream(source.path, { highWaterMark: 256 * 1024 });
  const parser = parse(parserOptions(source));
  file.on('error', (err) => parser.destroy(err));
  file.pipe(parser);
  let line = 1;
  let records: string[][] = [];
  let lines: number[] = [];
  try {
    for await (const record of parser as AsyncIterable<string[]>) {
      const start = line;
      line += linesSpanned(record);
      if (record.length === 1 && record[0] === '') continue;
      records.push(record);
      lines.push(start);
      if (records.length >= source.batchSize) {
        yield { records, lines, bytes: parser.info.bytes };
        records = [];
        lines = [];
      }
    }
  } catch (err) {
    if (err instanceof CsvError || /^CSV_/.test(String((err as { code?: unknown }).code))) throw malformed(err as CsvError & { lines?: number });
    throw err;
  } finally {
    file.destroy();
    parser.destroy();
  }
  yield { records, lines, bytes: parser.info.bytes };
}

/** Batches the parsing thread may send ahead of the importer. */
const THREAD_WINDOW = 2;

/**
 * The parsing thread. csv-parse is the slowest stage of an import (it reads
 * byte by byte); in a thread it runs beside validation and the database
 * writes instead of before them. It stays at most THREAD_WINDOW batches
 * ahead: the importer asks for each next one.
 */
const THREAD_SOURCE = `
import { parentPort, workerData } from 'node:worker_threads';
import { createReadStream } from 'node:fs';
const mod = await import(workerData.csvParse);
const parse = mod.parse ?? mod.default.parse;
const { path, batchSize, options } = workerData;
let credits = workerData.window;
let wake;
parentPort.on('message', () => { credits++; wake?.(); });
const linesSpanned = ${linesSpanned.toString()};
const file = createReadStream(path, { highWaterMark: 256 * 1024 });
const parser = parse(options);
file.on('error', (err) => parser.destroy(err));
file.pipe(parser);
let line = 1;
let records = [];
let lines = [];
const send = async () => {
  while (credits === 0) await new Promise((resolve) => (wake = resolve));
  credits--;
  parentPort.postMessage({ type: 'batch', records, lines, bytes: parser.info.bytes });
  records = [];
  lines = [];
};
try {
  for await (const record of parser) {
    const start = line;
    line += linesSpanned(record);
    if (record.length === 1 && record[0] === '') continue;
    records.push(record);
    lines.push(start);
    if (records.length >= batchSize) await send();
  }
  await send();
  parentPort.postMessage({ type: 'end' });
} catch (err) {
  parentPort.postMessage({ type: 'error', csv: typeof err?.code === 'string' && err.code.startsWith('CSV_'), message: String(err?.message ?? err), code: err?.code, lines: err?.lines });
}
`;

type FromParser = { type: 'batch'; records: string[][]; lines: number[]; bytes: number } | { type: 'end' } | { type: 'error'; csv: boolean; message: string; code?: string; lines?: number };

/** csv-parse in a worker thread. */
async function* parseInThread(source: ParseSource): AsyncGenerator<RecordBatch, void, undefined> {
  const csvParse = pathToFileURL(createRequire(import.meta.url).resolve('csv-parse')).href;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(THREAD_SOURCE)}`), {
    workerData: { csvParse, path: source.path, batchSize: source.batchSize, options: parserOptions(source), window: THREAD_WINDOW },
    // The thread holds a few batches and the file's read buffers: a small
    // heap keeps the garbage it makes from inflating the process's RSS.
    resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 + Math.ceil((4 * source.maxRecordSize) / 2 ** 20) },
  });
  const inbox: (FromParser | Error)[] = [];
  let wake: (() => void) | undefined;
  const push = (msg: FromParser | Error) => {
    inbox.push(msg);
    wake?.();
  };
  worker.on('message', push);
  worker.on('error', push);
  worker.on('exit', (code) => push(new Error(`The CSV parsing thread exited (code ${code})`)));
  try {
    for (;;) {
      while (inbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      const msg = inbox.shift()!;
      if (msg instanceof Error) throw msg;
      if (msg.type === 'end') return;
      if (msg.type === 'error') {
        if (msg.csv) throw malformed(msg);
        throw Object.assign(new Error(msg.message), { code: msg.code });
      }
      yield msg;
      worker.postMessage('more');
    }
  } finally {
    worker.removeAllListeners();
    await worker.terminate();
  }
}

interface Column {
  name: string;
  index: number;
}

function requiredColumns(schema: RowSchema): string[] {
  return Object.entries(schema.shape)
    .filter(([, field]) => !(field as z.ZodType).safeParse(undefined).success)
    .map(([name]) => name);
}

/** Maps the schema's columns to their positions in the header; throws if a required one is missing. */
function mapHeader(header: string[], schema: RowSchema, aliases: Readonly<Record<string, string>>): Column[] {
  const names = header.map((h) => {
    const name = h.trim().toLowerCase();
    return aliases[name] ?? name;
  });
  const columns: Column[] = [];
  for (const name of Object.keys(schema.shape)) {
    const index = names.indexOf(name);
    if (index >= 0) columns.push({ name, index });
  }
  const missing = requiredColumns(schema).filter((name) => !columns.some((c) => c.name === name));
  if (missing.length > 0) throw new CsvMissingColumnsError(missing, header);
  return columns;
}

/**
 * Physical lines a record covers: its own plus the line breaks inside its
 * quoted fields (CRLF counting once, as an editor shows it).
 */
function linesSpanned(record: string[]): number {
  let lines = 1;
  for (const field of record) {
    for (let i = field.indexOf('\n'); i !== -1; i = field.indexOf('\n', i + 1)) lines++;
    // Lone CRs are line breaks too; a CR before an LF was counted with it.
    for (let i = field.indexOf('\r'); i !== -1; i = field.indexOf('\r', i + 1)) if (field.charCodeAt(i + 1) !== 10) lines++;
  }
  return lines;
}

// ---------------------------------------------------------------------------
// SQL writer

/** How validated rows map to a table keyed by (job_id, line). */
export interface TableSpec<T> {
  table: string;
  /** The other columns, in the order of `values`, with their PostgreSQL array element types. */
  columns: readonly { name: string; pgType: 'text' | 'bigint' | 'integer' | 'boolean' | 'double precision' }[];
  values(row: T): unknown[];
}

/** What the writer needs of a store (a `TableHandle` has it). */
export interface SqlTarget {
  db: Kysely<any>;
  dialect: Dialect;
}

// SQLite's default SQLITE_MAX_VARIABLE_NUMBER (since 3.32).
const SQLITE_MAX_PARAMS = 32_766;

export interface SqlRowWriterOptions {
  /**
   * The job's tenant (null: none), written to every row's `tenant` column so
   * that reads can be held to it. Left out: no `tenant` column is written
   * (a table without one, or a run outside any job).
   */
  tenant?: string | null | undefined;
}

/**
 * Writes a job's rows into `spec.table`, keyed by (job_id, line); rows already
 * there are left as they are, so a retried attempt adds nothing. One
 * statement per batch: a multi-row INSERT on SQLite, `INSERT … SELECT FROM
 * json_to_recordset($json)` on PostgreSQL. The SQL text is built
 * by hand (and cached per batch length): the query builder would cost more
 * CPU than the database spends on the rows.
 */
export function sqlRowWriter<T>(target: SqlTarget, spec: TableSpec<T>, jobId: string, opts: SqlRowWriterOptions = {}): RowWriter<T> {
  const withTenant = opts.tenant !== undefined;
  const tenant = opts.tenant ?? null;
  const names = ['job_id', 'line', ...(withTenant ? ['tenant'] : []), ...spec.columns.map((c) => c.name)].map(quoteId).join(', ');
  const table = quoteId(spec.table);
  if (target.dialect === 'postgres') {
    // One JSON parameter, unpacked by json_to_recordset: JSON.stringify is
    // native, where pg's escaping of one text array per column cost the main
    // thread more than the database spent on the rows.
    const fields = spec.columns.map((c, i) => `c${i} ${c.pgType}`).join(', ');
    const picks = spec.columns.map((_, i) => `x.c${i}`).join(', ');
    const text = `INSERT INTO ${table} (${names}) SELECT $1::text, x.l, ${withTenant ? '$3::text, ' : ''}${picks} FROM json_to_recordset($2::json) AS x(l integer, ${fields}) ON CONFLICT (job_id, line) DO NOTHING`;
    const keys = spec.columns.map((_, i) => `c${i}`);
    return {
      async write(rows) {
        if (rows.length === 0) return;
        const records = new Array<Record<string, unknown>>(rows.length);
        for (let r = 0; r < rows.length; r++) {
          const values = spec.values(rows[r]!.value);
          const record: Record<string, unknown> = { l: rows[r]!.line };
          for (let c = 0; c < keys.length; c++) record[keys[c]!] = values[c];
          records[r] = record;
        }
        await target.db.executeQuery(CompiledQuery.raw(text, withTenant ? [jobId, pgJson(records), tenant] : [jobId, pgJson(records)]));
      },
    };
  }
  const width = spec.columns.length + (withTenant ? 3 : 2);
  const perStatement = Math.floor(SQLITE_MAX_PARAMS / width);
  const tuple = `(${new Array(width).fill('?').join(', ')})`;
  const texts = new Map<number, string>();
  const textFor = (n: number) => {
    let text = texts.get(n);
    if (!text) {
      text = `INSERT INTO ${table} (${names}) VALUES ${new Array(n).fill(tuple).join(', ')} ON CONFLICT (job_id, line) DO NOTHING`;
      // Batches are usually all the same size, plus the last one.
      if (texts.size > 8) texts.clear();
      texts.set(n, text);
    }
    return text;
  };
  return {
    async write(rows) {
      for (let from = 0; from < rows.length; from += perStatement) {
        const chunk = rows.slice(from, from + perStatement);
        const params: unknown[] = [];
        for (const row of chunk) {
          if (withTenant) params.push(jobId, row.line, tenant, ...spec.values(row.value));
          else params.push(jobId, row.line, ...spec.values(row.value));
        }
        // Each statement is atomic and idempotent: no transaction needed across chunks.
        await target.db.executeQuery(CompiledQuery.raw(textFor(chunk.length), params));
      }
    },
  };
}

function quoteId(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
