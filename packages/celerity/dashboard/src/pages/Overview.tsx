import { useEffect, useMemo, useState } from 'preact/hooks';
import { TimeChart, type ChartSeries } from '../components/chart.tsx';
import { ErrorNote, Section } from '../components/common.tsx';
import { endpoints, type QueueView, type ScheduleView, type StatsPoint, type TenantsView, type WorkerView } from '../endpoints.ts';
import { formatDuration, formatTime } from '../format.ts';
import { href } from '../router.ts';
import { can, isAdmin, useSession } from '../session.ts';
import { StatusBadge } from '../components/common.tsx';

const REFRESH_MS = 5_000;

/** Polls `load` every `ms` while the page is shown. */
function usePolled<T>(load: () => Promise<T>, ms: number, enabled = true): { data: T | undefined; error: unknown; refresh: () => void } {
  const [state, setState] = useState<{ data: T | undefined; error: unknown }>({ data: undefined, error: null });
  const [round, setRound] = useState(0);
  useEffect(() => {
    if (!enabled) return;
    let alive = true;
    let timer: ReturnType<typeof setTimeout>;
    const tick = async () => {
      try {
        const data = await load();
        if (alive) setState({ data, error: null });
      } catch (error) {
        if (alive) setState((s) => ({ data: s.data, error }));
      }
      if (alive) timer = setTimeout(tick, ms);
    };
    void tick();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [enabled, round]);
  return { ...state, refresh: () => setRound((r) => r + 1) };
}

export function Overview() {
  const session = useSession();
  const ops = can(session, 'ops:read');
  const queues = usePolled(() => endpoints.queues(), REFRESH_MS, ops);
  const workers = usePolled(() => endpoints.workers(), REFRESH_MS, ops);
  const schedules = usePolled(() => endpoints.schedules(), REFRESH_MS, ops);
  return (
    <>
      <h1 tabIndex={-1}>Overview</h1>
      {!ops && <p class="note">The key "{session.name}" lacks the scope ops:read, which the queues, workers and charts need. The jobs are under Jobs.</p>}
      {ops && (
        <>
          <Section title="Queues" id="queues-title">
            <ErrorNote error={queues.error} />
            <QueuesTable queues={queues.data?.queues} admin={isAdmin(session)} changed={queues.refresh} />
          </Section>
          {isAdmin(session) && queues.data && (
            <Section title="Tenants" id="tenants-title">
              <Tenants key={queueNames(queues.data.queues).join('\n')} queues={queueNames(queues.data.queues)} />
            </Section>
          )}
          <Section title="Throughput" id="charts-title">
            <Charts />
          </Section>
          <Section title="Workers" id="workers-title">
            <ErrorNote error={workers.error} />
            <WorkersTable workers={workers.data?.workers} />
          </Section>
          <Section title="Schedules" id="schedules-title">
            <ErrorNote error={schedules.error} />
            <SchedulesTable schedules={schedules.data?.schedules} />
          </Section>
        </>
      )}
    </>
  );
}

/**
 * Celerity's own queue (maintenance, bulk actions): pausing or draining it
 * would stop the purge and every bulk run, so the overview offers neither;
 * only a resume, should it have been paused by other means.
 */
const INTERNAL_QUEUE = 'celerity';

function InternalQueueActions({ queue, changed }: { queue: QueueView; changed: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  if (!queue.paused) return <span class="muted">internal</span>;
  const resume = async () => {
    setBusy(true);
    try {
      await endpoints.resumeQueue(queue.name);
      changed();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" class="secondary" disabled={busy} aria-label={`Resume ${queue.name}`} onClick={() => void resume()}>
        Resume
      </button>
      <ErrorNote error={error} />
    </>
  );
}

/** Pause, resume and drain: admin keys' alone, since a queue holds every tenant's jobs. */
function QueueActions({ queue, changed }: { queue: QueueView; changed: () => void }) {
  const [busy, setBusy] = useState(false);
  const [confirmDrain, setConfirmDrain] = useState(false);
  const [said, setSaid] = useState<unknown>(null);
  const act = async (fn: () => Promise<string | null>) => {
    setBusy(true);
    setSaid(null);
    try {
      setSaid(await fn());
      changed();
    } catch (err) {
      setSaid(err);
    } finally {
      setBusy(false);
      setConfirmDrain(false);
    }
  };
  const name = queue.name;
  const pause = async () => {
    await endpoints.pauseQueue(name);
    return null;
  };
  const resume = async () => {
    await endpoints.resumeQueue(name);
    return null;
  };
  const drain = async () => `${(await endpoints.drainQueue(name)).removed} waiting jobs removed`;
  return (
    <div class="row-actions">
      {queue.paused ? (
        <button type="button" class="secondary" disabled={busy} aria-label={`Resume ${name}`} onClick={() => void act(resume)}>
          Resume
        </button>
      ) : (
        <button type="button" class="secondary" disabled={busy} aria-label={`Pause ${name}`} onClick={() => void act(pause)}>
          Pause
        </button>
      )}
      {confirmDrain ? (
        <>
          <button type="button" class="danger" disabled={busy} aria-label={`Confirm draining ${name}`} onClick={() => void act(drain)}>
            Remove waiting jobs
          </button>
          <button type="button" class="secondary" onClick={() => setConfirmDrain(false)}>
            Keep them
          </button>
        </>
      ) : (
        <button type="button" class="danger" disabled={busy} aria-label={`Drain ${name}`} onClick={() => setConfirmDrain(true)}>
          Drain
        </button>
      )}
      {typeof said === 'string' ? (
        <span role="status" class="muted">
          {said}
        </span>
      ) : (
        <ErrorNote error={said} />
      )}
    </div>
  );
}

function QueuesTable({ queues, admin, changed }: { queues: QueueView[] | undefined; admin: boolean; changed: () => void }) {
  if (!queues) return <p class="muted">Loading…</p>;
  if (queues.length === 0) return <p class="muted">No queues yet.</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">Queues with their depth</caption>
        <thead>
          <tr>
            <th scope="col">Queue</th>
            <th scope="col">Waiting</th>
            <th scope="col">Active</th>
            <th scope="col">Delayed</th>
            <th scope="col">Failed</th>
            <th scope="col">Oldest waiting</th>
            <th scope="col">State</th>
            <th scope="col">Completed / failed (1 min · 5 min)</th>
            {admin && <th scope="col">Actions</th>}
          </tr>
        </thead>
        <tbody>
          {queues.map((q) => (
            <tr key={q.name}>
              <th scope="row">
                <a href={href('/jobs', { queue: q.name })}>{q.name}</a>
              </th>
              <td>{(q.counts.waiting ?? 0) + (q.counts.prioritized ?? 0)}</td>
              <td>{q.counts.active ?? 0}</td>
              <td>{q.counts.delayed ?? 0}</td>
              <td>{q.counts.failed ?? 0}</td>
              <td>{formatDuration(q.oldest_waiting_age_ms)}</td>
              <td>{q.paused ? <span class="badge badge-paused">paused</span> : 'running'}</td>
              <td>
                {q.throughput.completed.m1} / {q.throughput.failed.m1} · {q.throughput.completed.m5} / {q.throughput.failed.m5}
              </td>
              {admin && <td>{q.name === INTERNAL_QUEUE ? <InternalQueueActions queue={q} changed={changed} /> : <QueueActions queue={q} changed={changed} />}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The app's queues but Celerity's own (its jobs belong to no tenant). */
function queueNames(queues: QueueView[]): string[] {
  return queues.map((q) => q.name).filter((name) => name !== INTERNAL_QUEUE);
}

/**
 * Each queue's tenants (admin sessions only: the route names every tenant):
 * backlog in the fair stage, running jobs, wait p95, throughput and weight.
 * Queues no tenant has used lately are left out.
 */
function Tenants({ queues }: { queues: string[] }) {
  const views = usePolled(() => Promise.all(queues.map((q) => endpoints.tenants(q))), REFRESH_MS);
  if (!views.data) return views.error ? <ErrorNote error={views.error} /> : <p class="muted">Loading…</p>;
  const shown = views.data.filter((v) => v.tenants.length > 0);
  return (
    <>
      <ErrorNote error={views.error} />
      {shown.length === 0 && <p class="muted">No tenant has jobs in the queues lately.</p>}
      {shown.map((v) => (
        <TenantsTable key={v.queue} view={v} />
      ))}
    </>
  );
}

function TenantsTable({ view }: { view: TenantsView }) {
  return (
    <div class="table-wrap" data-testid={`tenants-${view.queue}`}>
      <table>
        <caption>
          <a href={href('/jobs', { queue: view.queue })}>{view.queue}</a> {view.fair ? <span class="badge">fair</span> : <span class="muted">first in, first out</span>}
          {view.truncated && <span class="muted"> (the tenants with the largest backlogs)</span>}
        </caption>
        <thead>
          <tr>
            <th scope="col">Tenant</th>
            <th scope="col">Backlog</th>
            <th scope="col">Running</th>
            <th scope="col">Wait p95</th>
            <th scope="col">Finished / min</th>
            <th scope="col">Weight</th>
          </tr>
        </thead>
        <tbody>
          {view.tenants.map((t) => (
            <tr key={t.tenant ?? ''}>
              <th scope="row">{t.tenant === null ? <span class="muted">(no tenant)</span> : <a href={href('/jobs', { queue: view.queue, tenant: t.tenant })}>{t.tenant}</a>}</th>
              <td>{t.backlog}</td>
              <td>{t.running}</td>
              <td>{t.wait_p95_ms === null ? '–' : formatDuration(t.wait_p95_ms)}</td>
              <td>{Math.round(t.throughput_per_min * 10) / 10}</td>
              <td>{t.weight}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function WorkersTable({ workers }: { workers: WorkerView[] | undefined }) {
  if (!workers) return <p class="muted">Loading…</p>;
  if (workers.length === 0) return <p class="muted">No live workers.</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">Live workers and their active jobs</caption>
        <thead>
          <tr>
            <th scope="col">Worker</th>
            <th scope="col">Queues</th>
            <th scope="col">Active jobs</th>
            <th scope="col">Started</th>
            <th scope="col">Last heartbeat</th>
          </tr>
        </thead>
        <tbody>
          {workers.map((w) => (
            <tr key={w.id}>
              <th scope="row">
                {w.host} <span class="muted">pid {w.pid}</span>
              </th>
              <td>{w.queues.join(', ')}</td>
              <td>
                {w.active_jobs.length}/{w.concurrency}
                {w.active_jobs.length > 0 && (
                  <ul class="inline-list">
                    {w.active_jobs.map((j) => (
                      <li key={j.id}>
                        <a href={href(`/jobs/${j.id}`)}>{j.task}</a>
                      </li>
                    ))}
                  </ul>
                )}
              </td>
              <td>{formatTime(w.started_at)}</td>
              <td>{formatDuration(w.age_ms)} ago</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function SchedulesTable({ schedules }: { schedules: ScheduleView[] | undefined }) {
  if (!schedules) return <p class="muted">Loading…</p>;
  if (schedules.length === 0) return <p class="muted">No schedules.</p>;
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">Schedules with their next and last runs</caption>
        <thead>
          <tr>
            <th scope="col">Schedule</th>
            <th scope="col">Task</th>
            <th scope="col">Timing</th>
            <th scope="col">Next run</th>
            <th scope="col">Last run</th>
            <th scope="col">Runs</th>
          </tr>
        </thead>
        <tbody>
          {schedules.map((s) => (
            <tr key={`${s.queue}/${s.id}`} data-schedule-id={s.id}>
              <th scope="row" class="mono">
                {s.id}
              </th>
              <td>
                {s.task} <span class="muted">on {s.queue}</span>
              </td>
              <td>{s.cron !== null ? `cron ${s.cron}${s.tz ? ` (${s.tz})` : ''}` : s.every_ms !== null ? `every ${formatDuration(s.every_ms)}` : '—'}</td>
              <td>{formatTime(s.next_run_at)}</td>
              <td>
                {s.last_run ? (
                  <>
                    <a href={href(`/jobs/${s.last_run.job_id}`)}>{formatTime(s.last_run.started_at)}</a> <StatusBadge status={s.last_run.status} />
                  </>
                ) : (
                  'not yet'
                )}
              </td>
              <td>{s.iterations ?? '—'}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The API leaves out the minutes in which no job ended; the chart draws them as zeros rather than a line across them. */
function everyMinute(from: string, to: string, points: StatsPoint[]): StatsPoint[] {
  const given = new Map(points.map((p) => [Date.parse(p.t), p]));
  const out: StatsPoint[] = [];
  for (let t = Date.parse(from); t < Date.parse(to); t += 60_000) {
    out.push(given.get(t) ?? { t: new Date(t).toISOString(), completed: 0, failed: 0, cancelled: 0, retries: 0, wait_p50: null, wait_p95: null, run_p50: null, run_p95: null });
  }
  return out;
}

/** The last hour by minute, every queue and task summed (`by=all`: one series), read again every 30 s. */
function Charts() {
  const [state, setState] = useState<{ points?: StatsPoint[]; error?: unknown }>({});
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout>;
    const load = async () => {
      const to = new Date();
      const from = new Date(to.getTime() - 60 * 60 * 1000);
      try {
        const res = await endpoints.stats({ from: from.toISOString(), to: to.toISOString(), granularity: 'minute', by: 'all' });
        if (alive) setState({ points: everyMinute(res.from, res.to, res.series[0]?.points ?? []) });
      } catch (error) {
        if (alive) setState((s) => ({ ...s, error }));
      }
      if (alive) timer = setTimeout(load, 30_000);
    };
    void load();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, []);
  const charts = useMemo(() => {
    const points = state.points ?? [];
    const times = points.map((p) => Date.parse(p.t) / 1000);
    const done: ChartSeries[] = [
      { label: 'completed', values: points.map((p) => p.completed), color: '--chart-1' },
      { label: 'failed', values: points.map((p) => p.failed), color: '--chart-2' },
      { label: 'retries', values: points.map((p) => p.retries), color: '--chart-3' },
    ];
    const latency: ChartSeries[] = [
      { label: 'wait p50', values: points.map((p) => p.wait_p50 ?? null), color: '--chart-3', sparse: true },
      { label: 'wait p95', values: points.map((p) => p.wait_p95 ?? null), color: '--chart-4', sparse: true },
      { label: 'run p50', values: points.map((p) => p.run_p50 ?? null), color: '--chart-1', sparse: true },
      { label: 'run p95', values: points.map((p) => p.run_p95 ?? null), color: '--chart-2', sparse: true },
    ];
    return { times, done, latency };
  }, [state.points]);
  if (state.error) return <ErrorNote error={state.error} />;
  if (!state.points) return <p class="muted">Loading…</p>;
  if (!state.points.some((p) => p.completed + p.failed + p.cancelled > 0)) return <p class="muted">No jobs finished in the last hour.</p>;
  return (
    <div class="charts">
      <TimeChart title="Jobs per minute" times={charts.times} series={charts.done} />
      <TimeChart title="Wait and run time" times={charts.times} series={charts.latency} unit=" ms" />
    </div>
  );
}
