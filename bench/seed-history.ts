/**
 * Seeds a job history straight into Celerity's SQL store, for the search
 * benchmark (scenario history_search) or by hand:
 *
 *   npx tsx --conditions=celerity-source bench/seed-history.ts --rows 1000000 --sqlite /tmp/h.db
 *   npx tsx --conditions=celerity-source bench/seed-history.ts --rows 1000000 --database-url postgres://root@127.0.0.1:5432/test --schema hist_1m
 *
 * The store is migrated first (so the rows sit under Celerity's real
 * indexes), then its secondary indexes are dropped, the rows written in
 * batches of multi-row inserts in one transaction per batch (prepared
 * statements on SQLite, `unnest` of column arrays on PostgreSQL), and the
 * indexes rebuilt from their own definitions (and the table vacuumed and
 * analysed on PostgreSQL, as autovacuum would): a sorted build is several times faster than maintaining ten indexes row by
 * row, and ends in the same state.
 *
 * The rows look like a month of a real service's jobs (seeded, so every run
 * writes the same history): 8 tasks on 4 queues, 40 tenants (a few large,
 * many small) and jobs without one, 2 API keys per tenant, mostly completed
 * with failures, cancellations and a live tail of queued and running jobs,
 * error messages and types from real-looking templates, JSON inputs with ids
 * (`ticket_id`, `customer.id`, `document_id`...) and results.
 */
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { JobStore } from '../packages/celerity/src/store/job-store.ts';
import type { JobsTable } from '../packages/celerity/src/store/db.ts';
import { seededRandom } from '../packages/celerity/src/seeded-random.ts';
import { newJobId } from '../packages/celerity/src/ids.ts';

const DAY = 24 * 3600 * 1000;

/** The tasks, their queues, and how their inputs and results look. */
const TASKS: { name: string; queue: string; weight: number; input: (i: number, r: () => number) => unknown; result: (i: number, r: () => number) => unknown }[] = [
  {
    name: 'ticket.enhance',
    queue: 'tickets',
    weight: 30,
    input: (i, r) => ({ ticket_id: `T-${i % 200_000}`, priority: pick(r, ['low', 'normal', 'high']), customer: { id: `c-${Math.floor(r() * 50_000)}` } }),
    result: (_i, r) => ({ summary_tokens: Math.floor(r() * 400), labels: ['billing', 'bug'].slice(0, 1 + Math.floor(r() * 2)) }),
  },
  {
    name: 'csv.import',
    queue: 'imports',
    weight: 10,
    input: (i, r) => ({ upload_id: `u-${i.toString(36)}`, format: 'jira', dry_run: r() < 0.1 }),
    result: (_i, r) => ({ rows: Math.floor(r() * 100_000), rejected: Math.floor(r() * 20) }),
  },
  {
    name: 'pdf.ingest',
    queue: 'documents',
    weight: 15,
    input: (i, r) => ({ document_id: `d-${i % 300_000}`, language: pick(r, ['en', 'fr', 'de']) }),
    result: (_i, r) => ({ pages: 1 + Math.floor(r() * 300), chunks: Math.floor(r() * 2000) }),
  },
  {
    name: 'mail.send',
    queue: 'default',
    weight: 25,
    input: (i, r) => ({ to: `user${Math.floor(r() * 100_000)}@example.com`, template: pick(r, ['welcome', 'reset', 'invoice']), message_id: `m-${i}` }),
    result: () => ({ accepted: true }),
  },
  {
    name: 'reports.daily',
    queue: 'default',
    weight: 5,
    input: (_i, r) => ({ day: `2026-11-${String(1 + Math.floor(r() * 30)).padStart(2, '0')}` }),
    result: (_i, r) => ({ bytes: Math.floor(r() * 1e7) }),
  },
  {
    name: 'assessment.evaluate',
    queue: 'assessment',
    weight: 8,
    input: (i, r) => ({ assessment_id: `a-${i % 50_000}`, rubric: pick(r, ['v1', 'v2']) }),
    result: (_i, r) => ({ score: Math.round(r() * 100), passed: r() < 0.7 }),
  },
  { name: 'webhook.deliver', queue: 'default', weight: 5, input: (i) => ({ event_id: `e-${i}`, url: 'https://hooks.example.com/in' }), result: (_i, r) => ({ status: pick(r, [200, 200, 204]) }) },
  { name: 'celerity.purge', queue: 'default', weight: 2, input: () => ({}), result: (_i, r) => ({ deleted: Math.floor(r() * 5000) }) },
];

const ERRORS: { type: string; message: (i: number, r: () => number) => string }[] = [
  { type: 'Error', message: (i) => `Ticket T-${i % 200_000} not found in the helpdesk` },
  { type: 'FetchError', message: (_i, r) => `ECONNRESET while calling https://api.example.com/v2/items/${Math.floor(r() * 1e6)}` },
  { type: 'ValidationError', message: (_i, r) => `Invalid CSV header at line ${1 + Math.floor(r() * 500)}: expected "Issue key"` },
  { type: 'TimeLimitExceeded', message: () => 'hard time limit of 30000 ms exceeded' },
  { type: 'RateLimitError', message: (_i, r) => `429 Too Many Requests from the LLM provider (retry after ${Math.floor(r() * 60)} s)` },
  { type: 'TypeError', message: () => "Cannot read properties of undefined (reading 'pages')" },
  { type: 'PdfError', message: (i) => `Document d-${i % 300_000} is encrypted; no text layer` },
];

export const SEED_TENANTS = 40;

export function tenantName(t: number): string {
  return `tenant-${String(t).padStart(2, '0')}`;
}

/** The public id of the `k`-th key (0 or 1) of a tenant (or of the jobs without one, t = -1). */
export function keyIdOf(t: number, k: number): string {
  return `k${String(t + 1).padStart(2, '0')}${k}`.padEnd(16, 'x');
}

function pick<T>(r: () => number, items: readonly T[]): T {
  return items[Math.floor(r() * items.length)]!;
}

/** Tenant index, skewed: a few tenants own most jobs; -1 is no tenant. */
function tenantOf(r: () => number): number {
  const x = r();
  if (x < 0.1) return -1;
  return Math.min(SEED_TENANTS - 1, Math.floor(SEED_TENANTS * ((x - 0.1) / 0.9) ** 3));
}

const TASK_WEIGHTS = TASKS.reduce((sum, t) => sum + t.weight, 0);

/** The `i`-th of `n` rows of a history that ends at `end`, one month long. */
function row(i: number, n: number, end: number, r: () => number): JobsTable {
  // Oldest first; ids time-ordered, as Celerity makes them.
  const createdAt = Math.floor(end - 30 * DAY + (30 * DAY * i) / n + r() * 1000);
  let w = r() * TASK_WEIGHTS;
  const task = TASKS.find((t) => (w -= t.weight) < 0) ?? TASKS[0]!;
  const tenant = tenantOf(r);
  const age = end - createdAt;
  const x = r();
  // The last minutes hold the live tail.
  const status = age < 10 * 60_000 && x < 0.3 ? (x < 0.15 ? 'queued' : 'started') : x < 0.9 ? 'completed' : x < 0.97 ? 'failed' : x < 0.98 ? 'cancelled' : x < 0.99 ? 'retrying' : 'completed';
  const started = status === 'queued' ? null : createdAt + Math.floor(r() * 2000);
  const finished = started !== null && ['completed', 'failed', 'cancelled'].includes(status) ? started + Math.floor(r() * 30_000) : null;
  const error = status === 'failed' || status === 'retrying' ? pick(r, ERRORS) : status === 'cancelled' ? { type: 'JobCancelled', message: () => 'Job cancelled by request' } : undefined;
  const attempts = status === 'queued' ? 0 : status === 'failed' || status === 'retrying' ? 1 + Math.floor(r() * 3) : 1;
  return {
    id: newJobId(createdAt),
    task: task.name,
    queue: task.queue,
    tenant: tenant === -1 ? null : tenantName(tenant),
    key_id: r() < 0.05 ? null : keyIdOf(tenant, r() < 0.8 ? 0 : 1),
    status,
    attempts,
    max_attempts: 3,
    input: JSON.stringify(task.input(i, r)),
    result: status === 'completed' ? JSON.stringify(task.result(i, r)) : null,
    error_type: error?.type ?? null,
    error_message: error ? error.message(i, r) : null,
    error_stack: error ? `${error.type}: ${error.message(i, r)}\n    at handler (file:///srv/app/tasks/${task.name}.js:42:11)` : null,
    progress: null,
    created_at: createdAt,
    started_at: started,
    finished_at: finished,
    updated_at: finished ?? started ?? createdAt,
    attempt_history: null,
    event_seq: '0000000000001-0000000000',
  };
}

const COLUMNS = [
  'id',
  'task',
  'queue',
  'tenant',
  'key_id',
  'status',
  'attempts',
  'max_attempts',
  'input',
  'result',
  'error_type',
  'error_message',
  'error_stack',
  'progress',
  'created_at',
  'started_at',
  'finished_at',
  'updated_at',
  'attempt_history',
  'event_seq',
] as const satisfies readonly (keyof JobsTable)[];

const PG_TYPES: Record<(typeof COLUMNS)[number], string> = {
  id: 'text',
  task: 'text',
  queue: 'text',
  tenant: 'text',
  key_id: 'text',
  status: 'text',
  attempts: 'int',
  max_attempts: 'int',
  input: 'text',
  result: 'text',
  error_type: 'text',
  error_message: 'text',
  error_stack: 'text',
  progress: 'text',
  created_at: 'bigint',
  started_at: 'bigint',
  finished_at: 'bigint',
  updated_at: 'bigint',
  attempt_history: 'text',
  event_seq: 'text',
};

export interface SeedOptions {
  rows: number;
  /** The history ends here (epoch ms); default now. */
  end?: number;
  seed?: number;
  batch?: number;
  log?: (message: string) => void;
}

/**
 * Writes `rows` jobs into `store` (migrated first). Returns the ms it took.
 * The store should be empty: ids come from the creation times, and a second
 * seeding of the same store would collide.
 */
export async function seedHistory(store: JobStore, opts: SeedOptions): Promise<number> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const end = opts.end ?? Date.now();
  const r = seededRandom(opts.seed ?? 13);
  const batch = opts.batch ?? 5000;
  await store.migrate();
  const indexes = await dropIndexes(store);
  log(`dropped ${indexes.length} secondary indexes; writing ${opts.rows} rows`);
  const insert = inserter(store);
  for (let done = 0; done < opts.rows; ) {
    const size = Math.min(batch, opts.rows - done);
    const rows = Array.from({ length: size }, (_, k) => row(done + k, opts.rows, end, r));
    await insert(rows);
    done += size;
    if (done % 100_000 < batch) log(`${done} rows`);
  }
  log(`rebuilding ${indexes.length} indexes`);
  await store.db.connection().execute(async (db) => {
    // PostgreSQL sorts an index build in this much memory before spilling to disk (default 64 MB).
    if (store.dialect === 'postgres') await sql`set maintenance_work_mem = '256MB'`.execute(db);
    for (const statement of indexes) await sql.raw(statement).execute(db);
  });
  // PostgreSQL's autovacuum vacuums and analyses a table after a bulk load
  // (the visibility map lets index-only scans skip the table); SQLite never
  // analyses unless told (Celerity does not), so its planner is left without
  // statistics, as in a real deployment.
  if (store.dialect === 'postgres') await sql`vacuum (analyze) jobs`.execute(store.db);
  return performance.now() - t0;
}

/** Writes rows in one transaction (every tenant's: row-level security's `*` on PostgreSQL). */
function inserter(store: JobStore): (rows: JobsTable[]) => Promise<void> {
  if (store.sqlite) {
    const stmt = store.sqlite.prepare(`insert into jobs (${COLUMNS.join(', ')}) values (${COLUMNS.map(() => '?').join(', ')})`);
    const many = store.sqlite.transaction((rows: JobsTable[]) => {
      for (const row of rows) stmt.run(...COLUMNS.map((c) => row[c]));
    });
    return async (rows) => many(rows);
  }
  return async (rows) => {
    const arrays = COLUMNS.map((c) => sql`${rows.map((row) => row[c])}::${sql.raw(PG_TYPES[c])}[]`);
    await store.db.connection().execute(async (db) => {
      await sql`begin; select set_config('celerity.tenant', '*', true)`.execute(db);
      await sql`insert into jobs (${sql.join(COLUMNS.map((c) => sql.ref(c)))}) select * from unnest(${sql.join(arrays)})`.execute(db);
      await sql`commit`.execute(db);
    });
  };
}

/** A schedule whose past runs {@link seedScheduleRuns} writes. */
export interface SeededSchedule {
  /** The schedule's id: its runs are BullMQ's `repeat:celerity:<id>:<due ms>`. */
  id: string;
  task: string;
  queue: string;
  everyMs: number;
}

/**
 * Writes the runs of `schedules` over the `days` (default 30) before `end`, one per
 * period, with the job ids BullMQ gives a job scheduler's jobs
 * (`repeat:celerity:<id>:<due ms>`): what the schedules' last-run read
 * (ops/schedules-view.ts) ranges over. Mostly completed, some failed; the
 * newest tick is still queued (not started), as when the overview is opened
 * between a tick and its start. Written with the indexes in place (a few
 * tens of thousands of rows). Returns the rows written.
 */
export async function seedScheduleRuns(store: JobStore, schedules: readonly SeededSchedule[], opts: { end?: number; seed?: number; days?: number } = {}): Promise<number> {
  const days = opts.days ?? 30;
  const end = opts.end ?? Date.now();
  const r = seededRandom(opts.seed ?? 31);
  const insert = inserter(store);
  let written = 0;
  for (const s of schedules) {
    const last = end - (end % s.everyMs);
    const rows: JobsTable[] = [];
    for (let due = last - Math.floor((days * DAY) / s.everyMs) * s.everyMs; due <= last; due += s.everyMs) {
      const queued = due === last;
      const failed = !queued && r() < 0.03;
      const started = queued ? null : due + Math.floor(r() * 500);
      const finished = started === null ? null : started + Math.floor(r() * 5000);
      rows.push({
        id: `repeat:celerity:${s.id}:${due}`,
        task: s.task,
        queue: s.queue,
        tenant: null,
        key_id: null,
        status: queued ? 'queued' : failed ? 'failed' : 'completed',
        attempts: queued ? 0 : 1,
        max_attempts: 3,
        input: '{}',
        result: queued || failed ? null : '{"ok":true}',
        error_type: failed ? 'FetchError' : null,
        error_message: failed ? 'ECONNRESET while calling https://api.example.com/v2/sync' : null,
        error_stack: null,
        progress: null,
        created_at: due,
        started_at: started,
        finished_at: finished,
        updated_at: finished ?? due,
        attempt_history: null,
        event_seq: '0000000000001-0000000000',
      });
      if (rows.length === 5000) {
        await insert(rows.splice(0));
        written += 5000;
      }
    }
    await insert(rows);
    written += rows.length;
  }
  return written;
}

/** Drops the `jobs` table's indexes but its primary key; returns the statements that recreate them. */
async function dropIndexes(store: JobStore): Promise<string[]> {
  if (store.dialect === 'sqlite') {
    const { rows } = await sql<{ name: string; sql: string }>`select name, sql from sqlite_master where type = 'index' and tbl_name = 'jobs' and sql is not null`.execute(store.db);
    for (const index of rows) await sql`drop index ${sql.id(index.name)}`.execute(store.db);
    return rows.map((index) => index.sql);
  }
  const { rows } = await sql<{ indexname: string; indexdef: string }>`select indexname, indexdef from pg_indexes
    where schemaname = ${store.schema} and tablename = 'jobs' and indexname not in (select conname from pg_constraint where conrelid = ${`${store.schema}.jobs`}::regclass)`.execute(store.db);
  for (const index of rows) await sql`drop index ${sql.id(store.schema, index.indexname)}`.execute(store.db);
  return rows.map((index) => index.indexdef);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000' },
      sqlite: { type: 'string' },
      'database-url': { type: 'string' },
      schema: { type: 'string', default: 'celerity' },
      seed: { type: 'string', default: '13' },
    },
    strict: true,
  });
  const rows = Number(values.rows);
  if (!Number.isInteger(rows) || rows < 1 || (!values.sqlite && !values['database-url'])) {
    console.error('usage: seed-history.ts [--rows N] (--sqlite <file> | --database-url <postgres url> [--schema <name>]) [--seed N]');
    process.exit(2);
  }
  const store = new JobStore({ databaseUrl: values['database-url'], sqlitePath: values.sqlite ?? ':memory:', schema: values.schema });
  try {
    const ms = await seedHistory(store, { rows, seed: Number(values.seed), log: (m) => console.error(`seed-history: ${m}`) });
    console.error(`seed-history: ${rows} rows in ${(ms / 1000).toFixed(1)} s`);
  } finally {
    await store.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
