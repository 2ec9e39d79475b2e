/**
 * The instrument of the opt-in `worker_gc` scenario (bench/lib/worker-gc.ts)
 * reads V8's own trace of a real process: a program that keeps what it
 * allocates promotes it at each scavenge, one that keeps nothing promotes
 * next to nothing, and scavenges outside `sinceMs`-`untilMs` are left out.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';
import { GC_TRACE_FLAG, workerGc } from '../../../bench/lib/worker-gc.ts';

const run = promisify(execFile);

async function trace(program: string): Promise<string> {
  const { stdout } = await run(process.execPath, [GC_TRACE_FLAG, '-e', program], { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

test('a process that keeps its objects promotes them; one that keeps none does not', async () => {
  const keeping = workerGc(await trace('const keep = []; for (let i = 0; i < 2e6; i++) keep.push({ i, a: [i] });'), 0);
  const dropping = workerGc(await trace('let last; for (let i = 0; i < 2e6; i++) last = { i, a: [i] }; if (!last) process.exit(1);'), 0);
  expect(keeping.scavenges).toBeGreaterThan(2);
  expect(dropping.scavenges).toBeGreaterThan(2);
  expect(keeping.scavenge_avg_ms).toBeGreaterThan(0);
  // About 100 MB kept, most of it promoted over the scavenges.
  expect(keeping.promoted_kb_per_scavenge).toBeGreaterThan(1_000);
  expect(dropping.promoted_kb_per_scavenge).toBeLessThan(50);
  const none = { scavenges: 0, scavenge_avg_ms: 0, promoted_kb_per_scavenge: 0, full: 0 };
  const output = await trace('let last; for (let i = 0; i < 2e6; i++) last = { i };');
  expect(workerGc(output, 1e9)).toEqual(none);
  expect(workerGc(output, 0, -1)).toEqual(none);
});
