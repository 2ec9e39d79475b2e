import { useEffect, useRef, useState } from 'preact/hooks';
import { ErrorNote, Json, ProgressView, Section, StatusBadge } from '../components/common.tsx';
import { ACTION_SCOPES, endpoints, TERMINAL, type AttemptView, type JobView, type LogLineView, type StepView } from '../endpoints.ts';
import { between, formatDuration, formatTime, json } from '../format.ts';
import { ApiError } from '../http.ts';
import { live } from '../live.ts';
import { href, navigate } from '../router.ts';
import { can, isAdmin, useSession } from '../session.ts';

/** What each hold reason of the job view means, in words. */
const WAIT_REASONS: Record<string, string> = {
  rate_limit: 'rate limit',
  rate_limit_pause: 'rate limit paused by an upstream 429',
  tenant_cap: "tenant's concurrency cap",
};

export function JobDetail({ id }: { id: string }) {
  // Stacks show the server's paths: the API gives them to admin keys only, when asked.
  const stacks = isAdmin(useSession());
  const [job, setJob] = useState<JobView | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [mode, setMode] = useState('');
  const reload = useRef<() => Promise<void>>(async () => {});

  useEffect(() => {
    let alive = true;
    let pending: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const j = await endpoints.job(id, undefined, stacks);
        if (!alive) return;
        setJob(j);
        setError(null);
      } catch (err) {
        if (alive) setError(err);
      }
    };
    reload.current = load;
    setJob(null);
    void load();
    const stop = live({
      filter: { job: id },
      onEvent: (e) => {
        if (e.job_id !== id) return;
        // The event carries status and progress; the attempts, result and error come with the job.
        if (e.event === 'progress' && e.progress) setJob((j) => j && { ...j, progress: e.progress ?? null });
        if (!pending)
          pending = setTimeout(() => {
            pending = undefined;
            void load();
          }, 250);
      },
      resync: () => void load(),
      onMode: (m) => setMode(m === 'events' ? 'Live' : 'Reconnecting…'),
    });
    return () => {
      alive = false;
      if (pending) clearTimeout(pending);
      stop();
    };
  }, [id, stacks]);

  if (!job) {
    return (
      <>
        <h1 tabIndex={-1}>Job {id}</h1>
        {error ? <ErrorNote error={error instanceof ApiError && error.status === 404 ? 'No such job (or not one your key may see).' : error} /> : <p class="muted">Loading…</p>}
      </>
    );
  }

  return (
    <>
      <h1 tabIndex={-1}>
        {job.task} <StatusBadge status={job.status} />
      </h1>
      <p class="muted">
        <span class="mono">{job.job_id}</span> {mode && <span data-testid="live-mode">· {mode}</span>}
      </p>
      <ErrorNote error={error} />
      <Actions job={job} reload={() => reload.current()} />
      <Section title="Details" id="details-title">
        <dl class="facts">
          <div>
            <dt>Queue</dt>
            <dd>{job.queue}</dd>
          </div>
          <div>
            <dt>Tenant</dt>
            <dd>{job.tenant ?? '—'}</dd>
          </div>
          <div>
            <dt>Submitted by key</dt>
            <dd class="mono">{job.key_id ?? '—'}</dd>
          </div>
          <div>
            <dt>Attempts</dt>
            <dd>
              {job.attempts}
              {job.max_attempts ? ` of ${job.max_attempts}` : ''}
            </dd>
          </div>
          <div>
            <dt>Created</dt>
            <dd>{formatTime(job.created_at)}</dd>
          </div>
          <div>
            <dt>Started</dt>
            <dd>{formatTime(job.started_at)}</dd>
          </div>
          <div>
            <dt>Finished</dt>
            <dd>{formatTime(job.finished_at)}</dd>
          </div>
          {job.waiting && (
            <div data-testid="waiting">
              <dt>Waiting for</dt>
              <dd>
                {WAIT_REASONS[job.waiting.reason] ?? job.waiting.reason} <span class="mono">{job.waiting.key}</span> until {formatTime(job.waiting.until)}
              </dd>
            </div>
          )}
          {job.run_at && (
            <div>
              <dt>Due</dt>
              <dd>{formatTime(job.run_at)}</dd>
            </div>
          )}
          {job.retry_of && (
            <div>
              <dt>Retry of</dt>
              <dd>
                <a href={href(`/jobs/${job.retry_of}`)} class="mono">
                  {job.retry_of}
                </a>
              </dd>
            </div>
          )}
          {job.retried_by && job.retried_by.length > 0 && (
            <div>
              <dt>Retried by</dt>
              <dd>
                <ul class="plain" aria-label="Retries of this job">
                  {job.retried_by.map((r) => (
                    <li key={r}>
                      <a href={href(`/jobs/${r}`)} class="mono">
                        {r}
                      </a>
                    </li>
                  ))}
                </ul>
              </dd>
            </div>
          )}
        </dl>
      </Section>
      <Section title="Progress" id="progress-title">
        <ProgressView progress={job.progress} />
      </Section>
      {job.steps && (
        <Section title="Workflow steps" id="steps-title">
          <Steps steps={job.steps} />
        </Section>
      )}
      <Section title="Input" id="input-title">
        {'input' in job ? <Json value={job.input} label="Input" /> : <p class="muted">The job API does not show a job's input yet (GET /v1/jobs/:id has no input field).</p>}
      </Section>
      {job.status === 'completed' && (
        <Section title="Result" id="result-title">
          <Json value={job.result} label="Result" />
        </Section>
      )}
      {job.error && (
        <Section title="Error" id="error-title">
          <p>
            <strong>{job.error.type}</strong>: {job.error.message}
          </p>
          {job.error.stack && <pre class="stack">{job.error.stack}</pre>}
        </Section>
      )}
      <Section title="Attempts" id="attempts-title">
        <Attempts job={job} />
      </Section>
      <Section title="Logs" id="logs-title">
        <Logs job={job} />
      </Section>
    </>
  );
}

/** What the session may do to this job, and only that. */
function Actions({ job, reload }: { job: JobView; reload: () => Promise<void> }) {
  const session = useSession();
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [edited, setEdited] = useState<string>(() => ('input' in job ? json(job.input) : '{}'));
  const finished = TERMINAL.has(job.status);
  const canCancel = can(session, ACTION_SCOPES.cancel) && !finished;
  const canRetry = can(session, ACTION_SCOPES.retry) && (job.status === 'failed' || job.status === 'cancelled');
  const canDelete = can(session, ACTION_SCOPES.delete) && finished;
  // Only a delayed job (a delay, or a retry's backoff) can run sooner: the view says so with run_at.
  const canPromote = can(session, ACTION_SCOPES.promote) && (job.status === 'queued' || job.status === 'retrying') && Boolean(job.run_at);
  if (!canCancel && !canRetry && !canDelete && !canPromote) return null;

  const run = async (name: string, fn: () => Promise<void>) => {
    setBusy(name);
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  };
  const cancel = () =>
    run('cancel', async () => {
      await endpoints.cancel(job.job_id);
      await reload();
    });
  const retry = (input?: unknown) =>
    run('retry', async () => {
      const res = await endpoints.retry(job.job_id, input);
      navigate(`/jobs/${res.job_id}`);
    });
  const retryEdited = (e: Event) => {
    e.preventDefault();
    let input: unknown;
    try {
      input = JSON.parse(edited);
    } catch (err) {
      setError(new Error(`The edited input is not JSON: ${(err as Error).message}`));
      return;
    }
    void retry(input);
  };
  const promote = () =>
    run('promote', async () => {
      await endpoints.promote(job.job_id);
      await reload();
    });
  const remove = () =>
    run('delete', async () => {
      await endpoints.remove(job.job_id);
      navigate('/jobs');
    });

  return (
    <section class="card actions-card" aria-label="Actions">
      <div class="actions">
        {canCancel && (
          <button type="button" class="danger" onClick={cancel} disabled={busy !== null}>
            {busy === 'cancel' ? 'Cancelling…' : 'Cancel job'}
          </button>
        )}
        {canPromote && (
          <button type="button" class="secondary" onClick={promote} disabled={busy !== null}>
            {busy === 'promote' ? 'Promoting…' : 'Run now'}
          </button>
        )}
        {canRetry && (
          <button type="button" onClick={() => retry()} disabled={busy !== null}>
            {busy === 'retry' ? 'Retrying…' : 'Retry'}
          </button>
        )}
        {canDelete && !confirmDelete && (
          <button type="button" class="danger" onClick={() => setConfirmDelete(true)} disabled={busy !== null}>
            Delete
          </button>
        )}
        {canDelete && confirmDelete && (
          <>
            <button type="button" class="danger" onClick={remove} disabled={busy !== null}>
              Confirm delete
            </button>
            <button type="button" class="secondary" onClick={() => setConfirmDelete(false)}>
              Keep the job
            </button>
          </>
        )}
      </div>
      {canRetry && (
        <details>
          <summary>Retry with edited input</summary>
          <form class="stack" onSubmit={retryEdited}>
            <label for="edited-input">Input (JSON)</label>
            <textarea id="edited-input" rows={8} value={edited} onInput={(e) => setEdited((e.target as HTMLTextAreaElement).value)} class="mono" />
            <button type="submit" disabled={busy !== null}>
              Retry with this input
            </button>
          </form>
        </details>
      )}
      <ErrorNote error={error} />
    </section>
  );
}

function Attempts({ job }: { job: JobView }) {
  const history = job.attempt_history ?? [];
  if (history.length === 0) return <p class="muted">No attempt has started.</p>;
  const start = Date.parse(job.created_at);
  const end = Math.max(...history.map((a) => Date.parse(a.finished_at ?? '') || Date.now()), start + 1);
  const span = end - start;
  const pct = (t: number) => `${Math.max(0, Math.min(100, ((t - start) / span) * 100))}%`;
  return (
    <>
      <div class="timeline" aria-hidden="true">
        {history.map((a) => {
          const s = Date.parse(a.started_at ?? '') || start;
          const f = Date.parse(a.finished_at ?? '') || Date.now();
          return <div key={a.attempt} class={`bar bar-${a.status}`} style={{ left: pct(s), width: `max(2px, calc(${pct(f)} - ${pct(s)}))` }} title={`Attempt ${a.attempt}: ${a.status}`} />;
        })}
      </div>
      <div class="table-wrap">
        <table>
          <caption class="sr-only">Attempts with their wait and run times</caption>
          <thead>
            <tr>
              <th scope="col">Attempt</th>
              <th scope="col">Status</th>
              <th scope="col">Waited</th>
              <th scope="col">Ran</th>
              <th scope="col">Started</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {history.map((a, i) => (
              <tr key={a.attempt}>
                <th scope="row">{a.attempt}</th>
                <td>
                  <StatusBadge status={a.status} />
                </td>
                <td>{formatDuration(between(i === 0 ? job.created_at : previousEnd(history, i), a.started_at))}</td>
                <td>{formatDuration(between(a.started_at, a.finished_at))}</td>
                <td>{formatTime(a.started_at)}</td>
                <td>
                  {a.error ? `${a.error.type}: ${a.error.message}` : '—'}
                  {a.error?.stack && (
                    <details>
                      <summary>Stack</summary>
                      <pre class="stack">{a.error.stack}</pre>
                    </details>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

/**
 * The job's log lines (GET /v1/jobs/:id/logs), read again as the job moves
 * (status, attempts, finish): a running job's lines arrive as it logs them.
 */
function Logs({ job }: { job: JobView }) {
  const [lines, setLines] = useState<LogLineView[] | null>(null);
  const [next, setNext] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const version = `${job.status}|${job.attempts}|${job.finished_at ?? ''}|${JSON.stringify(job.progress ?? null)}`;
  useEffect(() => {
    const controller = new AbortController();
    endpoints.logs(job.job_id, 0, controller.signal).then(
      (page) => {
        setLines(page.lines);
        setNext(page.next_offset);
        setError(null);
      },
      (err: unknown) => {
        if (!controller.signal.aborted) setError(err);
      },
    );
    return () => controller.abort();
  }, [job.job_id, version]);
  const more = async () => {
    if (next === null || !lines) return;
    try {
      const page = await endpoints.logs(job.job_id, next);
      setLines([...lines, ...page.lines]);
      setNext(page.next_offset);
    } catch (err) {
      setError(err);
    }
  };
  if (error) return <ErrorNote error={error} />;
  if (!lines) return <p class="muted">Loading…</p>;
  if (lines.length === 0) {
    return <p class="muted">No log lines. A job keeps what its handler logs through ctx.log (info and above), in Redis and then in the history.</p>;
  }
  return (
    <>
      <div class="table-wrap">
        <table class="logs" data-testid="job-logs">
          <caption class="sr-only">Log lines of the job, oldest first</caption>
          <thead>
            <tr>
              <th scope="col">Time</th>
              <th scope="col">Attempt</th>
              <th scope="col">Level</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {lines.map((l, i) => (
              <tr key={i} class={`log-${l.level}`}>
                <td class="mono">{formatTime(l.time)}</td>
                <td>{l.attempt}</td>
                <td>
                  <span class={`badge badge-log-${l.level}`}>{l.level}</span>
                </td>
                <td class="mono">
                  {l.message}
                  {l.data && <span class="muted"> {JSON.stringify(l.data)}</span>}
                  {l.truncated && <span class="muted"> (cut)</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {next !== null && (
        <button type="button" class="secondary" onClick={() => void more()}>
          More lines
        </button>
      )}
    </>
  );
}

function previousEnd(history: AttemptView[], i: number): string | null {
  return history[i - 1]?.finished_at ?? null;
}

/** A workflow's steps, grouped under their stage (a group's steps run side by side). */
function Steps({ steps }: { steps: StepView[] }) {
  const stages: { stage: string | null; steps: StepView[] }[] = [];
  for (const s of steps) {
    const last = stages[stages.length - 1];
    if (last && last.stage === s.stage && s.stage !== null) last.steps.push(s);
    else stages.push({ stage: s.stage, steps: [s] });
  }
  return (
    <ol class="steps" aria-label="Workflow steps">
      {stages.map((g, i) => (
        <li key={i}>
          {g.stage !== null && <span class="stage">{g.stage}</span>}
          <ul>
            {g.steps.map((s) => (
              <li key={s.job_id} data-step={s.step}>
                <a href={href(`/jobs/${s.job_id}`)}>
                  {s.step}. {s.task}
                </a>{' '}
                <StatusBadge status={s.status} />
                {s.error && (
                  <span class="muted">
                    {' '}
                    {s.error.type}: {s.error.message}
                  </span>
                )}
              </li>
            ))}
          </ul>
        </li>
      ))}
    </ol>
  );
}
