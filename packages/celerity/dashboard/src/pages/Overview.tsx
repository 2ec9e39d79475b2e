import { useEffect, useMemo, useState } from 'preact/hooks';
import { TimeChart, type ChartSeries } from '../components/chart.tsx';
import { ErrorNote, Section } from '../components/common.tsx';
import { endpoints, type QueueView, type StatsPoint, type WorkerView } from '../endpoints.ts';
import { formatDuration, formatTime } from '../format.ts';
import { ApiError } from '../http.ts';
import { href } from '../router.ts';
import { can, useSession } from '../session.ts';

const REFRESH_MS = 5_000;

/** Polls `load` every `ms` while the page is shown. */
function usePolled<T>(load: () => Promise<T>, ms: number, enabled = true): { data: T | undefined; error: unknown } {
  const [state, setState] = useState<{ data: T | undefined; error: unknown }>({ data: undefined, error: null });
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
  }, [enabled]);
  return state;
}

export function Overview() {
  const session = useSession();
  const ops = can(session, 'ops:read');
  const queues = usePolled(() => endpoints.queues(), REFRESH_MS, ops);
  const workers = usePolled(() => endpoints.workers(), REFRESH_MS, ops);
  return (
    <>
      <h1 tabIndex={-1}>Overview</h1>
      {!ops && <p class="note">The key "{session.name}" lacks the scope ops:read, which the queues, workers and charts need. The jobs are under Jobs.</p>}
      {ops && (
        <>
          <Section title="Queues" id="queues-title">
            <ErrorNote error={queues.error} />
            <QueuesTable queues={queues.data?.queues} />
          </Section>
          <Section title="Throughput" id="charts-title">
            <Charts />
          </Section>
          <Section title="Workers" id="workers-title">
            <ErrorNote error={workers.error} />
            <WorkersTable workers={workers.data?.workers} />
          </Section>
        </>
      )}
    </>
  );
}

function QueuesTable({ queues }: { queues: QueueView[] | undefined }) {
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

/** Seconds since the epoch of a stats point's `t` (ISO text, ms or s). */
function seconds(t: string | number): number {
  if (typeof t === 'string') return Date.parse(t) / 1000;
  return t > 1e11 ? t / 1000 : t;
}

function Charts() {
  const [state, setState] = useState<{ points?: StatsPoint[]; missing?: boolean; error?: unknown }>({});
  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout>;
    const load = async () => {
      const to = new Date();
      const from = new Date(to.getTime() - 60 * 60 * 1000);
      try {
        const res = await endpoints.stats({ from: from.toISOString(), to: to.toISOString(), granularity: 'minute' });
        if (alive) setState({ points: Array.isArray(res) ? res : res.series });
      } catch (error) {
        if (!alive) return;
        if (error instanceof ApiError && error.routeMissing) return setState({ missing: true });
        setState((s) => ({ ...s, error }));
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
    const times = points.map((p) => seconds(p.t));
    const done: ChartSeries[] = [
      { label: 'completed', values: points.map((p) => p.completed), color: '--chart-1' },
      { label: 'failed', values: points.map((p) => p.failed), color: '--chart-2' },
    ];
    const latency: ChartSeries[] = [
      { label: 'wait p50', values: points.map((p) => p.wait_p50 ?? null), color: '--chart-3' },
      { label: 'wait p95', values: points.map((p) => p.wait_p95 ?? null), color: '--chart-4' },
      { label: 'run p50', values: points.map((p) => p.run_p50 ?? null), color: '--chart-1' },
      { label: 'run p95', values: points.map((p) => p.run_p95 ?? null), color: '--chart-2' },
    ];
    return { times, done, latency };
  }, [state.points]);
  if (state.missing) return <p class="muted">Charts need the stats API (GET /v1/stats), which this server does not have yet. The queue table shows the last minutes' counts.</p>;
  if (state.error) return <ErrorNote error={state.error} />;
  if (!state.points) return <p class="muted">Loading…</p>;
  if (state.points.length === 0) return <p class="muted">No jobs finished in the last hour.</p>;
  return (
    <div class="charts">
      <TimeChart title="Jobs per minute" times={charts.times} series={charts.done} />
      <TimeChart title="Wait and run time" times={charts.times} series={charts.latency} unit=" ms" />
    </div>
  );
}
