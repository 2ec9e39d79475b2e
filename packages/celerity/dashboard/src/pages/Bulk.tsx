import { useEffect, useState } from 'preact/hooks';
import { ErrorNote, Json } from '../components/common.tsx';
import { ACTION_SCOPES, endpoints, JOB_STATUSES, type BulkAction } from '../endpoints.ts';
import { can, useSession } from '../session.ts';

const ACTIONS: BulkAction[] = ['retry', 'cancel', 'delete'];

/** Bulk actions: count first (a dry run), then act on that filter once confirmed. */
export function Bulk() {
  const session = useSession();
  const allowed = ACTIONS.filter((a) => can(session, ACTION_SCOPES.bulk[a]));
  const [action, setAction] = useState<BulkAction>(allowed[0] ?? 'retry');
  const [filter, setFilter] = useState<Record<string, string>>({ status: 'failed', task: '', queue: '' });
  const [count, setCount] = useState<number | null>(null);
  const [operation, setOperation] = useState<string | null>(null);
  const [progress, setProgress] = useState<Record<string, unknown> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const chosen = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== ''));
  // A changed form is a new question: the count shown no longer answers it.
  const edit = (patch: Partial<Record<string, string>>) => {
    setFilter({ ...filter, ...(patch as Record<string, string>) });
    setCount(null);
  };

  const dryRun = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setOperation(null);
    try {
      const res = await endpoints.bulk(action, chosen, true);
      setCount(res.count ?? 0);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      const res = await endpoints.bulk(action, chosen, false);
      setOperation(res.id ?? null);
      setCount(null);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  useEffect(() => {
    if (!operation) return;
    let alive = true;
    let timer: ReturnType<typeof setTimeout>;
    const tick = async () => {
      try {
        const p = await endpoints.bulkStatus(operation);
        if (!alive) return;
        setProgress(p);
        if (p.status === 'completed' || p.status === 'failed' || p.finished_at) return;
      } catch (err) {
        if (alive) setError(err);
        return;
      }
      timer = setTimeout(tick, 1_000);
    };
    void tick();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [operation]);

  return (
    <>
      <h1 tabIndex={-1}>Bulk actions</h1>
      {allowed.length === 0 ? (
        <p class="note">The key "{session.name}" may not retry, cancel or delete jobs.</p>
      ) : (
        <form class="card filters" onSubmit={dryRun} aria-label="Bulk action">
          <div class="field">
            <label for="bulk-action">Action</label>
            <select
              id="bulk-action"
              value={action}
              onChange={(e) => {
                setAction((e.target as HTMLSelectElement).value as BulkAction);
                setCount(null);
              }}
            >
              {allowed.map((a) => (
                <option key={a} value={a}>
                  {a}
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="bulk-status">Status</label>
            <select id="bulk-status" value={filter.status} onChange={(e) => edit({ status: (e.target as HTMLSelectElement).value })}>
              <option value="">any</option>
              {JOB_STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="bulk-task">Task</label>
            <input id="bulk-task" value={filter.task} onInput={(e) => edit({ task: (e.target as HTMLInputElement).value })} />
          </div>
          <div class="field">
            <label for="bulk-queue">Queue</label>
            <input id="bulk-queue" value={filter.queue} onInput={(e) => edit({ queue: (e.target as HTMLInputElement).value })} />
          </div>
          <div class="actions">
            <button type="submit" disabled={busy}>
              Count matching jobs
            </button>
          </div>
        </form>
      )}
      <ErrorNote error={error} what="Bulk actions (POST /v1/bulk)" />
      {count !== null && (
        <section class="card" aria-live="polite">
          <p>
            <strong data-testid="bulk-count">{count}</strong> job{count === 1 ? '' : 's'} match.
          </p>
          {count > 0 && (
            <button type="button" class="danger" onClick={confirm} disabled={busy}>
              {`${action[0]?.toUpperCase()}${action.slice(1)} ${count} job${count === 1 ? '' : 's'}`}
            </button>
          )}
        </section>
      )}
      {operation && (
        <section class="card" aria-live="polite">
          <h2>Operation {operation}</h2>
          {progress ? <Json value={progress} label="Progress of the operation" /> : <p class="muted">Starting…</p>}
        </section>
      )}
    </>
  );
}
