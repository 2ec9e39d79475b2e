/**
 * GET /v1/events: the live feed over Server-Sent Events, against the real
 * Redis. One hub per process reads every queue's BullMQ event stream and
 * fans it out; these tests check what reaches a client (states, progress,
 * filters, tenants and task patterns), resuming with Last-Event-ID from the
 * hub's memory and from the streams, that fifty clients share one Redis
 * reader, the cleanup of a closed client, a slow client, and bad ids.
 */
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { acquireEventHub, eventHubOf } from '../src/api/event-hub.ts';
import { compareStreamIds, encodePosition, parsePosition } from '../src/api/events/position.ts';
import { createKey } from '../src/auth/key-store.ts';
import { buildServer, celerityApi, defineTask, type App } from '../src/index.ts';
import { deferred, onCleanup, openTestApp, startWorker, stores, testRedis, useCleanup, waitFor, type StoreKind } from './helpers.ts';

useCleanup();

const gate = { release: deferred() };

const steps = defineTask({
  name: 'events.steps',
  input: z.object({ n: z.number() }),
  handler: async ({ n }, ctx) => {
    await ctx.progress({ percent: 50, stage: 'half' });
    await gate.release.promise;
    return { n };
  },
});
const quick = defineTask({ name: 'events.quick', input: z.object({ n: z.number() }), handler: async ({ n }) => ({ n }) });
const flaky = defineTask({
  name: 'events.flaky',
  retries: 1,
  backoff: { base: 20, max: 20, jitter: 'none' },
  input: z.object({}),
  handler: async (_input, ctx) => {
    if (ctx.attempt === 1) throw new Error('first attempt fails');
    return { attempt: ctx.attempt };
  },
});
const doomed = defineTask({
  name: 'events.doomed',
  retries: 0,
  input: z.object({}),
  handler: async () => {
    throw new Error('always');
  },
});
const slow = defineTask({
  name: 'events.slow',
  input: z.object({}),
  handler: async (_input, ctx) => {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, 30_000);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      });
    });
  },
});
const report = defineTask({ name: 'reports.daily', queue: 'reports', input: z.object({ day: z.string() }), handler: async () => ({ ok: true }) });
const mail = defineTask({ name: 'mail.send', queue: 'mail', input: z.object({ to: z.string() }), handler: async () => ({ sent: true }) });

interface SseMessage {
  id: string | undefined;
  event: string;
  data: string;
}

interface JobEvent {
  job_id: string;
  task: string;
  queue: string;
  tenant: string | null;
  status: string;
  progress?: unknown;
  attempt?: number;
  at: string;
}

/** An SSE client over fetch: parses messages as EventSource would, keeps them all. */
interface Stream {
  status: number;
  headers: Headers;
  messages: SseMessage[];
  /** Comment lines (heartbeats) read. */
  comments: number;
  /** The id the browser would send back on reconnection. */
  lastEventId: string | undefined;
  jobEvents(): (JobEvent & { event: string })[];
  ended: Promise<void>;
  close(): void;
}

async function openStream(base: string, path: string, headers: Record<string, string> = {}): Promise<Stream> {
  const { res, req } = await get(`${base}${path}`, { accept: 'text/event-stream', ...headers });
  const messages: SseMessage[] = [];
  const stream: Stream = {
    status: res.statusCode ?? 0,
    headers: new Headers(Object.entries(res.headers).map(([k, v]) => [k, String(v)])),
    messages,
    comments: 0,
    lastEventId: undefined,
    jobEvents: () => messages.filter((m) => m.event !== 'lagged').map((m) => ({ ...(JSON.parse(m.data) as JobEvent), event: m.event })),
    ended: new Promise((resolve) => res.on('close', resolve)),
    close: () => req.destroy(),
  };
  onCleanup(() => req.destroy());
  res.setEncoding('utf8');
  let buffer = '';
  let data: string[] = [];
  let event = '';
  let id: string | undefined;
  res.on('data', (chunk: string) => {
    if (stream.status !== 200) return;
    buffer += chunk;
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
      if (line === '') {
        if (id !== undefined) stream.lastEventId = id;
        if (data.length > 0) messages.push({ id, event: event || 'message', data: data.join('\n') });
        data = [];
        event = '';
        id = undefined;
      } else if (line.startsWith(':')) {
        stream.comments++;
      } else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(text);
        else if (field === 'event') event = text;
        else if (field === 'id') id = text;
      }
    }
  });
  res.on('error', () => {});
  return stream;
}

/** A GET on its own connection (no pool: a stream holds its socket, and closing it must not leave another behind). */
function get(url: string, headers: Record<string, string>): Promise<{ req: ClientRequest; res: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent: false });
    req.on('response', (res) => resolve({ req, res }));
    req.on('error', reject);
    req.end();
  });
}

async function serve(app: App): Promise<{ server: FastifyInstance; base: string }> {
  const server = await buildServer(app, { logger: false });
  await server.listen({ port: 0, host: '127.0.0.1' });
  onCleanup(() => server.close());
  return { server, base: `http://127.0.0.1:${(server.server.address() as { port: number }).port}` };
}

function statuses(stream: Stream, jobId: string): string[] {
  return stream
    .jobEvents()
    .filter((e) => e.job_id === jobId)
    .map((e) => e.event);
}

describe('GET /v1/events', () => {
  it("streams a job's queued, started, progress and completed, with the SSE headers and the security headers", async () => {
    gate.release = deferred();
    const app = await openTestApp('sqlite', [steps]);
    const { base } = await serve(app);
    const stream = await openStream(base, '/v1/events');
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(stream.headers.get('cache-control')).toBe('no-cache');
    expect(stream.headers.get('x-accel-buffering')).toBe('no');
    expect(stream.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(stream.headers.get('x-request-id')).toBeTruthy();
    const handle = await app.enqueue(steps, { n: 1 });
    await startWorker(app);
    await waitFor(() => statuses(stream, handle.id).includes('progress'));
    gate.release.resolve();
    await handle.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(stream, handle.id).includes('completed'));
    expect(statuses(stream, handle.id)).toEqual(['queued', 'started', 'progress', 'completed']);
    const events = stream.jobEvents().filter((e) => e.job_id === handle.id);
    expect(events[0]).toMatchObject({ job_id: handle.id, task: 'events.steps', queue: 'default', tenant: null, status: 'queued' });
    expect(events[1]).toMatchObject({ status: 'started', attempt: 1 });
    expect(events[2]).toMatchObject({ status: 'progress', progress: { percent: 50, stage: 'half' } });
    expect(events[3]).toMatchObject({ status: 'completed', attempt: 1 });
    for (const e of events) expect(Math.abs(Date.parse(e.at) - Date.now())).toBeLessThan(60_000);
    // Every message carries a position naming each queue of the app.
    for (const m of stream.messages) expect([...parsePosition(m.id!, 'id').keys()]).toEqual(app.queueNames());
  });

  it('names retries, failures and cancellations as the job statuses do', async () => {
    const app = await openTestApp('sqlite', [flaky, doomed, slow]);
    const { base } = await serve(app);
    const stream = await openStream(base, '/v1/events');
    const retried = await app.enqueue(flaky, {});
    const failed = await app.enqueue(doomed, {});
    const cancelledQueued = await app.enqueue(slow, {});
    await app.cancel(cancelledQueued.id);
    await startWorker(app);
    const running = await app.enqueue(slow, {});
    await waitFor(() => statuses(stream, running.id).includes('started'));
    await app.cancel(running.id);
    await waitFor(() => statuses(stream, running.id).includes('cancelled'));
    await waitFor(() => statuses(stream, retried.id).includes('completed') && statuses(stream, failed.id).includes('failed'));
    expect(statuses(stream, retried.id)).toEqual(['queued', 'started', 'retrying', 'started', 'completed']);
    const attempts = stream
      .jobEvents()
      .filter((e) => e.job_id === retried.id)
      .map((e) => e.attempt ?? 0);
    expect(attempts).toEqual([0, 1, 1, 2, 2]);
    expect(statuses(stream, failed.id)).toEqual(['queued', 'started', 'failed']);
    expect(statuses(stream, cancelledQueued.id)).toEqual(['queued', 'cancelled']);
    expect(statuses(stream, running.id)).toEqual(['queued', 'started', 'cancelled']);
    // Each message's status is the one GET /v1/jobs/{id} ends with.
    for (const h of [retried, failed, cancelledQueued, running]) expect((await app.getJob(h.id))?.status).toBe(statuses(stream, h.id).at(-1));
  });

  it('names a deleted job `deleted`, waiting or finished, and a cancel still `cancelled`', async () => {
    const app = await openTestApp('sqlite', [quick, slow]);
    const { base } = await serve(app);
    const stream = await openStream(base, '/v1/events');
    const waiting = await app.enqueue(slow, {});
    const cancelled = await app.enqueue(slow, {});
    await waitFor(() => statuses(stream, waiting.id).includes('queued') && statuses(stream, cancelled.id).includes('queued'));
    await app.deleteJob(waiting.id);
    await app.cancel(cancelled.id);
    await startWorker(app);
    const finished = await app.enqueue(quick, { n: 1 });
    await finished.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(stream, finished.id).includes('completed'));
    await app.deleteJob(finished.id);
    await waitFor(() => statuses(stream, finished.id).includes('deleted') && statuses(stream, waiting.id).includes('deleted'));
    await waitFor(() => statuses(stream, cancelled.id).includes('cancelled'));
    expect(statuses(stream, waiting.id)).toEqual(['queued', 'deleted']);
    expect(statuses(stream, cancelled.id)).toEqual(['queued', 'cancelled']);
    expect(statuses(stream, finished.id)).toEqual(['queued', 'started', 'completed', 'deleted']);
    const deleted = stream.jobEvents().find((e) => e.job_id === finished.id && e.event === 'deleted');
    expect(deleted).toMatchObject({ job_id: finished.id, task: 'events.quick', queue: 'default', tenant: null, status: 'deleted' });
    expect(await app.getJob(finished.id)).toBeNull();
  });

  it("tells a retry's `queued` the job it retries, and no other job's", async () => {
    const app = await openTestApp('sqlite', [doomed]);
    const { base } = await serve(app);
    const stream = await openStream(base, '/v1/events');
    await startWorker(app);
    const original = await app.enqueue(doomed, {});
    await waitFor(() => statuses(stream, original.id).includes('failed'));
    const recorder = await app.startRecorder();
    onCleanup(() => recorder.stop());
    await waitFor(async () => (await app.getJob(original.id))?.status === 'failed');
    const retry = await app.retry(original.id);
    await waitFor(() => statuses(stream, retry.id).includes('failed'));
    const events = stream.jobEvents();
    expect(events.find((e) => e.job_id === retry.id && e.event === 'queued')).toMatchObject({ status: 'queued', retry_of: original.id });
    for (const e of events.filter((e) => e.job_id === retry.id && e.event !== 'queued')) expect(e).not.toHaveProperty('retry_of');
    for (const e of events.filter((e) => e.job_id === original.id)) expect(e).not.toHaveProperty('retry_of');
  });

  it('filters by job, task (or pattern) and queue', async () => {
    const app = await openTestApp('sqlite', [quick, report, mail]);
    const { base } = await serve(app);
    const first = await app.enqueue(quick, { n: 1 });
    const byJob = await openStream(base, `/v1/events?job=${first.id}`);
    const byTask = await openStream(base, '/v1/events?task=reports.*');
    const byQueue = await openStream(base, '/v1/events?queue=mail');
    const all = await openStream(base, '/v1/events');
    await startWorker(app);
    const jobs = [await app.enqueue(report, { day: 'd' }), await app.enqueue(mail, { to: 'x' }), await app.enqueue(quick, { n: 2 })];
    await Promise.all(jobs.map((j) => j.wait({ timeoutMs: 10_000 })));
    await first.wait({ timeoutMs: 10_000 });
    await waitFor(() => jobs.every((j) => statuses(all, j.id).includes('completed')) && statuses(all, first.id).includes('completed'));
    await waitFor(() => statuses(byJob, first.id).includes('completed'));
    expect(new Set(byJob.jobEvents().map((e) => e.job_id))).toEqual(new Set([first.id]));
    expect(new Set(byTask.jobEvents().map((e) => e.task))).toEqual(new Set(['reports.daily']));
    expect(new Set(byQueue.jobEvents().map((e) => e.queue))).toEqual(new Set(['mail']));
    expect(statuses(byTask, jobs[0]!.id)).toEqual(['queued', 'started', 'completed']);
  });

  it("shows a key only its tenant's jobs, and of its tasks", async () => {
    const app = await openTestApp('sqlite', [report, mail], { auth: 'keys' });
    const read = ['jobs:read'];
    const acme = (await createKey(app.store, { name: 'acme', scopes: read, tenant: 'acme' })).token;
    const acmeReports = (await createKey(app.store, { name: 'acme-reports', scopes: read, tenant: 'acme', tasks: ['reports.*'] })).token;
    const globex = (await createKey(app.store, { name: 'globex', scopes: read, tenant: 'globex' })).token;
    const admin = (await createKey(app.store, { name: 'admin', scopes: ['admin'], tenant: null })).token;
    const submitOnly = (await createKey(app.store, { name: 'submit', scopes: ['jobs:submit'], tenant: 'acme' })).token;
    const { base } = await serve(app);
    const as = (token: string) => ({ authorization: `Bearer ${token}` });
    expect((await openStream(base, '/v1/events')).status).toBe(401);
    expect((await openStream(base, '/v1/events', as(submitOnly))).status).toBe(403);
    const streams = {
      acme: await openStream(base, '/v1/events', as(acme)),
      acmeReports: await openStream(base, '/v1/events', as(acmeReports)),
      globex: await openStream(base, '/v1/events', as(globex)),
      // Asking for acme's job by id shows nothing either.
      globexAsking: null as Stream | null,
      admin: await openStream(base, '/v1/events', as(admin)),
    };
    const acmeMail = await app.enqueue(mail, { to: 'secret@acme.example' }, { tenant: 'acme' });
    streams.globexAsking = await openStream(base, `/v1/events?job=${acmeMail.id}`, as(globex));
    const acmeReport = await app.enqueue(report, { day: 'a' }, { tenant: 'acme' });
    const globexReport = await app.enqueue(report, { day: 'g' }, { tenant: 'globex' });
    await startWorker(app);
    await Promise.all([acmeMail, acmeReport, globexReport].map((j) => j.wait({ timeoutMs: 10_000 })));
    await waitFor(() => [acmeMail, acmeReport, globexReport].every((j) => statuses(streams.admin, j.id).includes('completed')));
    // The admin's stream has seen everything; the others are served by the same batches.
    await waitFor(() => statuses(streams.acme, acmeReport.id).includes('completed') && statuses(streams.globex, globexReport.id).includes('completed'));
    await waitFor(() => statuses(streams.acmeReports, acmeReport.id).includes('completed'));
    expect(new Set(streams.acme.jobEvents().map((e) => e.job_id))).toEqual(new Set([acmeMail.id, acmeReport.id]));
    expect(new Set(streams.acmeReports.jobEvents().map((e) => e.job_id))).toEqual(new Set([acmeReport.id]));
    expect(new Set(streams.globex.jobEvents().map((e) => e.job_id))).toEqual(new Set([globexReport.id]));
    expect(streams.globexAsking.jobEvents()).toEqual([]);
    for (const s of [streams.globex, streams.globexAsking]) expect(JSON.stringify(s.messages)).not.toContain(acmeMail.id);
    expect(streams.admin.jobEvents().some((e) => e.tenant === 'acme') && streams.admin.jobEvents().some((e) => e.tenant === 'globex')).toBe(true);
  });

  it('resumes with Last-Event-ID: exactly the missed events, from memory and from the streams', async () => {
    const app = await openTestApp('sqlite', [quick, report]);
    let { server, base } = await serve(app);
    const witness = await openStream(base, '/v1/events');
    const client = await openStream(base, '/v1/events');
    await startWorker(app);
    const before = await app.enqueue(quick, { n: 0 });
    await before.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(client, before.id).includes('completed'));
    const resumeAt = client.lastEventId!;
    client.close();
    await waitFor(() => eventHubOf(app)?.subscribers === 1);
    const missed = [await app.enqueue(quick, { n: 1 }), await app.enqueue(report, { day: 'x' }), await app.enqueue(quick, { n: 2 })];
    await Promise.all(missed.map((j) => j.wait({ timeoutMs: 10_000 })));
    await waitFor(() => missed.every((j) => statuses(witness, j.id).includes('completed')));
    const expected = witness.messages.slice(witness.messages.findIndex((m) => m.id === resumeAt) + 1);
    expect(expected.length).toBe(9);

    // From the hub's memory (the ring): what the witness saw after that id, in order, then live.
    const fromRing = await openStream(base, '/v1/events', { 'last-event-id': resumeAt });
    await waitFor(() => fromRing.messages.length >= expected.length);
    expect(fromRing.messages.map((m) => [m.event, m.data])).toEqual(expected.map((m) => [m.event, m.data]));
    const live = await app.enqueue(quick, { n: 3 });
    await live.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(fromRing, live.id).includes('completed'));
    expect(
      fromRing
        .jobEvents()
        .filter((e) => e.job_id === live.id)
        .map((e) => e.event),
    ).toEqual(['queued', 'started', 'completed']);
    expect(fromRing.messages.length).toBe(expected.length + 3);

    // A new server (a new hub, starting at the streams' heads) replays from Redis; the query form too.
    await server.close();
    ({ server, base } = await serve(app));
    const fromRedis = await openStream(base, `/v1/events?last_event_id=${encodeURIComponent(resumeAt)}`);
    await waitFor(() => fromRedis.messages.length >= expected.length + 3);
    expect(eventHubOf(app)!.stats.replays).toBeGreaterThan(0);
    // Each queue's events in its stream's order. Across queues the order of
    // events of the same millisecond is not defined (the live feed takes them
    // as XREAD batches them; a replay merges the streams by time).
    const byQueue = (ms: typeof expected) => {
      const out = new Map<string, [string | undefined, string][]>();
      for (const m of ms) {
        const queue = (JSON.parse(m.data) as { queue: string }).queue;
        out.set(queue, [...(out.get(queue) ?? []), [m.event, m.data]]);
      }
      return Object.fromEntries([...out].sort(([a], [b]) => a.localeCompare(b)));
    };
    expect(byQueue(fromRedis.messages.slice(0, expected.length))).toEqual(byQueue(expected));
    expect(
      fromRedis
        .jobEvents()
        .filter((e) => e.job_id === live.id)
        .map((e) => e.event),
    ).toEqual(['queued', 'started', 'completed']);
    // Positions only move forward.
    const ids = fromRedis.messages.map((m) => parsePosition(m.id!, 'id'));
    for (let i = 1; i < ids.length; i++) for (const [q, id] of ids[i]!) expect(compareStreamIds(id, ids[i - 1]!.get(q)!)).toBeGreaterThanOrEqual(0);
    const after = await app.enqueue(report, { day: 'y' });
    await after.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(fromRedis, after.id).includes('completed'));
    expect(statuses(fromRedis, after.id)).toEqual(['queued', 'started', 'completed']);
  });

  it('says `lagged` when the position is older than what the streams keep', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const { base } = await serve(app);
    await startWorker(app);
    const job = await app.enqueue(quick, { n: 1 });
    await job.wait({ timeoutMs: 10_000 });
    const key = app.broker.eventsKey('default');
    const redis = testRedis();
    const [[first]] = (await redis.xrange(key, '-', '+', 'COUNT', 1)) as unknown as [[string]];
    // What a recorder does once the events are in SQL.
    await redis.xtrim(key, 'MAXLEN', 0);
    const old = encodePosition(new Map([['default', first]]));
    const stream = await openStream(base, '/v1/events', { 'last-event-id': old });
    await waitFor(() => stream.messages.some((m) => m.event === 'lagged'));
    expect(JSON.parse(stream.messages[0]!.data)).toMatchObject({ reason: 'gap', queue: 'default' });
  });

  it('sends heartbeats that carry the position, and resumes past the ring from the streams', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const { hub, release } = acquireEventHub(app, { heartbeatMs: 100, ringSize: 1 });
    onCleanup(release);
    const { base } = await serve(app);
    const stream = await openStream(base, '/v1/events');
    await startWorker(app);
    const job = await app.enqueue(quick, { n: 1 });
    await job.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(stream, job.id).includes('completed'));
    const heartbeatsBefore = stream.comments;
    await waitFor(() => stream.comments >= heartbeatsBefore + 2);
    // The id of a heartbeat is where the feed stands: at or past the last message's.
    const last = parsePosition(stream.messages.at(-1)!.id!, 'id');
    for (const [queue, id] of parsePosition(stream.lastEventId!, 'id')) expect(compareStreamIds(id, last.get(queue)!)).toBeGreaterThanOrEqual(0);
    // The ring holds the last message only: a resume from the first needs the streams.
    const replays = hub.stats.replays;
    const resumed = await openStream(base, '/v1/events', { 'last-event-id': stream.messages[0]!.id! });
    await waitFor(() => resumed.messages.length >= 2);
    expect(hub.stats.replays).toBe(replays + 1);
    expect(resumed.messages.map((m) => m.data)).toEqual(stream.messages.slice(1).map((m) => m.data));
    expect(resumed.messages.map((m) => m.id)).toEqual(stream.messages.slice(1).map((m) => m.id));
  });

  it('feeds fifty clients from one Redis reader, and forgets a client that leaves', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const { base } = await serve(app);
    const streams = await Promise.all(Array.from({ length: 50 }, () => openStream(base, '/v1/events')));
    const hub = eventHubOf(app)!;
    expect(hub.subscribers).toBe(50);
    await startWorker(app, { concurrency: 10 });
    const jobs = await Promise.all(Array.from({ length: 20 }, (_, n) => app.enqueue(quick, { n })));
    await Promise.all(jobs.map((j) => j.wait({ timeoutMs: 10_000 })));
    await waitFor(() => streams.every((s) => jobs.every((j) => statuses(s, j.id).includes('completed'))), 15_000);
    for (const s of streams) expect(s.jobEvents()).toHaveLength(60);
    // One connection for the feed, whatever the number of clients; its reads
    // follow the batches, not the clients (each read served all fifty).
    expect(hub.stats.connections).toBe(1);
    const named = (await testRedis().client('LIST')) as string;
    const readers = named.split('\n').filter((line) => line.includes(` name=${app.config.prefix}:celerity:events `));
    expect(readers).toHaveLength(1);
    expect(hub.stats.reads).toBeLessThanOrEqual(hub.stats.entries + 2);
    expect(hub.stats.lookups).toBeLessThanOrEqual(hub.stats.reads);

    for (const s of streams.slice(0, 30)) s.close();
    await waitFor(() => hub.subscribers === 20);
    for (const s of streams.slice(30)) s.close();
    await waitFor(() => hub.subscribers === 0);
  });

  it('disconnects a client that does not read, with `lagged`, instead of buffering for it', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const { hub, release } = acquireEventHub(app, { maxBufferedBytes: 64 * 1024 });
    onCleanup(release);
    const { base } = await serve(app);
    const { req, res } = await get(`${base}/v1/events`, {});
    onCleanup(() => req.destroy());
    expect(res.statusCode).toBe(200);
    res.pause();
    await waitFor(() => hub.subscribers === 1);
    const queue = app.broker.queue('default');
    const big = 'x'.repeat(4096);
    // Progress events of a job, written as BullMQ writes them, until the unread socket backs up.
    const job = await app.enqueue(quick, { n: 1 });
    for (let i = 0; i < 5000 && hub.subscribers > 0; i++) {
      await queue.updateJobProgress(job.id, { percent: i % 100, note: big });
      if (i % 200 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    await waitFor(() => hub.subscribers === 0);
    expect(hub.stats.lagged).toBe(1);
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
    });
    res.resume();
    await new Promise((resolve) => res.on('end', resolve));
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(text).toContain('event: lagged');
  });

  it('refuses a bad Last-Event-ID, a bad last_event_id and an unknown queue with a 400 naming the field', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const { base } = await serve(app);
    const cases: [string, Record<string, string>, string][] = [
      ['/v1/events', { 'last-event-id': 'nonsense' }, 'headers.last-event-id'],
      ['/v1/events', { 'last-event-id': 'default@1-0;default@2-0' }, 'headers.last-event-id'],
      ['/v1/events', { 'last-event-id': 'default@99999999999999999999-0' }, 'headers.last-event-id'],
      ['/v1/events?last_event_id=default%401', {}, 'querystring.last_event_id'],
      ['/v1/events?queue=nope', {}, 'querystring.queue'],
      ['/v1/events?task=bad%20name', {}, 'querystring.task'],
    ];
    for (const [path, headers, field] of cases) {
      const res = await fetch(`${base}${path}`, { headers });
      expect(res.status, path).toBe(400);
      const body = (await res.json()) as { error: { code: string; message: string; details: { issues: { path: string }[] } } };
      expect(body.error.code).toBe('invalid_request');
      expect(body.error.details.issues[0]?.path).toBe(field);
    }
    expect(eventHubOf(app)?.subscribers ?? 0).toBe(0);
  });

  it('works under a prefix when mounted with celerityApi, and the server closes with streams open', async () => {
    const app = await openTestApp('sqlite', [quick]);
    const server = Fastify();
    await server.register(celerityApi, { app, prefix: '/jobs-api' });
    await server.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(server.server.address() as { port: number }).port}`;
    const stream = await openStream(base, '/jobs-api/v1/events');
    expect(stream.status).toBe(200);
    await startWorker(app);
    const job = await app.enqueue(quick, { n: 1 });
    await job.wait({ timeoutMs: 10_000 });
    await waitFor(() => statuses(stream, job.id).includes('completed'));
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(3_000);
    await stream.ended;
    expect(eventHubOf(app)).toBeUndefined();
  });
});

describe.each(stores)('events of jobs gone from Redis (%s)', (kind: StoreKind) => {
  /** An app with keys, a worker and a recorder, an acme key that reads, and an acme job completed in the history. */
  async function recordedAcmeJob() {
    const app = await openTestApp(kind, [quick], { auth: 'keys' });
    const acme = (await createKey(app.store, { name: 'acme', scopes: ['jobs:read'], tenant: 'acme' })).token;
    await startWorker(app);
    const recorder = await app.startRecorder();
    onCleanup(() => recorder.stop());
    const job = await app.enqueue(quick, { n: 1 }, { tenant: 'acme' });
    await job.wait({ timeoutMs: 10_000 });
    await waitFor(async () => (await app.store.get(job.id))?.status === 'completed');
    return { app, acme, job };
  }

  it('are placed from the SQL history, or dropped for tenant keys when they cannot be', async () => {
    const app = await openTestApp(kind, [quick], { auth: 'keys' });
    const acme = (await createKey(app.store, { name: 'acme', scopes: ['jobs:read'], tenant: 'acme' })).token;
    const globex = (await createKey(app.store, { name: 'globex', scopes: ['jobs:read'], tenant: 'globex' })).token;
    const { base } = await serve(app);
    await startWorker(app);
    const job = await app.enqueue(quick, { n: 1 }, { tenant: 'acme' });
    await job.wait({ timeoutMs: 10_000 });
    // The history holds the job; then Redis forgets it (retention), and a new hub replays its events.
    const recorder = await app.startRecorder();
    onCleanup(() => recorder.stop());
    await waitFor(async () => (await app.store.get(job.id))?.status === 'completed');
    await recorder.stop();
    const key = app.broker.eventsKey('default');
    const redis = testRedis();
    const entries = (await redis.xrange(key, '-', '+')) as [string, string[]][];
    const before = encodePosition(new Map([['default', '0-0']]));
    await app.broker.queue('default').remove(job.id);
    // Put the job's events back as they were (the recorder may have trimmed them), so that the replay reads them.
    await redis.del(key);
    for (const [, fields] of entries) await redis.xadd(key, '*', ...fields);
    const ghost = `01${'z'.repeat(24)}`;
    await redis.xadd(key, '*', 'event', 'active', 'jobId', ghost, 'prev', 'waiting');
    const mine = await openStream(base, '/v1/events', { authorization: `Bearer ${acme}`, 'last-event-id': before });
    const theirs = await openStream(base, '/v1/events', { authorization: `Bearer ${globex}`, 'last-event-id': before });
    await waitFor(() => statuses(mine, job.id).includes('completed'));
    expect(mine.jobEvents().every((e) => e.job_id === job.id && e.tenant === 'acme' && e.task === 'events.quick')).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(theirs.jobEvents()).toEqual([]);
    expect(JSON.stringify(mine.messages)).not.toContain(ghost);
  });

  it('announce the delete of a job Redis had already let go', async () => {
    const { app, acme, job } = await recordedAcmeJob();
    // As the result TTL's end does: the hash goes, and BullMQ says nothing.
    await app.broker.queue(quick.queue).clean(0, 100, 'completed');
    const { base } = await serve(app);
    const mine = await openStream(base, '/v1/events', { authorization: `Bearer ${acme}` });
    await app.deleteJob(job.id);
    await waitFor(() => statuses(mine, job.id).includes('deleted'));
    expect(mine.jobEvents()).toEqual([expect.objectContaining({ event: 'deleted', job_id: job.id, task: 'events.quick', tenant: 'acme', status: 'deleted' })]);
    // The recorder, reading the announcement too, leaves the tombstone as it is.
    await new Promise((r) => setTimeout(r, 300));
    expect(await app.getJob(job.id)).toBeNull();
  });

  it('announce the delete of a job the feed never met, placed from its row or tombstone, to its tenant only', async () => {
    const { app, acme, job } = await recordedAcmeJob();
    const globex = (await createKey(app.store, { name: 'globex', scopes: ['jobs:read'], tenant: 'globex' })).token;
    // The feed starts now, past the job's events: it knows nothing of the job.
    const { base } = await serve(app);
    const mine = await openStream(base, '/v1/events', { authorization: `Bearer ${acme}` });
    const theirs = await openStream(base, '/v1/events', { authorization: `Bearer ${globex}` });
    await app.deleteJob(job.id);
    await waitFor(() => statuses(mine, job.id).includes('deleted'));
    expect(mine.jobEvents()).toEqual([expect.objectContaining({ event: 'deleted', job_id: job.id, task: 'events.quick', tenant: 'acme', status: 'deleted' })]);
    await new Promise((r) => setTimeout(r, 200));
    expect(theirs.jobEvents()).toEqual([]);
  });
});
