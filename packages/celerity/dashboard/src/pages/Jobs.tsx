import { useEffect, useRef, useState } from 'preact/hooks';
import { ErrorNote, StatusBadge } from '../components/common.tsx';
import { endpoints, JOB_FILTERS, JOB_STATUSES, type JobView } from '../endpoints.ts';
import { between, formatDuration, formatTime } from '../format.ts';
import { live, type LiveEvent } from '../live.ts';
import { href, navigate, type Route } from '../router.ts';
import { isAdmin, useSession } from '../session.ts';

const PAGE_SIZE = 50;
type Filter = Record<string, string>;

/** Live events are batched into one read of the first page, at most this often. */
const REFRESH_MS = 1_000;
/** Longest wait between reads while a new job is awaited in the history (the wait doubles from REFRESH_MS). */
const MAX_AWAIT_BACKOFF_MS = 16_000;
/** How long a new job is awaited in the history before the page stops reading again for it. */
const AWAIT_MS = 60_000;
/** Most new jobs awaited at once: past a page's worth, a burst of jobs keeps the page reading anyway. */
const MAX_AWAITED = 4 * PAGE_SIZE;

function filterOf(route: Route): Filter {
  const f: Filter = {};
  for (const name of JOB_FILTERS) f[name] = route.query.get(name) ?? '';
  return f;
}

const TIMES = new Set(['created_after', 'created_before', 'finished_after', 'finished_before']);

/**
 * The API query of a filter: a time field in the browser's zone becomes an
 * instant, and `where` one condition per line. The bulk page sends its
 * filter the same way (POST /v1/bulk takes the same fields).
 */
export function queryOf(f: Filter): Record<string, string | string[]> {
  const q: Record<string, string | string[]> = {};
  for (const name of JOB_FILTERS) {
    const value = f[name]?.trim();
    if (!value) continue;
    if (name === 'where')
      q.where = value
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line !== '');
    else if (TIMES.has(name)) q[name] = new Date(value).toISOString();
    else q[name] = value;
  }
  return q;
}

export function Jobs({ route }: { route: Route }) {
  const session = useSession();
  const filter = filterOf(route);
  const key = JSON.stringify(filter);
  const [draft, setDraft] = useState<Filter>(filter);
  const [page, setPage] = useState<{ jobs: JobView[]; next: string | null; partial: boolean; cursors: (string | null)[] } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [mode, setMode] = useState<string>('');
  const cursorRef = useRef<string | null>(null);
  /** Shows the page at a cursor (null: the first), in the effect's scope so that a new filter drops answers to the old one. */
  const goTo = useRef<(cursor: string | null, cursors: (string | null)[]) => void>(() => {});
  /** The ids on the page, for the live events to tell theirs from new jobs. */
  const shown = useRef<Set<string>>(new Set());
  shown.current = new Set(page?.jobs.map((j) => j.job_id));

  useEffect(() => setDraft(filter), [key]);

  useEffect(() => {
    let alive = true;
    let pending: ReturnType<typeof setTimeout> | undefined;
    const controller = new AbortController();
    cursorRef.current = null;
    /**
     * New jobs that an event announced and the first page did not show yet,
     * with when the event came. The event comes from Redis as the job is
     * added; its row in the SQL history is written after, by a recorder that
     * may be seconds behind: a read of the page right after the event can
     * miss it, and no other event would come until the job starts.
     */
    const awaited = new Map<string, number>();
    let backoff = REFRESH_MS;
    const load = async (cursor: string | null, cursors: (string | null)[]) => {
      try {
        const res = await endpoints.jobs({ ...queryOf(filter), limit: PAGE_SIZE, cursor }, controller.signal);
        // A poll of the first page that answers after the user moved to the next is dropped.
        if (!alive || cursorRef.current !== cursor) return;
        setPage({ jobs: res.jobs, next: res.next_cursor, partial: res.partial, cursors });
        setError(null);
        if (cursor === null) awaitAgain(res.jobs);
      } catch (err) {
        if (alive && (err as Error).name !== 'AbortError') setError(err);
      }
    };
    goTo.current = (cursor, cursors) => {
      cursorRef.current = cursor;
      void load(cursor, cursors);
    };
    void load(null, [null]);
    // Live: a job on the page changes in place; anything else refreshes the first page, at most once a second.
    const refresh = (delay = REFRESH_MS) => {
      if (pending || cursorRef.current !== null) return;
      pending = setTimeout(() => {
        pending = undefined;
        void load(null, [null]);
      }, delay);
    };
    /** After a read of the first page: reads it again, less and less often, while an awaited job is missing from it. */
    const awaitAgain = (jobs: JobView[]) => {
      const now = Date.now();
      for (const j of jobs) awaited.delete(j.job_id);
      for (const [id, since] of awaited) if (now - since > AWAIT_MS) awaited.delete(id);
      if (awaited.size === 0) {
        backoff = REFRESH_MS;
        return;
      }
      refresh(backoff);
      backoff = Math.min(backoff * 2, MAX_AWAIT_BACKOFF_MS);
    };
    /** Whether a new job could be on this page: its status against the filter's (task and queue are the stream's own filter; the rest is left to the read, and to AWAIT_MS). */
    const couldShow = (e: LiveEvent) => !filter.status || e.status === filter.status;
    const stop = live({
      filter: { task: filter.task, queue: filter.queue },
      onEvent: (e) => {
        const known = shown.current.has(e.job_id);
        if (known) {
          setPage((p) => p && { ...p, jobs: p.jobs.map((j) => (j.job_id === e.job_id ? { ...j, ...(e.status ? { status: e.status } : {}), ...(e.progress ? { progress: e.progress } : {}) } : j)) });
        }
        // A job new to the page, or one that may have left a status filter: the page is read again.
        if (!known && e.event === 'queued' && couldShow(e) && awaited.size < MAX_AWAITED && !awaited.has(e.job_id)) awaited.set(e.job_id, Date.now());
        if (!known || filter.status) refresh();
      },
      resync: () => {
        if (cursorRef.current === null) void load(null, [null]);
      },
      onMode: (m) => setMode(m === 'events' ? 'Live' : 'Reconnecting…'),
    });
    return () => {
      alive = false;
      controller.abort();
      if (pending) clearTimeout(pending);
      stop();
    };
  }, [key]);

  const submit = (e: Event) => {
    e.preventDefault();
    navigate('/jobs', draft);
  };
  const field = (name: string) => ({
    id: `filter-${name}`,
    name,
    value: draft[name] ?? '',
    onInput: (e: Event) => setDraft({ ...draft, [name]: (e.target as HTMLInputElement).value }),
  });
  const nextPage = () => {
    if (page?.next) goTo.current(page.next, [...page.cursors, page.next]);
  };
  const firstPage = () => goTo.current(null, [null]);

  return (
    <>
      <h1 tabIndex={-1}>Jobs</h1>
      <form class="card filters" onSubmit={submit} aria-label="Filter jobs">
        <div class="field">
          <label for="filter-status">Status</label>
          <select {...field('status')} onChange={(e) => setDraft({ ...draft, status: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            {JOB_STATUSES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-task">Task</label>
          <input {...field('task')} placeholder="reports.* " />
        </div>
        <div class="field">
          <label for="filter-queue">Queue</label>
          <input {...field('queue')} />
        </div>
        {isAdmin(session) && (
          <div class="field">
            <label for="filter-tenant">Tenant</label>
            <input {...field('tenant')} />
          </div>
        )}
        <div class="field">
          <label for="filter-key_id">Key id</label>
          <input {...field('key_id')} />
        </div>
        <div class="field">
          <label for="filter-id_prefix">Id starts with</label>
          <input {...field('id_prefix')} />
        </div>
        <div class="field">
          <label for="filter-error">Error text</label>
          <input {...field('error')} />
        </div>
        <div class="field">
          <label for="filter-created_after">Created after</label>
          <input {...field('created_after')} type="datetime-local" />
        </div>
        <div class="field">
          <label for="filter-created_before">Created before</label>
          <input {...field('created_before')} type="datetime-local" />
        </div>
        <div class="field">
          <label for="filter-finished_after">Finished after</label>
          <input {...field('finished_after')} type="datetime-local" />
        </div>
        <div class="field">
          <label for="filter-finished_before">Finished before</label>
          <input {...field('finished_before')} type="datetime-local" />
        </div>
        <div class="field wide">
          <label for="filter-where">Input or result fields</label>
          <textarea {...field('where')} rows={2} class="mono" placeholder={'input.ticket_id:"T-1"\nresult.pages:12'} aria-describedby="where-help" />
          <span id="where-help" class="muted">
            One condition a line: input.key:value or result.key:value, the value in JSON ("text", 12, true, null).
          </span>
        </div>
        <div class="actions">
          <button type="submit">Apply filters</button>
          <a class="button secondary" href={href('/jobs')}>
            Clear
          </a>
        </div>
      </form>
      <ErrorNote error={error} />
      <p class="muted" aria-live="polite">
        {page ? `${page.jobs.length} job${page.jobs.length === 1 ? '' : 's'} on this page` : 'Loading…'} {mode && <span data-testid="live-mode">· {mode}</span>}
      </p>
      {page && page.jobs.length > 0 && (
        <div class="table-wrap">
          <table class="jobs">
            <caption class="sr-only">Jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Task</th>
                <th scope="col">Queue</th>
                <th scope="col">Status</th>
                <th scope="col">Tenant</th>
                <th scope="col">Attempts</th>
                <th scope="col">Created</th>
                <th scope="col">Duration</th>
              </tr>
            </thead>
            <tbody>
              {page.jobs.map((j) => (
                <tr key={j.job_id} data-job-id={j.job_id}>
                  <th scope="row">
                    <a href={href(`/jobs/${j.job_id}`)} class="mono">
                      {j.job_id}
                    </a>
                  </th>
                  <td>{j.task}</td>
                  <td>{j.queue}</td>
                  <td>
                    <StatusBadge status={j.status} />
                  </td>
                  <td>{j.tenant ?? '—'}</td>
                  <td>
                    {j.attempts}
                    {j.max_attempts ? `/${j.max_attempts}` : ''}
                  </td>
                  <td>{formatTime(j.created_at)}</td>
                  <td>{formatDuration(between(j.started_at, j.finished_at))}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {page?.partial && (
        <p class="note" role="status" data-testid="partial">
          The search ran out of time before it read the whole history: these are the jobs it found so far, and more may match further on.
        </p>
      )}
      {page && page.jobs.length === 0 && !page.partial && <p class="muted">No jobs match.</p>}
      <nav class="pager" aria-label="Pages">
        {page && page.cursors.length > 1 && (
          <button type="button" class="secondary" onClick={firstPage}>
            First page
          </button>
        )}
        {page?.next && (
          <button type="button" onClick={nextPage}>
            {page.partial ? 'Continue the search' : 'Next page'}
          </button>
        )}
      </nav>
    </>
  );
}
