import { afterAll, describe, it } from 'vitest';
import { relSleep } from './fixtures/reliability-app.ts';
import { cleanup, openTestApp, stores, waitFor } from './helpers.ts';
import { freePort, Proc, processEnv, RELIABILITY_APP, spawnWorker } from './process-helpers.ts';

// Once, after both stores' tests: they run concurrently, and a cleanup after the first to end
// would kill the other's processes.
afterAll(cleanup);

/** The value of `celerity_jobs_total` with exactly these labels in an exposition, or undefined. */
function jobsTotal(text: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^celerity_jobs_total\{(.*)\}\s+(\S+)$/.exec(line);
    if (!m) continue;
    const found = Object.fromEntries([...m[1]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (JSON.stringify(Object.entries(found).sort()) === JSON.stringify(Object.entries(labels).sort())) return Number(m[2]);
  }
  return undefined;
}

// Concurrent: each store's test has its own prefix, store, port and processes, and mostly waits
// on them (start-up, scrapes).
describe.concurrent.each(stores)('cluster-wide job totals on the API (%s)', (kind) => {
  it("celerity_jobs_total on `celerity serve`'s /metrics rises as a separate `celerity worker` runs jobs", async ({ expect }) => {
    const app = await openTestApp(kind, [relSleep]);
    const port = await freePort();
    const serve = new Proc('serve', process.execPath, ['packages/celerity/bin/celerity.js', 'serve', '--app', RELIABILITY_APP], {
      env: processEnv(app.env, { CELERITY_AUTH: 'off', PORT: String(port), HOST: '127.0.0.1' }),
    });
    const worker = spawnWorker(app.env, { shutdownGrace: 1_000 });
    const metrics = async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).toBe(200);
      return res.text();
    };
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 30_000, 100).catch((err: Error) => {
      throw new Error(`${err.message}; serve output:\n${serve.output}\nworker output:\n${worker.output}`);
    });
    const cluster = { task: 'rel.sleep', queue: 'default', source: 'cluster' };
    const completed = async () => jobsTotal(await metrics(), { ...cluster, status: 'completed' }) ?? 0;
    expect(await completed()).toBe(0);

    let expected = 0;
    for (const n of [3, 5]) {
      const handles = await Promise.all(Array.from({ length: n }, () => app.enqueue(relSleep, { ms: 20 })));
      for (const h of handles) expect((await h.wait({ timeoutMs: 20_000, pollMs: 20 })).status).toBe('completed');
      expected += n;
      // The worker's recorder or the API's writes the rows; either way the API's scrape sees the cluster's count.
      await waitFor(async () => (await completed()) === expected || undefined, 15_000, 100).catch(async (err: Error) => {
        throw new Error(
          `${err.message}; last exposition:\n${(await metrics())
            .split('\n')
            .filter((l) => l.startsWith('celerity_jobs_total'))
            .join('\n')}\nserve:\n${serve.output}\nworker:\n${worker.output}`,
        );
      });
    }
    const text = await metrics();
    // The API process ran none of them: its in-process series (no source label) has nothing for rel.sleep.
    expect(jobsTotal(text, { task: 'rel.sleep', queue: 'default', status: 'completed' })).toBeUndefined();
    expect(jobsTotal(text, { ...cluster, status: 'failed' })).toBe(0);
    expect(text).toMatch(/# TYPE celerity_jobs_total counter/);
    // The cluster's run times, as a histogram of their own: every job ran 20 ms or more.
    const sample = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    const series = 'celerity_cluster_job_run_seconds';
    expect(text).toMatch(new RegExp(`# TYPE ${series} histogram`));
    expect(sample(`${series}_count\\{task="rel.sleep",queue="default"\\}`)).toBe(expected);
    expect(sample(`${series}_bucket\\{task="rel.sleep",queue="default",le="\\+Inf"\\}`)).toBe(expected);
    expect(sample(`${series}_bucket\\{task="rel.sleep",queue="default",le="0.011"\\}`)).toBe(0);
    expect(sample(`${series}_sum\\{task="rel.sleep",queue="default"\\}`)).toBeGreaterThanOrEqual(0.02 * expected * 0.9);

    // The stats API, from the same process, sees them per minute.
    const stats = (await (await fetch(`http://127.0.0.1:${port}/v1/stats?task=rel.sleep`)).json()) as { series: { points: { completed: number; run_p50: number }[] }[] };
    expect(stats.series[0]!.points.reduce((sum, p) => sum + p.completed, 0)).toBe(expected);
    expect(stats.series[0]!.points[0]!.run_p50).toBeGreaterThanOrEqual(15);
  }, 90_000);
});
