/**
 * The benchmark instrument itself: `npm run bench -- --quick` runs every
 * scenario and produces positive numbers. Its speed is not asserted (CI
 * machines and parallel test files make it meaningless); docs/benchmarks.md
 * has the numbers of a full run.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { scenarios } from '../../../bench/scenarios/index.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './helpers.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'celerity-bench-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Counts (answers, rows, collections...) may be 0; every measured number must be positive. */
const COUNTS = new Set(['non_2xx', 'errors', 'timeouts', 'status_codes', 'requests', 'samples', 'detail', 'gc']);

/** autocannon's latencies are whole milliseconds (s3_http): a median answer under half of one is a 0. */
const WHOLE_MS = /^s3_http\..*\.(p50_ms|p99_ms)$/;

function measured(value: unknown, path: string, out: [string, number][]): [string, number][] {
  if (typeof value === 'number') out.push([path, value]);
  else if (value && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) if (!COUNTS.has(key)) measured(v, `${path}.${key}`, out);
  }
  return out;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('npm', args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('close', (code) => resolve({ code, output }));
  });
}

interface BenchResult {
  mode: string;
  machine: Record<string, unknown>;
  scenarios: Record<string, { ok: boolean; results: unknown }>;
  table: { scenario: string; celerity: number | null; bullmq: number | null; ratio: number | null }[];
}

/**
 * The scenarios of the first of two runs side by side (about half of a quick run's time); every
 * other scenario, a new one included, goes to the second. Many scenarios spend part of their time
 * waiting on their processes and clocks, so that the two runs overlap; speed is not asserted.
 */
const FIRST_RUN = new Set(['s5_scale', 's3_http', 's1_throughput', 's6_events', 's2_latency']);

async function quickRun(names: string[], out: string): Promise<BenchResult> {
  const { code, output } = await run(['run', 'bench', '--', '--quick', '--scenario', names.join(','), '--out', out], {
    ...process.env,
    BENCH_REDIS_URL: TEST_REDIS_URL,
    BENCH_DATABASE_URL: TEST_DATABASE_URL,
  });
  expect(code, output).toBe(0);
  const result = JSON.parse(readFileSync(out, 'utf8')) as BenchResult;
  expect(result.mode).toBe('quick');
  expect(result.machine).toMatchObject({ cpus: expect.any(Number), node: process.version, redis: expect.any(String), postgres: expect.any(String) });
  expect(Object.keys(result.scenarios).sort()).toEqual([...names].sort());
  return result;
}

test('npm run bench -- --quick runs every scenario (in two --scenario runs side by side) and measures positive numbers', { timeout: 400_000 }, async () => {
  // Opt-in scenarios run only when named; they have tests of their own (bench-callgrind.test.ts).
  const names = scenarios.filter((s) => !s.optIn).map((s) => s.name);
  const first = names.filter((n) => FIRST_RUN.has(n));
  const second = names.filter((n) => !FIRST_RUN.has(n));
  expect(first).toHaveLength(FIRST_RUN.size);
  expect(second.length).toBeGreaterThan(0);
  const runs = await Promise.all([quickRun(first, join(dir, 'bench-1.json')), quickRun(second, join(dir, 'bench-2.json'))]);
  const result = { scenarios: Object.assign({}, ...runs.map((r) => r.scenarios)) as BenchResult['scenarios'], table: runs.flatMap((r) => r.table) };
  expect(Object.keys(result.scenarios).sort()).toEqual([...names].sort());
  for (const name of names) {
    const scenario = result.scenarios[name]!;
    expect(scenario.ok, `${name} failed`).toBe(true);
    const numbers = measured(scenario.results, name, []);
    expect(numbers.length, `${name} measured nothing`).toBeGreaterThan(0);
    for (const [path, value] of numbers) {
      if (WHOLE_MS.test(path)) expect(value, path).toBeGreaterThanOrEqual(0);
      else expect(value, path).toBeGreaterThan(0);
    }
    const rows = result.table.filter((r) => r.scenario === name);
    expect(rows.length, `${name} has no table rows`).toBeGreaterThan(0);
    for (const row of rows) {
      expect(row.celerity).toBeGreaterThan(0);
      if (row.bullmq !== null) expect(row.ratio).toBeGreaterThan(0);
    }
  }
});
