/**
 * The one way the page talks to the server: same-origin fetches with the
 * session cookie, the CSRF token on every request that changes state, and
 * the API's error shape turned into an {@link ApiError}.
 */

const root = document.getElementById('app');

/** What the server put on the page (src/dashboard/plugin.ts): where the dashboard and the API are mounted, and whether keys are on. */
export const settings = {
  base: root?.dataset.base ?? '/dashboard',
  api: root?.dataset.api ?? '',
  auth: root?.dataset.auth === 'off' ? ('off' as const) : ('keys' as const),
};

let csrfToken: string | null = null;
let onUnauthorized: () => void = () => {};

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called when the API says the session is gone (expired, logged out elsewhere, key revoked). */
export function whenUnauthorized(fn: () => void): void {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details: unknown) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** A query's parameters; an array is a repeated parameter (`where=…&where=…`). */
export type Query = Record<string, string | number | boolean | string[] | undefined | null>;

export function queryString(query: Query | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (Array.isArray(v)) for (const item of v) params.append(k, item);
    else if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  /** `api` (default): the job API; `dashboard`: the dashboard's own routes. */
  under?: 'api' | 'dashboard';
  signal?: AbortSignal;
}

export function urlOf(path: string, under: 'api' | 'dashboard' = 'api', query?: Query): string {
  return `${under === 'api' ? settings.api : settings.base}${path}${queryString(query)}`;
}

export function headersFor(method: string, hasBody: boolean): Record<string, string> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (hasBody) headers['content-type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['x-csrf-token'] = csrfToken;
  return headers;
}

export async function request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  const hasBody = opts.body !== undefined;
  let res: Response;
  try {
    res = await fetch(urlOf(path, opts.under, opts.query), {
      method,
      headers: headersFor(method, hasBody),
      credentials: 'same-origin',
      body: hasBody ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
    });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'The server cannot be reached', null);
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const error = (data as { error?: { code?: string; message?: string; details?: unknown } } | undefined)?.error;
    const failure = new ApiError(res.status, error?.code ?? 'http_error', error?.message ?? `${res.status} ${res.statusText}`, error?.details ?? null);
    if (res.status === 401 && opts.under !== 'dashboard') onUnauthorized();
    throw failure;
  }
  return data as T;
}
