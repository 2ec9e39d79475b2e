/**
 * A recorder in a process busy with its own jobs leaves the event streams
 * to the group's other recorders, and looks every `CELERITY_RECORDER_YIELD`
 * whether they keep up: while they do it yields again; alone, it still
 * records everything.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { busyProbe, touchJobs } from '../src/process-load.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startCustomRecorder, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const note = defineTask({
  name: 'yield.note',
  input: z.object({ n: z.number() }),
  handler: async ({ n }) => n,
});

/** Keeps this thread's event loop busy for `ms`. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('busyProbe', () => {
  it('is busy only when the loop was mostly used and this process added or ran a job since the last probe', async () => {
    const busy = busyProbe(0.7);
    spin(60);
    expect(busy(), 'a busy loop with no job of its own (a recorder at work)').toBe(false);
    touchJobs();
    spin(60);
    expect(busy(), 'a busy loop that touched a job').toBe(true);
    touchJobs();
    // Long enough that the test runner's own work in this thread (a suite
    // running files side by side) cannot fill 70% of it: it failed once in CI at 60 ms.
    await sleep(300);
    expect(busy(), 'an idle loop that touched a job').toBe(false);
  });
});

describe.each(stores)('a busy process yields its recording (%s store)', (kind) => {
  it("leaves a busy process's events to an idle recorder, and takes no handed rows meanwhile", async () => {
    const app = await openTestApp(kind, [note]);
    // Two recorders of one group, as in two processes: one whose process is busy, one idle.
    const busy = await startCustomRecorder(app, { busy: () => true, yieldMs: 60_000, lingerMs: 5 });
    app.broker.addedSink = (job) => busy.noteAdded(job);
    await waitFor(() => (busy as unknown as { yieldingSince?: number }).yieldingSince !== undefined || undefined);
    const idle = await startCustomRecorder(app, { busy: () => false, lingerMs: 5 });
    const handles = await app.enqueueMany(Array.from({ length: 50 }, (_, n) => ({ task: note, input: { n } })));
    await waitFor(async () => ((await app.store.list({ limit: 100 })).jobs.length === 50 ? true : undefined));
    // Counted once the entries are acknowledged, a moment after the rows are written.
    await waitFor(() => idle.recorded >= 50 || undefined);
    expect(busy.recorded).toBe(0);
    // The busy recorder holds no rows it would not be the one to write.
    expect((busy as unknown as { handed: Map<string, unknown> }).handed.size).toBe(0);
    for (const h of handles) expect((await app.store.get(h.id))?.status).toBe('queued');
  });

  it('yields again while another recorder keeps up, and takes over once none does', async () => {
    const app = await openTestApp(kind, [note]);
    // The default yield: it looks every second whether an entry has waited half of that.
    const busy = await startCustomRecorder(app, { busy: () => true, yieldMs: 1_000, lingerMs: 5 });
    await waitFor(() => (busy as unknown as { yieldingSince?: number }).yieldingSince !== undefined || undefined);
    const idle = await startCustomRecorder(app, { busy: () => false, lingerMs: 5 });
    // Jobs added in waves over three of the busy recorder's yields: each
    // time one runs out, the idle recorder has read everything there was.
    for (let wave = 0; wave < 16; wave++) {
      await app.enqueueMany(Array.from({ length: 5 }, (_, n) => ({ task: note, input: { n } })));
      await sleep(200);
    }
    await waitFor(async () => ((await app.store.list({ limit: 100 })).jobs.length === 80 ? true : undefined));
    // Counted once the entries are acknowledged, a moment after the rows are
    // written: every one of the 160 (a job's `added` and `waiting`) went to the idle recorder.
    await waitFor(() => idle.recorded >= 160 || undefined);
    expect(busy.recorded, 'the busy recorder read nothing while the idle one kept up').toBe(0);
    // The idle recorder goes: the entries wait undelivered, and the busy one reads them.
    await idle.stop();
    const more = await app.enqueueMany(Array.from({ length: 5 }, (_, n) => ({ task: note, input: { n } })));
    await waitFor(async () => ((await app.store.get(more[4]!.id))?.status === 'queued' ? true : undefined), 5_000);
    await waitFor(() => busy.recorded >= 10 || undefined);
  });

  it('alone, still records every job, once its yield has run out', async () => {
    const app = await openTestApp(kind, [note]);
    const busy = await startCustomRecorder(app, { busy: () => true, yieldMs: 300, lingerMs: 5 });
    const started = Date.now();
    const handles = await app.enqueueMany(Array.from({ length: 50 }, (_, n) => ({ task: note, input: { n } })));
    await waitFor(async () => ((await app.store.list({ limit: 100 })).jobs.length === 50 ? true : undefined), 5_000);
    await waitFor(() => busy.recorded >= 50 || undefined);
    // Yielded first (so it could not have read them at once), then caught up.
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    for (const h of handles) expect((await app.store.get(h.id))?.status).toBe('queued');
  });
});
