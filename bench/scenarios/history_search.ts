/**
 * history_search: searches of the SQL history through the HTTP API, on a
 * history of 1,000,000 jobs (20,000 with --quick) seeded by
 * bench/seed-history.ts, on SQLite and on PostgreSQL.
 *
 * For each store: seed, start `celerity serve` on it (API keys on, rate
 * limits off, `input.ticket_id` indexed by CELERITY_SEARCH_PATHS), make an admin key and a key of one tenant, then run each
 * search of SEARCHES one request at a time (one client: the latency of a
 * search, not the throughput of the server), `warm-up` times uncounted, then
 * `samples` times, and report p50 and p95 of each, the rows returned, and
 * how many answers were partial (the search ran out of
 * CELERITY_SEARCH_TIMEOUT, default 5 s) or 503.
 *
 * Seeding a million rows takes a minute or two per store. To keep a seeded
 * store between runs, name it: BENCH_HISTORY_SQLITE=<file> and
 * BENCH_HISTORY_SCHEMA=<schema> (in BENCH_DATABASE_URL's database); a store
 * that already holds the rows is used as it is, and is not removed.
 */
import { sql } from 'kysely';
import { JobStore } from '../../packages/celerity/src/store/job-store.ts';
import { storeEnv, type StoreEnv, type StoreKind } from '../lib/env.ts';
import { now, percentile, pollUntil, round } from '../lib/measure.ts';
import { celerity, freePort, Proc } from '../lib/procs.ts';
import { type Scope, withScope } from '../lib/scope.ts';
import type { Row, Scenario, ScenarioContext } from '../lib/types.ts';
import { keyIdOf, seedHistory, tenantName } from '../seed-history.ts';

const DAY = 24 * 3600 * 1000;
/** The tenant whose key runs the tenant searches: a mid-sized one (tenants are skewed, 00 the largest). */
const TENANT = 5;
/** Time spent sampling one search, beyond its first 5 samples. */
const MAX_SEARCH_MS = 60_000;

interface Sample {
  /** Newest creation time in the history: windows are relative to it. */
  end: number;
  /** An id from about a day before the end; its first 9 characters are a prefix to search. */
  idDayAgo: string;
}

interface Search {
  name: string;
  key: 'admin' | 'tenant';
  query: (s: Sample) => string;
}

/** What the benchmark searches: the list, each filter alone, and combinations a person would type. */
const SEARCHES: Search[] = [
  { name: 'list, no filter', key: 'admin', query: () => '' },
  { name: 'list, tenant key', key: 'tenant', query: () => '' },
  { name: 'status=failed', key: 'admin', query: () => 'status=failed' },
  { name: 'status=failed, tenant key', key: 'tenant', query: () => 'status=failed' },
  { name: 'task', key: 'admin', query: () => 'task=pdf.ingest' },
  { name: 'queue', key: 'admin', query: () => 'queue=imports' },
  { name: 'key_id', key: 'admin', query: () => `key_id=${keyIdOf(TENANT, 1)}` },
  { name: 'created range (a day, a week ago)', key: 'admin', query: (s) => `created_after=${s.end - 8 * DAY}&created_before=${s.end - 7 * DAY}` },
  { name: 'id_prefix', key: 'admin', query: (s) => `id_prefix=${s.idDayAgo.slice(0, 9)}` },
  { name: 'id_prefix, broad (3 characters)', key: 'admin', query: (s) => `id_prefix=${s.idDayAgo.slice(0, 3)}` },
  { name: 'error text', key: 'admin', query: () => 'error=econnreset' },
  { name: 'error text, tenant key', key: 'tenant', query: () => `error=${encodeURIComponent('not found')}` },
  { name: 'status+queue+created range', key: 'admin', query: (s) => `status=failed&queue=tickets&created_after=${new Date(s.end - 3 * DAY).toISOString()}` },
  { name: 'where input (common value)', key: 'admin', query: () => `where=${encodeURIComponent('input.priority:"high"')}` },
  { name: 'where result + task', key: 'admin', query: () => `task=pdf.ingest&where=${encodeURIComponent('result.pages:12')}` },
  { name: 'where input id, last day', key: 'admin', query: (s) => `created_after=${s.end - DAY}&where=${encodeURIComponent('input.customer.id:"c-4242"')}` },
  { name: 'where input id, tenant key', key: 'tenant', query: () => `where=${encodeURIComponent('input.ticket_id:"T-4242"')}` },
  { name: 'where input id, whole history', key: 'admin', query: () => `where=${encodeURIComponent('input.ticket_id:"T-4242"')}` },
  { name: 'where input id, whole history, path not indexed', key: 'admin', query: () => `where=${encodeURIComponent('input.customer.id:"c-4242"')}` },
];

/** The paths the server indexes (CELERITY_SEARCH_PATHS): the ticket id, as a user who looks tickets up by id would. */
const SEARCH_PATHS = 'input.ticket_id';

interface Measured {
  samples: number;
  p50_ms: number;
  p95_ms: number;
  max_ms: number;
  timeouts: number;
  errors: number;
  /** Counts that may be 0: the rows of the last answer, the partial answers. */
  detail: { rows: number; partial: number };
}

/** A store to search: fresh (removed with the scope), or the one BENCH_HISTORY_* names (kept). */
function historyEnv(ctx: ScenarioContext, scope: Scope, kind: StoreKind): StoreEnv {
  const env = storeEnv(ctx, scope, kind);
  const kept = kind === 'sqlite' ? process.env.BENCH_HISTORY_SQLITE : process.env.BENCH_HISTORY_SCHEMA;
  if (!kept) return env;
  const flags = { ...env.flags, ...(kind === 'sqlite' ? { sqlitePath: kept } : { databaseSchema: kept }) };
  return {
    ...env,
    flags,
    ...(kind === 'sqlite' ? { sqlitePath: kept } : { schema: kept }),
    childEnv: (extra = {}) => ({ ...env.childEnv(extra), ...(kind === 'sqlite' ? { CELERITY_SQLITE_PATH: kept } : { CELERITY_DB_SCHEMA: kept }) }),
  };
}

async function prepare(ctx: ScenarioContext, env: StoreEnv, rows: number): Promise<{ sample: Sample; seeded_s: number | null }> {
  const store = new JobStore({
    databaseUrl: env.kind === 'postgres' ? ctx.databaseUrl : undefined,
    sqlitePath: env.sqlitePath ?? ':memory:',
    ...(env.schema ? { schema: env.schema } : {}),
  });
  try {
    await store.migrate();
    const count = async () => Number((await sql<{ n: number | string }>`select count(*) as n from jobs`.execute(store.db).then((r) => r.rows[0]?.n)) ?? 0);
    let seeded_s: number | null = null;
    const have = await count();
    if (have < rows) {
      if (have > 0) throw new Error(`the kept ${env.kind} store holds ${have} jobs, fewer than ${rows}: remove it, or name another`);
      ctx.log(`${env.kind}: seeding ${rows} jobs`);
      seeded_s = round((await seedHistory(store, { rows, log: (m) => ctx.log(`${env.kind}: ${m}`) })) / 1000);
    } else ctx.log(`${env.kind}: reusing a history of ${have} jobs`);
    const { rows: top } = await sql<{ end: number | string }>`select max(created_at) as "end" from jobs`.execute(store.db);
    const end = Number(top[0]!.end);
    const { rows: ids } = await sql<{ id: string }>`select id from jobs where created_at < ${end - DAY} order by created_at desc limit 1`.execute(store.db);
    return { sample: { end, idDayAgo: ids[0]!.id }, seeded_s };
  } finally {
    await store.close();
  }
}

export async function key(scope: Scope, env: StoreEnv, name: string, args: string[]): Promise<string> {
  const proc = new Proc(scope, `keys-create-${name}`, process.execPath, ['packages/celerity/bin/celerity.js', 'keys', 'create', '--name', name, ...args], { env: env.childEnv() });
  return (await proc.result(60_000)).trim();
}

async function measureStore(ctx: ScenarioContext, scope: Scope, kind: StoreKind, rows: number, warmup: number, samples: number) {
  const env = historyEnv(ctx, scope, kind);
  const { sample, seeded_s } = await prepare(ctx, env, rows);
  const admin = await key(scope, env, 'bench-admin', ['--scopes', 'admin']);
  const tenant = await key(scope, env, 'bench-tenant', ['--tenant', tenantName(TENANT), '--scopes', 'jobs:read']);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = celerity(
    ctx,
    scope,
    `celerity-serve-${kind}`,
    'serve',
    env.childEnv({ PORT: String(port), HOST: '127.0.0.1', CELERITY_RATE_LIMIT_SUBMIT: '0', CELERITY_RATE_LIMIT_READ: '0', CELERITY_SEARCH_PATHS: SEARCH_PATHS }),
  );
  await pollUntil(
    async () => {
      server.assertRunning();
      return fetch(`${base}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
    },
    { intervalMs: 100, timeoutMs: 60_000, what: `${base}/healthz to answer` },
  );
  const results: Record<string, Measured> = {};
  for (const search of SEARCHES) {
    const url = `${base}/v1/jobs?limit=50${search.query(sample) ? `&${search.query(sample)}` : ''}`;
    const headers = { authorization: `Bearer ${search.key === 'admin' ? admin : tenant}` };
    const times: number[] = [];
    const m: Measured = { samples: 0, p50_ms: 0, p95_ms: 0, max_ms: 0, timeouts: 0, errors: 0, detail: { rows: 0, partial: 0 } };
    // A search that runs into its time budget every time would take minutes: it stops after MAX_SEARCH_MS of samples (5 at least).
    const started = now();
    for (let i = 0; i < warmup + samples && (i < warmup + 5 || now() - started < MAX_SEARCH_MS); i++) {
      const t0 = now();
      const res = await fetch(url, { headers });
      const body = (await res.json()) as { jobs?: unknown[]; partial?: boolean; error?: { code: string; message: string } };
      const ms = now() - t0;
      if (i < warmup) continue;
      times.push(ms);
      if (res.status === 503 && body.error?.code === 'query_timeout') m.timeouts++;
      else if (!res.ok) {
        m.errors++;
        if (m.errors === 1) ctx.note(`${kind} ${search.name}: ${res.status} ${JSON.stringify(body.error)}`);
      } else {
        m.detail.rows = body.jobs?.length ?? 0;
        if (body.partial) m.detail.partial++;
      }
    }
    times.sort((a, b) => a - b);
    m.samples = times.length;
    m.p50_ms = round(percentile(times, 50));
    m.p95_ms = round(percentile(times, 95));
    m.max_ms = round(times[times.length - 1]!);
    results[search.name] = m;
    ctx.log(
      `${kind}: ${search.name}: p50 ${m.p50_ms} ms, p95 ${m.p95_ms} ms, ${m.detail.rows} rows${m.detail.partial ? `, ${m.detail.partial} partial` : ''}${m.timeouts ? `, ${m.timeouts} timeouts` : ''}`,
    );
  }
  server.assertRunning();
  return { results, seeded_s, queries: Object.fromEntries(SEARCHES.map((s) => [s.name, `${s.key} key: GET /v1/jobs?limit=50&${s.query(sample)}`])) };
}

export const historySearch: Scenario = {
  name: 'history_search',
  title: 'searches of a 1,000,000-job history through GET /v1/jobs (p50/p95), SQLite and PostgreSQL',
  async run(ctx) {
    const rows = ctx.quick ? 20_000 : 1_000_000;
    const warmup = ctx.quick ? 1 : 3;
    const samples = ctx.quick ? 5 : 40;
    const fields: Record<string, unknown> = {};
    const rowsOut: Row[] = [];
    const params: Record<string, unknown> = { rows, warmup, samples, page: 50, clients: 1 };
    for (const kind of ['sqlite', 'postgres'] as const) {
      // Each store's server stops (and a fresh store goes) before the next store is measured.
      const { results, seeded_s, queries } = await withScope(ctx.scope, (scope) => measureStore(ctx, scope, kind, rows, warmup, samples));
      fields[kind] = { seeded_s, searches: results };
      params[`${kind}_queries`] = queries;
      for (const [name, m] of Object.entries(results)) rowsOut.push({ metric: `${kind}: ${name} p95`, unit: 'ms', celerity: m.p95_ms });
    }
    return { fields, params, rows: rowsOut };
  },
};
