/**
 * CELERITY_RECORDER=off: a process that runs jobs (or serves the API)
 * without writing the history. Its jobs still run; the history is written
 * by whichever process records, even later, from the event streams.
 */
import { describe, expect, it } from 'vitest';
import { RECORDER_GROUP } from '../src/store/recorder.ts';
import { openTestApp, startRecorder, testRedis, useCleanup, waitFor } from './helpers.ts';
import { relSleep } from './fixtures/reliability-app.ts';
import { freePort, Proc, processEnv, RELIABILITY_APP, spawnWorker, waitForWorkers } from './process-helpers.ts';

useCleanup();

describe('CELERITY_RECORDER=off', () => {
  it('runs jobs without recording them; a recorder started later writes their history', async () => {
    const app = await openTestApp('sqlite', [relSleep]);
    const worker = spawnWorker(app.env, { env: { CELERITY_RECORDER: 'off' } });
    const queue = app.broker.queue(relSleep.queue);
    await waitForWorkers(queue, 1, 20_000, [worker]);

    const handle = await app.enqueue(relSleep, { ms: 1 });
    const done = await handle.wait({ timeoutMs: 15_000 });
    expect(done.status).toBe('completed');

    // No recorder ever read the stream: its consumer group was never made.
    const redis = testRedis();
    try {
      const groups = (await redis.xinfo('GROUPS', `${app.env.prefix}:${relSleep.queue}:events`)) as unknown[][];
      expect(groups.map((g) => g[1])).not.toContain(RECORDER_GROUP);
    } finally {
      redis.disconnect();
    }
    expect((await app.listJobs({ limit: 10 })).jobs).toEqual([]);

    // The events wait in the stream for a recorder.
    await startRecorder(app);
    const row = await waitFor(async () => (await app.listJobs({ limit: 10 })).jobs.find((j) => j.id === handle.id && j.status === 'completed'), 15_000);
    expect(row.result).toMatchObject({ attempt: 1 });
  }, 40_000);
});

describe('celerity recorder', () => {
  it('records, as a process of its own, the jobs of workers that do not; serves its probes; exits 0 on SIGTERM', async () => {
    const app = await openTestApp('postgres', [relSleep]);
    const worker = spawnWorker(app.env, { env: { CELERITY_RECORDER: 'off' } });
    const port = await freePort();
    // CELERITY_RECORDER=off is the other processes' switch: given to this one too, it records all the same.
    const recorder = new Proc('recorder', process.execPath, ['packages/celerity/bin/celerity.js', 'recorder', '--app', RELIABILITY_APP, '--health-port', String(port)], {
      env: processEnv(app.env, { CELERITY_RECORDER: 'off' }),
    });
    const queue = app.broker.queue(relSleep.queue);
    await waitForWorkers(queue, 1, 20_000, [worker, recorder]);

    const handles = await Promise.all(Array.from({ length: 20 }, () => app.enqueue(relSleep, { ms: 1 })));
    await Promise.all(handles.map((h) => h.wait({ timeoutMs: 15_000 })));
    const ids = new Set(handles.map((h) => h.id));
    await waitFor(async () => (await app.listJobs({ limit: 50, status: 'completed' })).jobs.filter((j) => ids.has(j.id)).length === ids.size || undefined, 15_000);

    const probe = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    expect(await probe('/healthz')).toMatchObject({ status: 200 });
    expect(JSON.parse((await probe('/readyz')).body)).toEqual({ status: 'ready', redis: 'up', store: 'up' });
    expect((await probe('/metrics')).body).toContain('celerity_recorder_lag_seconds');

    await recorder.kill('SIGTERM');
    expect(await recorder.waitExit(15_000)).toEqual({ code: 0, signal: null });
  }, 60_000);
});
