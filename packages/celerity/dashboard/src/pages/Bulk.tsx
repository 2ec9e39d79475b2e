import { useEffect, useState } from 'preact/hooks';
import { ErrorNote, Section, StatusBadge } from '../components/common.tsx';
import { ACTION_SCOPES, endpoints, JOB_FILTERS, JOB_STATUSES, OPERATION_DONE, type BulkAction, type BulkFilter, type OperationView } from '../endpoints.ts';
import { queryOf } from './Jobs.tsx';
import { formatTime } from '../format.ts';
import { href } from '../router.ts';
import { can, isAdmin, useSession } from '../session.ts';

const ACTIONS: BulkAction[] = ['retry', 'cancel', 'delete'];
const POLL_MS = 1_000;

type Form = Record<(typeof JOB_FILTERS)[number], string>;

const EMPTY: Form = Object.fromEntries(JOB_FILTERS.map((name) => [name, ''])) as Form;

/** Bulk actions: count first (a dry run), then act on that filter once confirmed, and follow the operation. */
export function Bulk() {
  const session = useSession();
  const allowed = ACTIONS.filter((a) => can(session, ACTION_SCOPES.bulk[a]));
  const [action, setAction] = useState<BulkAction>(allowed[0] ?? 'retry');
  const [form, setForm] = useState<Form>({ ...EMPTY, status: 'failed' });
  const [count, setCount] = useState<number | null>(null);
  const [operation, setOperation] = useState<OperationView | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  // As the jobs page sends its search: times in the browser's zone become instants, `where` one condition a line.
  const filter: BulkFilter = queryOf(form);
  // A changed form is a new question: the count shown no longer answers it.
  const edit = (patch: Partial<Form>) => {
    setForm({ ...form, ...patch });
    setCount(null);
  };

  const attempt = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const dryRun = (e: Event) => {
    e.preventDefault();
    void attempt(async () => {
      setOperation(null);
      setCount((await endpoints.bulkCount(action, filter)).count);
    });
  };
  const confirm = () =>
    attempt(async () => {
      setOperation(await endpoints.bulkStart(action, filter));
      setCount(null);
    });

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
            <select id="bulk-status" value={form.status} onChange={(e) => edit({ status: (e.target as HTMLSelectElement).value })}>
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
            <input id="bulk-task" value={form.task} onInput={(e) => edit({ task: (e.target as HTMLInputElement).value })} />
          </div>
          {/* A tenant's key acts on its own tenant only (the API refuses another): the field is an admin's. */}
          {isAdmin(session) && (
            <div class="field">
              <label for="bulk-tenant">Tenant</label>
              <input id="bulk-tenant" value={form.tenant} onInput={(e) => edit({ tenant: (e.target as HTMLInputElement).value })} />
            </div>
          )}
          <div class="field">
            <label for="bulk-key">Submitted by key id</label>
            <input id="bulk-key" value={form.key_id} onInput={(e) => edit({ key_id: (e.target as HTMLInputElement).value })} />
          </div>
          {(
            [
              ['queue', 'Queue', 'text'],
              ['id_prefix', 'Id starts with', 'text'],
              ['error', 'Error text', 'text'],
              ['created_after', 'Created after', 'datetime-local'],
              ['created_before', 'Created before', 'datetime-local'],
              ['finished_after', 'Finished after', 'datetime-local'],
              ['finished_before', 'Finished before', 'datetime-local'],
            ] as const
          ).map(([name, label, type]) => (
            <div class="field" key={name}>
              <label for={`bulk-${name}`}>{label}</label>
              <input id={`bulk-${name}`} type={type} value={form[name]} onInput={(e) => edit({ [name]: (e.target as HTMLInputElement).value })} />
            </div>
          ))}
          <div class="field wide">
            <label for="bulk-where">Input or result fields</label>
            <textarea id="bulk-where" rows={2} class="mono" value={form.where} placeholder={'input.ticket_id:"T-1"'} onInput={(e) => edit({ where: (e.target as HTMLTextAreaElement).value })} />
          </div>
          <div class="actions">
            <button type="submit" disabled={busy}>
              Count matching jobs
            </button>
            <a class="button secondary" href={href('/audit')}>
              Audit log
            </a>
          </div>
        </form>
      )}
      <ErrorNote error={error} />
      {count !== null && (
        <section class="card" aria-live="polite">
          <p>
            <strong data-testid="bulk-count">{count}</strong> job{count === 1 ? '' : 's'} match now.
          </p>
          {count > 0 && (
            <button type="button" class="danger" onClick={confirm} disabled={busy}>
              {`${action[0]?.toUpperCase()}${action.slice(1)} ${count} job${count === 1 ? '' : 's'}`}
            </button>
          )}
        </section>
      )}
      {operation && <OperationProgress initial={operation} />}
    </>
  );
}

/** A running operation, read every second until it ends: a bar of done and refused jobs over those matched, and Stop. */
function OperationProgress({ initial }: { initial: OperationView }) {
  const session = useSession();
  const [op, setOp] = useState(initial);
  const [error, setError] = useState<unknown>(null);
  const [stopping, setStopping] = useState(false);
  const id = initial.operation_id;

  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const next = await endpoints.bulkStatus(id);
        if (!alive) return;
        setOp(next);
        setError(null);
        if (OPERATION_DONE.has(next.status)) return;
      } catch (err) {
        if (!alive) return;
        setError(err);
      }
      timer = setTimeout(tick, POLL_MS);
    };
    timer = setTimeout(tick, POLL_MS);
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [id]);

  const stop = async () => {
    setStopping(true);
    try {
      setOp(await endpoints.bulkStop(id));
    } catch (err) {
      setError(err);
    } finally {
      setStopping(false);
    }
  };
  const handled = op.done + op.failed;
  const finished = OPERATION_DONE.has(op.status);
  return (
    <Section title={`Operation ${op.action} ${id}`} id="operation-title">
      <p aria-live="polite">
        <StatusBadge status={op.status} /> <span data-testid="bulk-progress">{`${handled} of ${op.matched}`}</span> handled: {op.done} done, {op.failed} refused.
      </p>
      <progress max={Math.max(op.matched, 1)} value={op.matched === 0 && finished ? 1 : handled} aria-label="Progress of the operation" />
      {!finished && can(session, ACTION_SCOPES.stopBulk) && (
        <div class="actions">
          <button type="button" class="danger" onClick={stop} disabled={stopping || op.status === 'stopping'}>
            {op.status === 'stopping' ? 'Stopping…' : 'Stop'}
          </button>
        </div>
      )}
      {op.errors && op.errors.length > 0 && <Refused errors={op.errors} />}
      <ErrorNote error={error} />
    </Section>
  );
}

function Refused({ errors }: { errors: NonNullable<OperationView['errors']> }) {
  return (
    <div class="table-wrap">
      <table>
        <caption>Jobs the action refused (the first ones)</caption>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Code</th>
            <th scope="col">Message</th>
          </tr>
        </thead>
        <tbody>
          {errors.map((e) => (
            <tr key={e.job_id}>
              <th scope="row">
                <a class="mono" href={href(`/jobs/${e.job_id}`)}>
                  {e.job_id}
                </a>
              </th>
              <td class="mono">{e.code}</td>
              <td>{e.message}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** `GET /v1/audit`: who ran which bulk operation, on what filter, when, and how it went. */
export function Audit() {
  const [pages, setPages] = useState<{ operations: OperationView[]; next: string | null } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = async (cursor: string | null) => {
    try {
      const res = await endpoints.audit(cursor);
      setPages((p) => ({ operations: [...(cursor && p ? p.operations : []), ...res.operations], next: res.next_cursor }));
      setError(null);
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => {
    void load(null);
  }, []);
  return (
    <>
      <h1 tabIndex={-1}>Audit log</h1>
      <p class="muted">Bulk operations, newest first.</p>
      <ErrorNote error={error} />
      {!pages && !error && <p class="muted">Loading…</p>}
      {pages && pages.operations.length === 0 && <p class="muted">No bulk operation yet.</p>}
      {pages && pages.operations.length > 0 && (
        <div class="table-wrap">
          <table class="audit">
            <caption class="sr-only">Bulk operations</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Key</th>
                <th scope="col">Action</th>
                <th scope="col">Filter</th>
                <th scope="col">Status</th>
                <th scope="col">Matched</th>
                <th scope="col">Done</th>
                <th scope="col">Refused</th>
                <th scope="col">Finished</th>
              </tr>
            </thead>
            <tbody>
              {pages.operations.map((op) => (
                <tr key={op.operation_id} data-operation-id={op.operation_id}>
                  <th scope="row">{formatTime(op.created_at)}</th>
                  <td>
                    {op.key_name} {op.key_id && <span class="muted mono">{op.key_id}</span>}
                  </td>
                  <td>{op.action}</td>
                  <td class="mono">
                    {Object.entries(op.filter)
                      .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(' and ') : String(v)}`)
                      .join(' ') || 'all'}
                    {op.all_tenants ? ' (every tenant)' : op.tenant ? ` (tenant ${op.tenant})` : ''}
                  </td>
                  <td>
                    <StatusBadge status={op.status} />
                  </td>
                  <td>{op.matched}</td>
                  <td>{op.done}</td>
                  <td>{op.failed}</td>
                  <td>{formatTime(op.finished_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {pages?.next && (
        <nav class="pager" aria-label="Pages">
          <button type="button" onClick={() => void load(pages.next)}>
            Older operations
          </button>
        </nav>
      )}
    </>
  );
}
