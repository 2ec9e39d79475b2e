import { useEffect, useRef, useState } from 'preact/hooks';
import { ErrorNote } from '../components/common.tsx';
import { endpoints, type SessionView } from '../endpoints.ts';
import { ApiError, settings } from '../http.ts';

export function Login({ onLogin, expired }: { onLogin: (s: SessionView) => void; expired: boolean }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onLogin(await endpoints.login(key));
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? 'That API key is not valid (unknown, revoked or mistyped).' : (err as Error).message);
      input.current?.focus();
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" class="login" tabIndex={-1}>
      <h1>Celerity</h1>
      {expired && <p class="note">Your session has ended. Log in again.</p>}
      <form method="post" action={`${settings.base}/login`} onSubmit={submit} class="card">
        <label for="api-key">API key</label>
        <input
          ref={input}
          id="api-key"
          name="key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          required
          value={key}
          onInput={(e) => setKey((e.target as HTMLInputElement).value)}
          aria-describedby="api-key-help"
          aria-invalid={error !== null}
        />
        <p id="api-key-help" class="muted">
          A key made with <code>celerity keys create</code>. It stays on the server: the browser keeps only a session cookie.
        </p>
        <button type="submit" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <ErrorNote error={error} />
      </form>
    </main>
  );
}
