/**
 * The queued rows a producer hands to the recorder of its own process
 * (`Recorder.noteAdded`): written with the job's events from the job the
 * producer holds, equal to what the job's hash gives, and only a shortcut:
 * refused, dropped, or not used because the events went to another
 * recorder, the events write the row from the hash as before.
 */
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { App } from '../src/app.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import type { JobRecord } from '../src/job-record.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { RECORDER_GROUP, Recorder } from '../src/store/recorder.ts';
import { withTenantScope } from '../src/store/tenant-scope.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startRecorder, startWorker, stores, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

/** A busy test process's recorder would leave its jobs to others and take no handed rows (recorder-yield.test.ts). */
const NO_YIELD = { recorderYield: 0 };

const note = defineTask({
  name: 'handed.note',
  input: z.object({ text: z.string(), tags: z.array(z.string()).default([]) }),
  retries: 2,
  handler: async ({ text }) => ({ echoed: text }),
});

/** Keeps nested values as given (`z.any()`): the caller's objects, not copies. */
const loose = defineTask({
  name: 'handed.loose',
  input: z.object({ items: z.array(z.any()) }),
  handler: async ({ items }) => items.length,
});

/** The stored row's position, which says who wrote it last. */
async function seqOf(app: App, id: string): Promise<string | undefined> {
  const row = await withTenantScope(app.store, ALL_TENANTS, (db) => sql<{ event_seq: string }>`select event_seq from jobs where id = ${id}`.execute(db));
  return row.rows[0]?.event_seq;
}

/** The history's row and the live record from Redis, side by side, once the row exists. */
async function rowAndLive(app: App, id: string): Promise<{ row: JobRecord; live: JobRecord | null }> {
  const row = await waitFor(() => app.store.get(id));
  const live = await app.getJob(id);
  // When a delayed job becomes runnable is read from Redis only.
  return { row, live: live && { ...live, runAt: undefined } };
}

describe.each(stores)('queued rows handed over by the producer (%s store)', (kind) => {
  it("writes each new job's row from what the producer knew, equal to the live record, without reading the job back", async () => {
    const app = await openTestApp(kind, [note, loose], NO_YIELD);
    const recorder = await startRecorder(app);
    // The caller changes its input once the enqueue returned: the job, and its row, keep what was enqueued.
    const input = { items: [{ n: 1 }] };
    const changed = await app.enqueue(loose, input);
    input.items[0]!.n = 2;
    const handles = [
      changed,
      await app.enqueue(note, { text: 'plain' }),
      await app.enqueue(note, { text: 'options', tags: ['a', 'ü'] }, { tenant: 'acme', keyId: 'key-1', timeLimits: { soft: 1_000, hard: 2_000 }, traceId: 'trace-1' }),
      await app.enqueue(note, { text: 'priority' }, { priority: 7 }),
      await app.enqueue(note, { text: 'delayed' }, { delay: 60_000 }),
      await app.enqueueByName('handed.note', { text: 'by name' }),
      ...(await app.enqueueMany([
        { task: note, input: { text: 'bulk 1' } },
        { task: note, input: { text: 'bulk 2' }, options: { tenant: 'globex' } },
      ])),
    ];
    for (const { id } of handles) {
      const { row, live } = await rowAndLive(app, id);
      expect(row, id).toEqual(live);
      expect(row.status).toBe('queued');
    }
    expect((await app.store.get(changed.id))?.input).toEqual({ items: [{ n: 1 }] });
    // Once the recorder has read and acknowledged every event: only the
    // delayed job was read back (its `delayed` event is a state of its own,
    // written from its hash).
    await waitFor(async () => (await groupLag(app)) === 0);
    expect(recorder.hashReads).toBe(1);
  });

  it('a burst is written from its handed rows as its events come, each row once, at its events position', async () => {
    const app = await openTestApp(kind, [note], NO_YIELD);
    const recorder = await startRecorder(app);
    const writes = vi.spyOn(app.store, 'writeRows');
    const handles = await app.enqueueMany(Array.from({ length: 450 }, (_, i) => ({ task: note, input: { text: `burst ${i}` } })));
    await waitFor(async () => (await groupLag(app)) === 0);
    expect(recorder.hashReads).toBe(0);
    expect(writes.mock.calls.flatMap((c) => c[0])).toHaveLength(450);
    for (const h of [handles[0]!, handles[449]!]) {
      const { row, live } = await rowAndLive(app, h.id);
      expect(row).toEqual(live);
      expect((await seqOf(app, h.id))?.startsWith('0'.repeat(15))).toBe(false);
    }
  });

  it('handed rows the store refused with their events are written from their hashes', async () => {
    const app = await openTestApp(kind, [note], NO_YIELD);
    const refused = vi.spyOn(app.store, 'writeRows').mockRejectedValueOnce(new Error('refused for the test'));
    const recorder = await startRecorder(app);
    const { id } = await app.enqueue(note, { text: 'with its events' });
    await waitFor(async () => (await groupLag(app)) === 0);
    expect(refused).toHaveBeenCalled();
    expect(recorder.hashReads).toBe(1);
    const { row, live } = await rowAndLive(app, id);
    expect(row).toEqual(live);
  });

  it('a job added, started and completed within one batch is written once, from its handed row and its events', async () => {
    const app = await openTestApp(kind, [note], NO_YIELD);
    const recorder = await startRecorder(app);
    const writes = vi.spyOn(app.store, 'writeRows');
    const advances = vi.spyOn(app.store, 'advance');
    await startWorker(app);
    const { id } = await app.enqueue(note, { text: 'runs' });
    await waitFor(async () => (await app.store.get(id))?.status === 'completed');
    const end = await rowAndLive(app, id);
    expect(end.row).toEqual(end.live);
    expect(end.row.result).toEqual({ echoed: 'runs' });
    expect(recorder.hashReads).toBe(0);
    // One upsert of the finished row; no update of a queued one.
    const rowsOf = (calls: unknown[][]) => calls.flatMap((c) => c[0] as { id: string }[]).filter((r) => r.id === id);
    expect(rowsOf(writes.mock.calls)).toHaveLength(1);
    expect(rowsOf(advances.mock.calls)).toHaveLength(0);
  });

  it('an enqueue whose row cannot be built a second time still succeeds, and its events write the row', async () => {
    const app = await openTestApp(kind, [note], NO_YIELD);
    const recorder = await startRecorder(app);
    // A task this process does not define: its input goes to BullMQ as given, and is serialized there first.
    let serialized = 0;
    const input = {
      toJSON() {
        serialized += 1;
        if (serialized > 1) throw new Error('serialized twice');
        return { text: 'once' };
      },
    };
    const { id } = await app.enqueueByName('elsewhere.task', input, { queue: 'default' });
    expect(serialized).toBe(2);
    const row = await waitFor(() => app.store.get(id));
    expect(row.input).toEqual({ text: 'once' });
    expect(recorder.hashReads).toBe(1);
  });

  it('a row whose events went to another recorder of the group is written by that one from the hash, and dropped from the hand once stale', async () => {
    const app = await openTestApp(kind, [note], NO_YIELD);
    await testRedis().xgroup('CREATE', app.broker.eventsKey('default'), RECORDER_GROUP, '0', 'MKSTREAM');
    const recorderOf = () => new Recorder({ redis: app.broker.redis, store: app.store, queues: [app.broker.queue('default')], logger: app.logger, batchSize: 1000, prefix: app.config.prefix });
    // The producer's recorder takes the rows without reading the stream (its loop is not started).
    const producers = recorderOf();
    const hand = producers as unknown as { running: boolean; handed: Map<string, unknown>; dropStaleHanded(): void };
    hand.running = true;
    app.broker.addedSink = (job) => producers.noteAdded(job);
    const { id } = await app.enqueue(note, { text: 'elsewhere' });
    expect([...hand.handed.keys()]).toEqual([id]);

    const other = recorderOf();
    const entries = (await app.broker.redis.xrange(app.broker.eventsKey('default'), '-', '+')) as [string, string[]][];
    expect(entries.map(([, f]) => f[f.indexOf('event') + 1])).toEqual(['added', 'waiting']);
    await (other as unknown as { applyReply(reply: [string, [string, string[]][]][]): Promise<void> }).applyReply([[app.broker.eventsKey('default'), entries]]);
    expect(other.hashReads).toBe(1);
    const { row, live } = await rowAndLive(app, id);
    expect(row).toEqual(live);
    expect(await seqOf(app, id)).toBe(padStreamId(entries[1]![0]));

    hand.dropStaleHanded();
    expect(hand.handed.size).toBe(1);
    vi.useFakeTimers({ now: Date.now() + 1_001, toFake: ['Date'] });
    try {
      hand.dropStaleHanded();
    } finally {
      vi.useRealTimers();
    }
    expect(hand.handed.size).toBe(0);
  });
});

/** Entries of the default queue's stream not yet read by the recorders' group, plus those read and not acknowledged. */
async function groupLag(app: App): Promise<number> {
  const groups = (await testRedis().xinfo('GROUPS', app.broker.eventsKey('default'))) as unknown[][];
  const group = groups.map((g) => Object.fromEntries(Array.from({ length: g.length / 2 }, (_, i) => [g[2 * i], g[2 * i + 1]]))).find((g) => g.name === RECORDER_GROUP);
  return Number(group?.lag ?? 1) + Number(group?.pending ?? 1);
}
