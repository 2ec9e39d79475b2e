/**
 * A recorder that reads a job's add after the job has run (the only
 * recorder restarted, the store back after an outage: a backlog to catch
 * up) writes the job's row from its hash, as queued (its add's status),
 * though the hash already counts its attempt. The job's start and end, read
 * in a later batch, then move that row forward with no second read of the
 * hash. Before, the row was written `retrying` with an interrupted attempt,
 * the start and end were refused, and the job was read and written in full
 * again: a recorder was slowest exactly when it was furthest behind
 * (docs/benchmarks.md, run 30).
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineTask } from '../src/task.ts';
import { openTestApp, startCustomRecorder, startWorker, stores, useCleanup, waitFor } from './helpers.ts';

useCleanup();

const echo = defineTask({
  name: 'catchup.echo',
  input: z.object({ n: z.number() }),
  handler: async ({ n }) => ({ n }),
});

describe.each(stores)('a recorder catching up jobs that ended before it read their adds (%s store)', (kind) => {
  it("reads each job's hash once, and every row equals the live record", async () => {
    const app = await openTestApp(kind, [echo], { recorderYield: 0 });
    const jobs = 20;
    const handles: { id: string }[] = [];
    for (let n = 0; n < jobs; n++) handles.push(await app.enqueue(echo, { n }));
    const worker = await startWorker(app);
    await waitFor(async () => (await Promise.all(handles.map((h) => app.getJob(h.id)))).every((j) => j?.status === 'completed') || null);
    await worker.close();

    // Each add is two entries (`added`, `waiting`): the first batch holds
    // every add and nothing else, so the starts and ends come in the next.
    const recorder = await startCustomRecorder(app, { batchSize: jobs * 2, lingerMs: 0 });
    await waitFor(async () => (await Promise.all(handles.map((h) => app.store.get(h.id)))).every((r) => r?.status === 'completed') || null);
    await waitFor(async () => (recorder.recorded >= jobs * 4 ? true : null));
    expect(recorder.hashReads).toBe(jobs);
    for (const { id } of handles) {
      const live = await app.getJob(id);
      expect(await app.store.get(id), id).toEqual({ ...live, runAt: undefined });
    }
  });
});
