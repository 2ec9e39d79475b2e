import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { endpoints, type SessionView } from './endpoints.ts';
import { ApiError, setCsrfToken, settings, whenUnauthorized } from './http.ts';
import { Audit, Bulk } from './pages/Bulk.tsx';
import { JobDetail } from './pages/JobDetail.tsx';
import { Jobs } from './pages/Jobs.tsx';
import { Login } from './pages/Login.tsx';
import { Overview } from './pages/Overview.tsx';
import { href, navigate, useRoute } from './router.ts';
import { can, SessionContext } from './session.ts';
import { ThemeToggle } from './theme.tsx';

type State = { phase: 'loading' } | { phase: 'login'; expired: boolean } | { phase: 'in'; session: SessionView } | { phase: 'error'; error: unknown };

function App() {
  const [state, setState] = useState<State>({ phase: 'loading' });
  const route = useRoute();
  const main = useRef<HTMLElement>(null);

  const enter = (session: SessionView) => {
    setCsrfToken(session.csrf_token);
    setState({ phase: 'in', session });
  };

  useEffect(() => {
    whenUnauthorized(() => setState({ phase: 'login', expired: true }));
    endpoints
      .session()
      .then(enter)
      .catch((error) => setState(error instanceof ApiError && error.status === 401 ? { phase: 'login', expired: false } : { phase: 'error', error }));
  }, []);

  // Moving to another page moves the focus to its heading, so that a screen
  // reader announces it; the first page leaves it at the top, where the skip link is.
  const firstPath = useRef(true);
  useEffect(() => {
    if (firstPath.current) {
      firstPath.current = false;
      return;
    }
    main.current?.querySelector<HTMLElement>('h1')?.focus();
  }, [route.path]);

  if (state.phase === 'loading') return <p class="muted center">Loading…</p>;
  if (state.phase === 'error') {
    return (
      <main id="main" class="login">
        <h1>Celerity</h1>
        <p class="error" role="alert">
          {state.error instanceof ApiError
            ? `The server refused the dashboard's session (${state.error.status}): ${state.error.message}`
            : `The dashboard cannot reach the server: ${(state.error as Error).message}`}
        </p>
        <button type="button" onClick={() => location.reload()}>
          Try again
        </button>
      </main>
    );
  }
  if (state.phase === 'login') {
    return (
      <Login
        expired={state.expired}
        onLogin={(s) => {
          enter(s);
          navigate('/');
        }}
      />
    );
  }

  const { session } = state;
  const logout = async () => {
    try {
      await endpoints.logout();
    } finally {
      setCsrfToken(null);
      setState({ phase: 'login', expired: false });
    }
  };
  const acts = can(session, 'jobs:cancel') || can(session, 'jobs:retry') || can(session, 'jobs:delete');
  const current = (path: string) => (route.path === path || (path !== '/' && route.path.startsWith(`${path}/`)) ? 'page' : undefined);

  let page;
  const jobMatch = /^\/jobs\/(.+)$/.exec(route.path);
  if (jobMatch) page = <JobDetail id={decodeURIComponent(jobMatch[1] as string)} />;
  else if (route.path === '/jobs') page = <Jobs route={route} />;
  else if (route.path === '/bulk') page = <Bulk />;
  else if (route.path === '/audit') page = <Audit />;
  else if (route.path === '/' || route.path === '') page = <Overview />;
  else
    page = (
      <>
        <h1 tabIndex={-1}>Not found</h1>
        <p>
          No page {route.path}. <a href={href('/')}>Back to the overview</a>.
        </p>
      </>
    );

  return (
    <SessionContext.Provider value={session}>
      {/* A button, not a link to #main: the hash is the router's. */}
      <button type="button" class="skip-link" onClick={() => main.current?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <a class="brand" href={href('/')}>
          Celerity
        </a>
        <nav aria-label="Main">
          <ul>
            <li>
              <a href={href('/')} aria-current={current('/')}>
                Overview
              </a>
            </li>
            <li>
              <a href={href('/jobs')} aria-current={current('/jobs')}>
                Jobs
              </a>
            </li>
            {acts && (
              <li>
                <a href={href('/bulk')} aria-current={current('/bulk')}>
                  Bulk actions
                </a>
              </li>
            )}
            <li>
              <a href={href('/audit')} aria-current={current('/audit')}>
                Audit log
              </a>
            </li>
          </ul>
        </nav>
        <div class="who">
          <span data-testid="who">
            {session.name}
            {session.tenant !== null && ` · tenant ${session.tenant}`}
            {!acts && ' · read only'}
          </span>
          <ThemeToggle />
          {settings.auth === 'keys' && (
            <button type="button" class="secondary" onClick={logout}>
              Log out
            </button>
          )}
        </div>
      </header>
      {session.auth === 'off' && (
        <p class="banner" role="status">
          Authentication is off (CELERITY_AUTH=off): no login is needed, and every visitor is an admin of every tenant.
        </p>
      )}
      <main id="main" ref={main} tabIndex={-1}>
        {page}
      </main>
    </SessionContext.Provider>
  );
}

const root = document.getElementById('app');
if (root) render(<App />, root);
