/**
 * HTTP loads of the benchmark: autocannon as a child process, driving a
 * server for a time (`seconds`) or a number of requests (`amount`), its
 * `--json` output read back; and a wait for a server to answer.
 */
import { createRequire } from 'node:module';
import { pollUntil } from './measure.ts';
import { Proc } from './procs.ts';
import type { Scope } from './scope.ts';

const AUTOCANNON = createRequire(import.meta.url).resolve('autocannon/autocannon.js');

/** The part of autocannon's --json output used here. */
interface CannonResult {
  duration: number;
  requests: { total: number; average: number };
  latency: { p50: number; p99: number; max: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
}

export interface HttpRun {
  req_per_s: number;
  p50_ms: number;
  p99_ms: number;
  requests: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  status_codes: Record<string, number>;
}

export interface Load {
  connections: number;
  /** For this long; or */
  seconds?: number;
  /** this many requests in all. */
  amount?: number;
  /** A JSON body to POST (a GET without it). */
  post?: string | undefined;
  /** An API key, sent as `authorization: Bearer <key>`. */
  key?: string | undefined;
  /** How long to wait for the run to end before failing it. */
  timeoutMs?: number;
}

export async function cannon(scope: Scope, name: string, url: string, load: Load): Promise<HttpRun> {
  const args = [AUTOCANNON, '--json', '--no-progress', '-c', String(load.connections)];
  if (load.seconds !== undefined) args.push('-d', String(load.seconds));
  if (load.amount !== undefined) args.push('-a', String(load.amount));
  if (load.key !== undefined) args.push('-H', `authorization=Bearer ${load.key}`);
  if (load.post !== undefined) args.push('-m', 'POST', '-H', 'content-type=application/json', '-b', load.post);
  args.push(url);
  const proc = new Proc(scope, name, process.execPath, args, { env: process.env });
  const stdout = await proc.result(load.timeoutMs ?? (load.seconds ?? 0) * 1000 + 60_000);
  const line = stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`${name}: no JSON from autocannon; output:\n${proc.output.slice(-2000)}`);
  const r = JSON.parse(line) as CannonResult;
  const statusCodes = Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([code, s]) => [code, s.count]));
  return {
    req_per_s: r.requests.total / r.duration,
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    requests: r.requests.total,
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    status_codes: statusCodes,
  };
}

/** Waits until `url` answers 2xx, failing early if one of `procs` exits. */
export async function waitHttp(url: string, procs: Proc[], timeoutMs = 60_000): Promise<void> {
  await pollUntil(
    async () => {
      for (const p of procs) p.assertRunning();
      try {
        return (await fetch(url)).ok;
      } catch {
        return false;
      }
    },
    { intervalMs: 100, timeoutMs, what: `${url} to answer` },
  );
}
