import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { Scope, SessionView } from './endpoints.ts';

export const SessionContext = createContext<SessionView | null>(null);

export function useSession(): SessionView {
  const session = useContext(SessionContext);
  if (!session) throw new Error('useSession outside a logged-in page');
  return session;
}

/** True when the session's key holds `scope` (admin holds them all), as the API decides. */
export function can(session: SessionView, scope: Scope): boolean {
  return session.scopes.includes('admin') || session.scopes.includes(scope);
}

export function isAdmin(session: SessionView): boolean {
  return session.scopes.includes('admin');
}
