/**
 * The queued rows a producer hands to the recorder of its own process
 * (`Recorder.noteAdded`): written from the job the producer holds, equal to
 * what the job's hash gives, never over a row its events wrote, and only a
 * shortcut: lost, the events write the row as before.
 */
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import type { App } from '../src/app.ts';
import { ALL_TENANTS } from '../src/auth/principal.ts';
import type { JobRecord } from '../src/job-record.ts';
import { HANDED_SEQ } from '../src/store/batch-upsert.ts';
import { toRow } from '../src/store/job-store.ts';
import { padStreamId } from '../src/store/event-fold.ts';
import { RECORDER_GROUP, Recorder } from '../src/store/recorder.ts';
import { withTenantScope } from '../src/store/tenant-scope.ts';
import { defineTask } from '../src/task.ts';
import { openTestApp, startRecorder, startWorker, stores, testRedis, useCleanup, waitFor } from './helpers.ts';

useCleanup();

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

const handedRow = (record: JobRecord) => toRow({ record, eventSeq: HANDED_SEQ }, Date.now());

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
    const app = await openTestApp(kind, [note, loose]);
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

  it('a burst hands its rows over before their events are read, and the events then write nothing', async () => {
    const app = await openTestApp(kind, [note]);
    const recorder = await startRecorder(app);
    const handles = await app.enqueueMany(Array.from({ length: 450 }, (_, i) => ({ task: note, input: { text: `burst ${i}` } })));
    await waitFor(async () => (await groupLag(app)) === 0);
    expect(recorder.hashReads).toBe(0);
    for (const h of [handles[0]!, handles[449]!]) {
      const { row, live } = await rowAndLive(app, h.id);
      expect(row).toEqual(live);
    }
    // Written ahead of their events (200 at a time), the first rows stay at the handed position.
    expect(await seqOf(app, handles[0]!.id)).toBe(HANDED_SEQ);
  });

  it('handed rows the store refused are written from their hashes, written ahead or with their events', async () => {
    const app = await openTestApp(kind, [note]);
    const ahead = vi.spyOn(app.store, 'insertHanded').mockRejectedValue(new Error('refused for the test'));
    const withEvents = vi.spyOn(app.store, 'writeRows').mockRejectedValueOnce(new Error('refused for the test'));
    const recorder = await startRecorder(app);
    const burst = await app.enqueueMany(Array.from({ length: 250 }, (_, i) => ({ task: note, input: { text: `ahead ${i}` } })));
    await waitFor(async () => (await groupLag(app)) === 0);
    const { id } = await app.enqueue(note, { text: 'with its events' });
    await waitFor(async () => (await groupLag(app)) === 0);
    expect(ahead).toHaveBeenCalled();
    expect(withEvents).toHaveBeenCalled();
    expect(recorder.hashReads).toBeGreaterThan(0);
    for (const jobId of [burst[0]!.id, burst[249]!.id, id]) {
      const { row, live } = await rowAndLive(app, jobId);
      expect(row).toEqual(live);
      expect(await seqOf(app, jobId)).not.toBe(HANDED_SEQ);
    }
  });

  it('a job added, started and completed within one batch is written once, from its handed row and its events', async () => {
    const app = await openTestApp(kind, [note]);
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
    const app = await openTestApp(kind, [note]);
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

  it('a handed row never replaces a row its events wrote, and an `added` event is skipped only for a handed row or one already past it', async () => {
    const app = await openTestApp(kind, [note]);
    const { id } = await app.enqueue(note, { text: 'ordered' });
    const queued = (await app.getJob(id))!;
    const completed: JobRecord = { ...queued, status: 'completed', attempts: 1, startedAt: queued.createdAt + 1, finishedAt: queued.createdAt + 2, result: { echoed: 'ordered' } };
    await app.store.write([{ record: completed, eventSeq: padStreamId('5-0') }]);
    await app.store.insertHanded([handedRow(queued)]);
    expect((await app.store.get(id))?.status).toBe('completed');
    expect(await seqOf(app, id)).toBe(padStreamId('5-0'));

    const other = await app.enqueue(note, { text: 'handed' });
    await app.store.insertHanded([handedRow((await app.getJob(other.id))!)]);
    const written = await app.store.addsWritten([
      { id, seq: padStreamId('4-0') }, // the row is past the event
      { id: other.id, seq: padStreamId('9-0') }, // the producer's row
      { id: 'not-written', seq: padStreamId('9-0') },
    ]);
    expect([...written].sort()).toEqual([id, other.id].sort());
    // A row of an earlier event (a chosen id enqueued again) is not the producer's: the event is written.
    expect(await app.store.addsWritten([{ id, seq: padStreamId('6-0') }])).toEqual(new Set());
  });

  it('another recorder of the group, given an `added` event whose row was handed over, reads and writes nothing', async () => {
    const app = await openTestApp(kind, [note]);
    await testRedis().xgroup('CREATE', app.broker.eventsKey('default'), RECORDER_GROUP, '0', 'MKSTREAM');
    const { id } = await app.enqueue(note, { text: 'elsewhere' });
    await app.store.insertHanded([handedRow((await app.getJob(id))!)]);
    const other = new Recorder({ redis: app.broker.redis, store: app.store, queues: [app.broker.queue('default')], logger: app.logger, batchSize: 1000, prefix: app.config.prefix });
    const writes = vi.spyOn(app.store, 'write');
    const evals = vi.spyOn(app.broker.redis, 'eval');
    const entries = (await app.broker.redis.xrange(app.broker.eventsKey('default'), '-', '+')) as [string, string[]][];
    expect(entries.map(([, f]) => f[f.indexOf('event') + 1])).toEqual(['added', 'waiting']);
    await (other as unknown as { applyReply(reply: [string, [string, string[]][]][]): Promise<void> }).applyReply([[app.broker.eventsKey('default'), entries]]);
    expect(writes).not.toHaveBeenCalled();
    expect(evals).not.toHaveBeenCalled();
    expect(await seqOf(app, id)).toBe(HANDED_SEQ);
  });
});

/** Entries of the default queue's stream not yet read by the recorders' group, plus those read and not acknowledged. */
async function groupLag(app: App): Promise<number> {
  const groups = (await testRedis().xinfo('GROUPS', app.broker.eventsKey('default'))) as unknown[][];
  const group = groups.map((g) => Object.fromEntries(Array.from({ length: g.length / 2 }, (_, i) => [g[2 * i], g[2 * i + 1]]))).find((g) => g.name === RECORDER_GROUP);
  return Number(group?.lag ?? 1) + Number(group?.pending ?? 1);
}
