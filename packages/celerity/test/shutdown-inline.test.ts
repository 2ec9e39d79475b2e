import type { Queue } from 'bullmq';
import { describe, expect, it } from 'vitest';
import type { TestEnv } from './helpers.ts';
import { stubborn } from './fixtures/stubborn-app.ts';
import { openTestApp, sleep, testRedis, useCleanup, waitFor } from './helpers.ts';
import { Proc, processEnv, waitForWorkers } from './process-helpers.ts';

/**
 * docs/semantics.md, Graceful shutdown: an inline handler still running at
 * the end of the grace cannot be killed, so its job is not handed back while
 * it runs; a second worker on the same queue, idle and ready, must never run
 * the job beside it.
 */
useCleanup();

const GRACE = 500;
const LOCK_MS = 2_000;
const STALLED_MS = 1_000;

function spawnStubborn(env: TestEnv, name: string, grace = 30_000): Proc {
  return new Proc(name, process.execPath, ['packages/celerity/bin/celerity.js', 'worker', '--app', 'packages/celerity/test/fixtures/stubborn-app.ts'], {
    env: processEnv(env, {
      CELERITY_CONCURRENCY: '1',
      CELERITY_SHUTDOWN_GRACE: String(grace),
      CELERITY_LOCK_DURATION: String(LOCK_MS),
      CELERITY_STALLED_INTERVAL: String(STALLED_MS),
      LOG_LEVEL: 'info',
    }),
  });
}

async function waitActive(queue: Queue, id: string, worker: Proc): Promise<void> {
  await waitFor(async () => {
    if (!worker.running) throw new Error(`${worker.name} exited; output:\n${worker.output}`);
    return (await queue.getJobState(id)) === 'active';
  }, 20_000);
}

async function finalRecord(app: Awaited<ReturnType<typeof openTestApp>>, id: string) {
  return waitFor(
    async () => {
      const record = await app.getJob(id);
      return record?.status === 'completed' || record?.status === 'failed' ? record : undefined;
    },
    30_000,
    100,
  );
}

describe('shutdown with an inline handler that ignores its signal', () => {
  it('keeps the job while the handler runs past the grace, hands it back once the handler returns, and no other worker runs it meanwhile', async () => {
    const app = await openTestApp('sqlite', [stubborn]);
    const redis = testRedis();
    const queue = app.broker.queue(stubborn.queue);
    const first = spawnStubborn(app.env, 'worker-1', GRACE);
    await waitForWorkers(queue, 1, 20_000, [first]);
    const handle = await app.enqueue(stubborn, { ms: 600_000, rerun_ms: 100 });
    await waitActive(queue, handle.id, first);
    const second = spawnStubborn(app.env, 'worker-2');
    await waitForWorkers(queue, 2, 20_000, [first, second]);

    await first.kill('SIGTERM');
    // Past the grace: the handler ignored its signal and still runs; worker-2 is idle beside it.
    await waitFor(() => first.output.includes('shutdown grace over'), 10_000);
    await sleep(1_500);
    expect(first.running).toBe(true);
    expect(await queue.getJobState(handle.id)).toBe('active');
    // The handler returns (within the CLI's overrun, so before the process exits).
    await redis.set(`${app.env.prefix}:test:release:${handle.id}`, '1');
    const exit = await first.waitExit(15_000);
    expect(exit, first.output).toMatchObject({ code: 0, signal: null });

    const record = await finalRecord(app, handle.id);
    expect(await redis.lrange(`${app.env.prefix}:test:overlaps`, 0, -1)).toEqual([]);
    expect(record).toMatchObject({ status: 'completed', result: { pid: second.pid, attempt: 2 } });
    const runs = await redis.lrange(`${app.env.prefix}:test:runs`, 0, -1);
    expect(runs).toEqual([`${handle.id} ${first.pid} 1`, `${handle.id} ${second.pid} 2`]);
  }, 60_000);

  it('leaves the job locked when the handler outlives the shutdown; the process exits and the job is recovered as after a crash, never run twice at once', async () => {
    const app = await openTestApp('sqlite', [stubborn]);
    const redis = testRedis();
    const queue = app.broker.queue(stubborn.queue);
    const first = spawnStubborn(app.env, 'worker-1', GRACE);
    await waitForWorkers(queue, 1, 20_000, [first]);
    // Ten minutes: only the process's exit stops it.
    const handle = await app.enqueue(stubborn, { ms: 600_000, rerun_ms: 100 });
    await waitActive(queue, handle.id, first);
    const second = spawnStubborn(app.env, 'worker-2');
    await waitForWorkers(queue, 2, 20_000, [first, second]);

    await first.kill('SIGTERM');
    const exit = await first.waitExit(20_000);
    expect(exit.signal, first.output).toBeNull();

    const record = await finalRecord(app, handle.id);
    expect(await redis.lrange(`${app.env.prefix}:test:overlaps`, 0, -1)).toEqual([]);
    expect(first.output).toContain('handlers still running after the shutdown grace');
    expect(record).toMatchObject({ status: 'completed', result: { pid: second.pid, attempt: 2 } });
  }, 60_000);
});
