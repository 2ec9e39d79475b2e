/**
 * The benchmark runner: `npm run bench [-- --scenario s1_throughput,s2_latency] [--quick] [--out file.json]`.
 *
 * Runs the selected scenarios (default: all but the opt-in ones) one after the other (each
 * `--repeat` times, reporting the median of every number) against the
 * same Redis and PostgreSQL, prints a table (celerity, raw BullMQ, ratio =
 * celerity / bullmq) and writes the numbers with the machine's description
 * to bench/results/latest.json (or --out). Exits 1 if any scenario failed.
 *
 * Environment: BENCH_REDIS_URL (else REDIS_URL, else redis://127.0.0.1:6379),
 * BENCH_DATABASE_URL (else DATABASE_URL, else postgres://root@127.0.0.1:5432/test),
 * BENCH_VERBOSE=1 (children's output on stderr), BENCH_PROF=<dir> (children
 * write CPU profiles there).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo } from './lib/machine.ts';
import { now } from './lib/measure.ts';
import { ROOT } from './lib/procs.ts';
import { Scope } from './lib/scope.ts';
import { formatMarkdown, formatTable, type TableRow } from './lib/table.ts';
import { median } from './lib/median.ts';
import type { ScenarioContext, ScenarioResult } from './lib/types.ts';
import { scenarios } from './scenarios/index.ts';
import { waitForIdle } from './lib/settle.ts';

const USAGE = `usage: npm run bench -- [--scenario <name>[,<name>...]] [--quick] [--repeat N] [--out <file>] [--markdown] [--list]

  --scenario  run only these (default: all but the opt-in ones): ${scenarios.map((s) => `${s.name}${s.optIn ? ' (opt-in)' : ''}`).join(', ')}
  --quick     small runs (seconds), for CI and smoke checks
  --repeat N  run each scenario N times and report the median of every number (default 1)
  --out       where to write the JSON results (default bench/results/latest.json)
  --markdown  also print the table as Markdown
  --list      list the scenarios and exit`;

const { values } = parseArgs({
  options: {
    scenario: { type: 'string' },
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    markdown: { type: 'boolean', default: false },
    list: { type: 'boolean', default: false },
    repeat: { type: 'string', default: '1' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (values.list) {
  for (const s of scenarios) console.log(`${s.name.padEnd(16)} ${s.title}${s.optIn ? ' (opt-in: only with --scenario)' : ''}`);
  process.exit(0);
}

const wanted = values.scenario
  ? values.scenario
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
  : scenarios.filter((s) => !s.optIn).map((s) => s.name);
const unknown = wanted.filter((name) => !scenarios.some((s) => s.name === name));
if (unknown.length > 0) {
  console.error(`bench: unknown scenario ${unknown.join(', ')}\n${USAGE}`);
  process.exit(2);
}
const selected = scenarios.filter((s) => wanted.includes(s.name));
const quick = values.quick;
const repeat = Number(values.repeat);
if (!Number.isInteger(repeat) || repeat < 1) {
  console.error(`bench: --repeat must be a positive integer\n${USAGE}`);
  process.exit(2);
}
const out = resolve(values.out ?? join(ROOT, 'bench', 'results', 'latest.json'));
const redisUrl = process.env.BENCH_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const databaseUrl = process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';

const t0Run = now();
const log = (message: string) => process.stderr.write(`bench [${((now() - t0Run) / 1000).toFixed(1).padStart(5)} s]: ${message}\n`);

// Ctrl-C or a kill: clean up the running scenario (children, keys, schema),
// then exit 130. A second signal exits at once.
let current: Scope | undefined;
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${signal}: cleaning up`);
    void (current?.close() ?? Promise.resolve()).finally(() => process.exit(130));
  });
}

let machine;
try {
  machine = await machineInfo(redisUrl, databaseUrl);
} catch (err) {
  console.error(`bench: cannot reach Redis at ${redisUrl} or PostgreSQL at ${databaseUrl}: ${(err as Error).message}`);
  process.exit(2);
}
log(
  `${quick ? 'quick' : 'full'} run of ${selected.map((s) => s.name).join(', ')} on ${machine.cpus} × ${machine.cpu_model}, node ${machine.node}, redis ${machine.redis}, postgres ${machine.postgres}`,
);

if (machine.load_at_start[0]! > machine.cpus * 0.5) {
  log(`warning: load average ${machine.load_at_start[0]} on ${machine.cpus} cpus: something else is running, the numbers will be skewed`);
}

const report: Record<string, unknown> = {};
const table: TableRow[] = [];
let failures = 0;
const started = now();
for (const scenario of selected) {
  const notes: string[] = [];
  const t0 = now();
  log(`${scenario.name}: ${scenario.title}`);
  const runs: ScenarioResult[] = [];
  let error: string | undefined;
  for (let i = 1; i <= repeat && !error; i++) {
    const tag = repeat > 1 ? `run ${i}/${repeat}: ` : '';
    // A full run waits for the machine to go quiet first (what the scenario
    // before left running: autovacuum, checkpoints, exiting children). A
    // quick run does not: the test suite runs it beside other tests.
    if (!quick) {
      const settle = await waitForIdle();
      if (!settle.settled) notes.push(`${tag}the machine stayed busy: ${Math.round((settle.idle ?? 0) * 100)}% idle after ${Math.round(settle.waitedMs / 1000)} s of waiting`);
      else if (settle.waitedMs > 1500) log(`${scenario.name}: ${tag}waited ${Math.round(settle.waitedMs / 1000)} s for the machine to go quiet`);
    }
    const scope = new Scope((err) => void notes.push(`${tag}${err.message}`));
    current = scope;
    const ctx: ScenarioContext = {
      quick,
      redisUrl,
      databaseUrl,
      scope,
      log: (m) => log(`${scenario.name}: ${tag}${m}`),
      note: (m) => void notes.push(`${tag}${m}`),
    };
    try {
      const result = await scenario.run(ctx);
      notes.push(...(result.notes ?? []).map((n) => `${tag}${n}`));
      runs.push(result);
    } catch (err) {
      error = (err as Error).stack ?? String(err);
      log(`${scenario.name}: ${tag}FAILED: ${error}`);
    } finally {
      await scope.close();
      current = undefined;
      // Interrupted: the signal handler exits once the clean-up is done.
      if (interrupted) await new Promise(() => {});
    }
  }
  // Notes include warnings gathered from processes as they were stopped.
  for (const note of notes) log(`${scenario.name}: note: ${note}`);
  const duration_s = Math.round((now() - t0) / 100) / 10;
  if (error) {
    failures++;
    report[scenario.name] = { ok: false, duration_s, error, notes };
    continue;
  }
  const merged = median(runs) as ScenarioResult;
  report[scenario.name] = {
    ok: true,
    duration_s,
    repeats: repeat,
    params: merged.params,
    results: merged.fields,
    notes,
    ...(repeat > 1 ? { runs: runs.map((r) => r.fields) } : {}),
  };
  table.push(...merged.rows.map((r) => ({ scenario: scenario.name, ...r })));
}

const output = {
  date: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  repeat,
  duration_s: Math.round((now() - started) / 100) / 10,
  machine: { ...machine, load_at_end: loadavg().map((l) => Math.round(l * 100) / 100) },
  scenarios: report,
  table: table.map((r) => ({ scenario: r.scenario, metric: r.metric, unit: r.unit, celerity: r.celerity ?? null, bullmq: r.bullmq ?? null, ratio: r.ratio ?? null })),
};
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(output, null, 2)}\n`);

console.log(`\n${formatTable(table)}\n`);
if (values.markdown) console.log(`${formatMarkdown(table)}\n`);
console.log(`ratio = celerity / bullmq (throughput: higher is better for Celerity; latency: lower is better). ${quick ? 'Quick run. ' : ''}Results: ${out}`);
if (failures > 0)
  console.log(
    `${failures} scenario(s) failed: ${Object.entries(report)
      .filter(([, r]) => !(r as { ok: boolean }).ok)
      .map(([n]) => n)
      .join(', ')}`,
  );
process.exit(failures > 0 ? 1 : 0);
