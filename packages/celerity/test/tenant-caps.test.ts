import { describe, expect, it } from 'vitest';
import { keys } from '../src/broker/keys.ts';
import { inspect } from '../src/cli/inspect.ts';
import { capLabel } from '../src/rate-limits/gate.ts';
import { capped, LIMITS_APP } from './fixtures/limits-app.ts';
import { openTestApp, sleep, testRedis, useCleanup, waitFor, type TestEnv } from './helpers.ts';
import { Proc, processEnv, waitForWorkers } from './process-helpers.ts';

/**
 * Concurrency caps per tenant, across worker processes (the fixture app caps
 * `acme` at 3 running jobs of the queue `capped`, any other tenant at 2),
 * and what a SIGKILL of a worker leaves of them.
 */
useCleanup();

const LOCK_MS = 2_000;
const STALLED_MS = 1_000;

function spawnLimitsWorker(env: TestEnv, name: string): Proc {
  return new Proc(name, process.execPath, ['packages/celerity/bin/celerity.js', 'worker', '--app', LIMITS_APP], {
    env: processEnv(env, {
      CELERITY_CONCURRENCY: '10',
      CELERITY_LOCK_DURATION: String(LOCK_MS),
      CELERITY_STALLED_INTERVAL: String(STALLED_MS),
      CELERITY_CAP_RECHECK: '100',
    }),
  });
}

interface Event {
  ev: 'start' | 'end';
  job: string;
  tenant: string | null;
  at: number;
  pid: number;
  attempt?: number;
}

async function events(env: TestEnv): Promise<Event[]> {
  return (await testRedis().lrange(`${env.prefix}:test:events`, 0, -1)).map((e) => JSON.parse(e) as Event);
}

/**
 * The most jobs of `tenant` running at once, from the handlers' start and
 * end events; a run whose process was killed (`killed`: pid → time) ends then.
 */
function mostRunning(all: Event[], tenant: string, killed: Map<number, number> = new Map()): number {
  const mine = all.filter((e) => e.tenant === tenant);
  const points: [number, number][] = [];
  for (const e of mine) {
    if (e.ev === 'end') points.push([e.at, -1]);
    else {
      points.push([e.at, 1]);
      const ended = mine.some((x) => x.ev === 'end' && x.job === e.job && x.pid === e.pid);
      if (!ended) points.push([killed.get(e.pid) ?? Number.POSITIVE_INFINITY, -1]);
    }
  }
  // Ends before starts at the same ms: a slot freed and taken in one ms is not two at once.
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let running = 0;
  let most = 0;
  for (const [, d] of points) {
    running += d;
    most = Math.max(most, running);
  }
  return most;
}

describe('tenant concurrency caps', () => {
  it('hold across 2 worker processes, per tenant, and held jobs spend no attempt', async () => {
    const app = await openTestApp('sqlite', [capped]);
    const procs = [spawnLimitsWorker(app.env, 'w1'), spawnLimitsWorker(app.env, 'w2')];
    await waitForWorkers(app.broker.queue(capped.queue), 2, 20_000, procs);
    const jobs = await Promise.all([
      ...Array.from({ length: 7 }, () => app.enqueue(capped, { ms: 600 }, { tenant: 'acme' })),
      ...Array.from({ length: 5 }, () => app.enqueue(capped, { ms: 600 }, { tenant: 'globex' })),
    ]);
    const records = await Promise.all(jobs.map((h) => h.wait({ timeoutMs: 30_000 })));
    const all = await events(app.env);
    // At the cap, and never past it; 20 slots of concurrency were there for the taking.
    expect(mostRunning(all, 'acme')).toBe(3);
    expect(mostRunning(all, 'globex')).toBe(2);
    expect(new Set(all.map((e) => e.pid)).size).toBe(2);
    const queue = app.broker.queue(capped.queue);
    for (const r of records) {
      expect(r.status, JSON.stringify(r.error)).toBe('completed');
      expect(r.attempts).toBe(1);
      const job = (await queue.getJob(r.id))!;
      expect([job.attemptsMade, job.attemptsStarted]).toEqual([1, 1]);
    }
    // Every slot was given back.
    const redis = testRedis();
    expect(await redis.exists(keys.tenantRunning(app.env.prefix, capLabel('capped', 'acme')))).toBe(0);
    expect(await redis.exists(keys.tenantRunning(app.env.prefix, capLabel('capped', 'globex')))).toBe(0);
  }, 60_000);

  it('after a SIGKILL of a worker the running count does not leak, and the capacity returns after crash recovery', async () => {
    const app = await openTestApp('sqlite', [capped]);
    const running = keys.tenantRunning(app.env.prefix, capLabel('capped', 'acme'));
    const redis = testRedis();
    const victim = spawnLimitsWorker(app.env, 'victim');
    await waitForWorkers(app.broker.queue(capped.queue), 1, 20_000, [victim]);
    // The victim takes acme's 3 slots with long jobs (short once re-run after the crash).
    const long = await Promise.all(Array.from({ length: 3 }, () => app.enqueue(capped, { ms: 60_000, rerun_ms: 300 }, { tenant: 'acme' })));
    await waitFor(async () => (await events(app.env)).filter((e) => e.ev === 'start').length === 3, 15_000);
    expect(await redis.zcard(running)).toBe(3);
    const survivor = spawnLimitsWorker(app.env, 'survivor');
    await waitForWorkers(app.broker.queue(capped.queue), 2, 20_000, [victim, survivor]);
    // Over the cap: these wait, whichever worker fetches them, and say why.
    const more = await Promise.all(Array.from({ length: 2 }, () => app.enqueue(capped, { ms: 300 }, { tenant: 'acme' })));
    const waiting = await waitFor(async () => (await app.getJob(more[0]!.id))?.waiting);
    expect(waiting).toMatchObject({ reason: 'tenant_cap', key: 'queue:capped#tenant=acme' });
    const printed: string[] = [];
    await inspect('held', { redisUrl: app.env.config.redisUrl, prefix: app.env.prefix, json: true }, (line) => printed.push(line));
    const held = JSON.parse(printed.join('\n')) as { held: { job_id: string; waiting: { reason: string } }[] };
    expect(held.held.find((h) => h.job_id === more[0]!.id)?.waiting.reason).toBe('tenant_cap');
    await sleep(500);
    expect((await events(app.env)).filter((e) => e.ev === 'start')).toHaveLength(3);

    await victim.kill('SIGKILL');
    const killedAt = victim.exitedAt!;
    // Crash recovery (lock expiry + stalled check) hands the 3 back; the survivor re-runs them and runs the 2 held ones.
    const records = await Promise.all([...long, ...more].map((h) => h.wait({ timeoutMs: 30_000 })));
    for (const r of records) expect(r.status).toBe('completed');
    const all = await events(app.env);
    expect(mostRunning(all, 'acme', new Map([[victim.pid, killedAt]]))).toBeLessThanOrEqual(3);
    // The dead worker's slots did not leak: nothing runs, nothing is counted.
    await waitFor(async () => (await redis.zcard(running)) === 0, 5_000);

    // And the whole capacity is back: 3 at once again.
    const before = all.length;
    const again = await Promise.all(Array.from({ length: 4 }, () => app.enqueue(capped, { ms: 800 }, { tenant: 'acme' })));
    await Promise.all(again.map((h) => h.wait({ timeoutMs: 20_000 })));
    expect(mostRunning((await events(app.env)).slice(before), 'acme')).toBe(3);
  }, 90_000);
});
