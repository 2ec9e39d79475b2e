import { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { jobView } from '../src/api/job-view.ts';
import type { JobRecord } from '../src/job-record.ts';
import { seededRandom } from '../src/seeded-random.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import { readTotals } from '../src/store/job-metrics.ts';
import { relChaos, tasks } from './fixtures/reliability-app.ts';
import { onCleanup, openTestApp, sleep, stores, type StoreKind, useCleanup, waitFor } from './helpers.ts';
import { freePort, PrivateRedis, Proc, processEnv, RELIABILITY_APP, spawnWorker, waitForWorkers } from './process-helpers.ts';

/**
 * Chaos: CHAOS_JOBS flaky jobs are submitted to a `celerity serve` process
 * over HTTP, and CHAOS_WORKERS worker processes run them, while random
 * workers are SIGKILLed (CHAOS_KILLS times, at random moments) and started
 * again, and Redis (a private one, AOF fsynced on every write) is restarted
 * once in the middle. Every job must end in exactly one terminal state: jobs
 * that always fail are `failed` after their 31 attempts, every other job
 * `completed`. None is lost or stuck. And the SQL history equals the API on
 * every field of every job: the API's answer (read from Redis) and the SQL
 * row shown through the same view are identical.
 *
 * `npm run chaos` runs a longer version. Knobs (environment):
 *   CHAOS_JOBS (200), CHAOS_WORKERS (3), CHAOS_KILLS (4), CHAOS_CONCURRENCY (5),
 *   CHAOS_KILL_EVERY_MS (1200, mean gap between kills), CHAOS_SEED (random,
 *   printed: rerun with it to replay the same jobs and kill schedule),
 *   CHAOS_STORE (sqlite | postgres; default sqlite).
 */
useCleanup();

const N = intEnv('CHAOS_JOBS', 200);
const WORKERS = intEnv('CHAOS_WORKERS', 3);
const KILLS = intEnv('CHAOS_KILLS', 4);
const CONCURRENCY = intEnv('CHAOS_CONCURRENCY', 5);
const KILL_EVERY_MS = intEnv('CHAOS_KILL_EVERY_MS', 1_200);
const SEED = intEnv('CHAOS_SEED', Math.floor(Math.random() * 2 ** 31));
const STORE = (process.env.CHAOS_STORE ?? 'sqlite') as StoreKind;
if (!stores.includes(STORE)) throw new Error(`CHAOS_STORE must be one of ${stores.join(', ')}`);

const LOCK_MS = 2_000;
const STALLED_MS = 1_000;
/** A worker killed mid-batch leaves its recorder's entries pending; another recorder claims them once idle this long. */
const RECORDER_CLAIM_MS = 3_000;
/** How long Redis stays down when it is restarted. */
const REDIS_DOWN_MS = 1_000;
const ATTEMPTS = relChaos.retries + 1;

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer (got ${raw})`);
  return n;
}

interface Spec {
  id: number;
  fail_p: number;
  ms: number;
}

describe(`chaos: ${N} jobs, ${WORKERS} workers, ${KILLS} SIGKILLs (${STORE} store, seed ${SEED})`, () => {
  it(
    'ends every job in exactly one terminal state, the same in Redis and SQL, and loses none',
    async () => {
      const random = seededRandom(SEED);
      const startedAt = Date.now();
      const redis = await PrivateRedis.start();
      const app = await openTestApp(STORE, tasks, { redisUrl: redis.url, recorderClaimIdle: String(RECORDER_CLAIM_MS) });
      const queue = app.broker.queue(relChaos.queue);
      const recorderEnv = { CELERITY_RECORDER_CLAIM_IDLE: String(RECORDER_CLAIM_MS) };

      // The API as its own process: it takes the submissions and records too.
      const port = await freePort();
      const api = new Proc('api', process.execPath, ['packages/celerity/bin/celerity.js', 'serve', '--app', RELIABILITY_APP], {
        env: processEnv(app.env, { ...recorderEnv, PORT: String(port), HOST: '127.0.0.1', CELERITY_AUTH: 'off' }),
      });
      onCleanup(() => api.kill('SIGKILL'));
      const base = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 30_000, 100).catch((err: unknown) => {
        throw new Error(`the API did not start: ${String(err)}\n${api.output.slice(-3000)}`);
      });

      const workerOpts = {
        concurrency: CONCURRENCY,
        lockDuration: LOCK_MS,
        stalledInterval: STALLED_MS,
        // Crashes must never be what fails a job here: only fail_p does.
        env: { CELERITY_MAX_STALLED: '1000', ...recorderEnv },
      };
      let spawned = 0;
      const spawnSlot = () => spawnWorker(app.env, { ...workerOpts, name: `worker-${++spawned}` });
      const slots: Proc[] = Array.from({ length: WORKERS }, spawnSlot);
      const startTimes = new Map<Proc, number>(slots.map((p) => [p, Date.now()]));
      await waitForWorkers(queue, WORKERS, 30_000, slots);

      // A fifth always fails, a fifth never does, the rest sometimes.
      const specs: Spec[] = Array.from({ length: N }, (_, id) => {
        const kind = random();
        const fail_p = kind < 0.2 ? 1 : kind < 0.4 ? 0 : Math.round(random() * 60) / 100;
        return { id, fail_p, ms: 10 + Math.floor(random() * 50) };
      });
      const byJobId = new Map<string, Spec>();
      const submit = async (spec: Spec): Promise<string> => {
        const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task: relChaos.name, input: spec }) });
        const body = (await res.json()) as { job_id: string };
        if (res.status !== 202) throw new Error(`submit answered ${res.status}: ${JSON.stringify(body)}`);
        return body.job_id;
      };
      for (let i = 0; i < specs.length; i += 50) {
        const batch = specs.slice(i, i + 50);
        const jobIds = await Promise.all(batch.map(submit));
        jobIds.forEach((id, k) => byJobId.set(id, batch[k]!));
      }
      const ids = [...byJobId.keys()];
      const terminalInRedis = async () => {
        const c = await queue.getJobCounts('completed', 'failed');
        return (c.completed ?? 0) + (c.failed ?? 0);
      };

      // Kill a random worker at random moments, and start a new one in its place;
      // once, half-way through the kills, restart Redis instead.
      const kills: { at: number; victim: string }[] = [];
      let redisRestartAt: number | null = null;
      const restartRedis = async () => {
        redisRestartAt = Date.now() - startedAt;
        await redis.shutdown();
        await sleep(REDIS_DOWN_MS);
        await redis.start();
      };
      if (KILLS === 0) await restartRedis();
      while (kills.length < KILLS && (await terminalInRedis().catch(() => 0)) < N) {
        if (redisRestartAt === null && kills.length >= Math.floor(KILLS / 2)) await restartRedis();
        await sleep(KILL_EVERY_MS * (0.5 + random()));
        // Only a worker up for a while holds jobs worth crashing.
        const warm = slots.map((p, i) => ({ p, i })).filter(({ p }) => Date.now() - startTimes.get(p)! > 2_000);
        if (warm.length === 0) continue;
        const { p: victim, i } = warm[Math.floor(random() * warm.length)]!;
        kills.push({ at: Date.now() - startedAt, victim: victim.name });
        await victim.kill('SIGKILL');
        await sleep(random() * 300);
        const next = spawnSlot();
        slots[i] = next;
        startTimes.set(next, Date.now());
      }
      const lastKillAt = Date.now();

      // Every job ends in Redis (no job stuck waiting, active or delayed).
      if (redisRestartAt === null) await restartRedis();
      await waitFor(async () => (await terminalInRedis().catch(() => 0)) === N, 60_000 + N * 100, 200);
      const redisDoneAt = Date.now();
      for (const p of [...slots, api]) expect(p.running, `${p.name} died on its own:\n${p.output.slice(-3000)}`).toBe(true);

      // The SQL history catches up: every job, terminal.
      const sqlRows = await waitFor(
        async () => {
          const page = await app.listJobs({ task: relChaos.name, limit: N + 100 });
          return page.jobs.length === N && page.jobs.every((j) => j.status === 'completed' || j.status === 'failed') ? page.jobs : undefined;
        },
        RECORDER_CLAIM_MS + 20_000,
        250,
      );
      const sqlDoneAt = Date.now();

      // Nothing left anywhere but completed and failed.
      const counts = await queue.getJobCounts('active', 'waiting', 'delayed', 'prioritized', 'waiting-children');
      expect(counts).toEqual({ active: 0, waiting: 0, delayed: 0, prioritized: 0, 'waiting-children': 0 });
      // Exactly one terminal state per job in Redis: the completed and failed sets partition the jobs.
      const completedIds = (await queue.getCompleted(0, -1)).map((j) => j.id!);
      const failedIds = (await queue.getFailed(0, -1)).map((j) => j.id!);
      expect(completedIds.filter((id) => failedIds.includes(id))).toEqual([]);
      expect([...completedIds, ...failedIds].sort()).toEqual([...ids].sort());

      // SQL holds the same jobs, no more.
      const sqlById = new Map<string, JobRecord>(sqlRows.map((r) => [r.id, r]));
      expect([...sqlById.keys()].sort()).toEqual([...ids].sort());

      let stalls = 0;
      const mismatches: string[] = [];
      for (const id of ids) {
        const spec = byJobId.get(id)!;
        const row = sqlById.get(id)!;
        const state = await queue.getJobState(id);
        const live = await app.getJob(id);
        const job = (await Job.fromId(queue, id))!;
        // SQL equals the API on every field: the API's answer (from Redis), and the SQL row through the same view.
        const res = await fetch(`${base}/v1/jobs/${id}`);
        const fromApi = (await res.json()) as Record<string, unknown>;
        // retried_by is not the row's own: the API reads a failed or cancelled job's retries from the history, so the SQL side does too.
        const retriedBy = row.status === 'failed' || row.status === 'cancelled' ? await app.store.retriesOf(id, ALL_TENANTS) : undefined;
        const fromSql = jobView(retriedBy ? { ...row, retriedBy } : row) as Record<string, unknown>;
        const fields = [...new Set([...Object.keys(fromApi), ...Object.keys(fromSql)])];
        const differing = fields.filter((f) => JSON.stringify(fromApi[f]) !== JSON.stringify(fromSql[f]));
        stalls += job.stalledCounter ?? 0;
        const expected = spec.fail_p === 1 ? 'failed' : 'completed';
        const problems = [
          state !== expected && `redis state ${state}`,
          row.status !== expected && `sql status ${row.status}`,
          live?.status !== expected && `getJob status ${live?.status}`,
          row.attempts !== live?.attempts && `attempts sql ${row.attempts} vs redis ${live?.attempts}`,
          expected === 'completed' && JSON.stringify(row.result) !== JSON.stringify(job.returnvalue) && `result sql ${JSON.stringify(row.result)} vs redis ${JSON.stringify(job.returnvalue)}`,
          expected === 'completed' && (row.result as { id?: number } | null)?.id !== spec.id && `result of another job: ${JSON.stringify(row.result)}`,
          expected === 'completed' && (row.result as { attempt?: number } | null)?.attempt !== row.attempts && `result attempt ${JSON.stringify(row.result)} vs attempts ${row.attempts}`,
          expected === 'completed' && row.error !== null && `completed with error ${row.error.message}`,
          expected === 'failed' && job.attemptsMade !== ATTEMPTS && `failed after ${job.attemptsMade} attempts, not ${ATTEMPTS}`,
          expected === 'failed' && row.error?.type !== 'TransientError' && `error ${JSON.stringify(row.error)}`,
          // The attempt history: one entry per attempt, numbered, ending in the outcome.
          (row.attemptHistory ?? []).length !== row.attempts && `history of ${row.attemptHistory?.length} for ${row.attempts} attempts`,
          (row.attemptHistory ?? []).some((a, k) => a.attempt !== k + 1) && `history numbering ${JSON.stringify(row.attemptHistory?.map((a) => a.attempt))}`,
          row.attemptHistory?.at(-1)?.status !== expected && `last attempt ${JSON.stringify(row.attemptHistory?.at(-1))}`,
          expected === 'failed' && (row.attemptHistory ?? []).filter((a) => a.status === 'failed').length < ATTEMPTS && `fewer than ${ATTEMPTS} failed attempts in the history`,
          res.status !== 200 && `GET /v1/jobs/${id} answered ${res.status}`,
          ...differing.map((f) => `${f}: api ${JSON.stringify(fromApi[f])} vs sql ${JSON.stringify(fromSql[f])}`),
        ].filter(Boolean);
        if (problems.length > 0) mismatches.push(`${id} ${JSON.stringify(spec)}: ${problems.join('; ')}`);
      }
      expect(mismatches).toEqual([]);

      // The job metrics count each job once, though recorders died mid-batch and events came again.
      const [totals] = (await readTotals(app.store)).filter((t) => t.task === relChaos.name);
      expect({ completed: totals?.completed, failed: totals?.failed, cancelled: totals?.cancelled }).toEqual({ completed: completedIds.length, failed: failedIds.length, cancelled: 0 });

      // The kills did hit running jobs (they were re-run after their worker died).
      if (KILLS > 0) {
        expect(kills.length).toBeGreaterThan(0);
        expect(stalls).toBeGreaterThan(0);
      }
      console.log(
        `chaos seed=${SEED} store=${STORE} jobs=${N} (failed ${failedIds.length}) workers=${WORKERS} kills=${kills.length} redis restart at ${redisRestartAt} ms ` +
          `[${kills.map((k) => `${k.victim}@${k.at}ms`).join(' ')}] stalled re-runs=${stalls} ` +
          `redis done ${redisDoneAt - startedAt} ms, sql +${sqlDoneAt - redisDoneAt} ms (last kill at ${lastKillAt - startedAt} ms)`,
      );
    },
    90_000 + N * 150 + KILLS * 5_000 + RECORDER_CLAIM_MS,
  );
});
