import type { FastifyRequest } from 'fastify';

/**
 * What an API key may do. `admin` implies every other scope, every tenant,
 * the key commands and the internal tasks (`celerity.*`).
 */
export const SCOPES = ['jobs:submit', 'jobs:read', 'jobs:cancel', 'jobs:retry', 'jobs:delete', 'ops:read', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/**
 * Who is calling the job API: the API key of the request, or, when
 * authentication is off (`CELERITY_AUTH=off`), an open principal with the
 * `admin` scope.
 */
export interface Principal {
  /** The key's public id (recorded as the `key_id` of the jobs it submits); null when authentication is off. */
  readonly keyId: string | null;
  /** The key's name, for logs and the audit of its use. */
  readonly name: string;
  /**
   * The tenant whose jobs the key sees and submits; null: the jobs without a
   * tenant. An admin key sees every tenant whatever this says.
   */
  readonly tenant: string | null;
  readonly scopes: ReadonlySet<Scope>;
  /** Task-name patterns the key is limited to (`reports.*`); null: every task. */
  readonly tasks: readonly string[] | null;
}

/**
 * Whose jobs a read may see: every tenant's (admins, and Celerity's own
 * work), or one tenant's (null: the jobs without a tenant).
 */
export type TenantScope = { readonly all: true } | { readonly all: false; readonly tenant: string | null };

/** Every tenant's jobs: the scope of admins and of Celerity's own work (recorder, maintenance). */
export const ALL_TENANTS: TenantScope = Object.freeze({ all: true });

/** The principal of a request when authentication is off: it may do anything, for any tenant. */
export const OPEN_PRINCIPAL: Principal = Object.freeze({
  keyId: null,
  name: 'open',
  tenant: null,
  scopes: new Set<Scope>(['admin']),
  tasks: null,
});

export function isAdmin(p: Principal): boolean {
  return p.scopes.has('admin');
}

/** True when the principal holds `scope` (an admin holds them all). */
export function hasScope(p: Principal, scope: Scope): boolean {
  return p.scopes.has('admin') || p.scopes.has(scope);
}

/** The tenant scope of a principal's reads. */
export function tenantScopeOf(p: Principal): TenantScope {
  return isAdmin(p) ? ALL_TENANTS : { all: false, tenant: p.tenant };
}

/** True when a job of `tenant` is within the scope. */
export function inTenantScope(scope: TenantScope, tenant: string | null): boolean {
  return scope.all || scope.tenant === tenant;
}

/**
 * True when `pattern` matches the task name: `*` stands for any run of
 * characters (dots included, so `reports.*` matches `reports.daily` and
 * `reports.eu.daily`); every other character stands for itself.
 */
export function taskPatternMatches(pattern: string, task: string): boolean {
  if (!pattern.includes('*')) return pattern === task;
  const parts = pattern.split('*');
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  if (task.length < first.length + last.length || !task.startsWith(first) || !task.endsWith(last)) return false;
  let at = first.length;
  const end = task.length - last.length;
  for (const middle of parts.slice(1, -1)) {
    const found = task.indexOf(middle, at);
    if (found === -1 || found + middle.length > end) return false;
    at = found + middle.length;
  }
  return true;
}

/** True when the principal may act on jobs of `task` (admins and unrestricted keys: every task). */
export function taskAllowed(p: Principal, task: string): boolean {
  if (isAdmin(p) || p.tasks === null) return true;
  return p.tasks.some((pattern) => taskPatternMatches(pattern, task));
}

const PRINCIPAL = Symbol.for('celerity.principal');

/** Set by the API's authentication hook; see {@link principalOf}. */
export function setPrincipal(request: FastifyRequest, principal: Principal): void {
  (request as unknown as Record<symbol, Principal>)[PRINCIPAL] = principal;
}

/**
 * The caller of a request to the job API (or to an app's own routes mounted
 * with it), as its authentication hook found it. Routes an app adds use it
 * to scope their own data:
 *
 * ```ts
 * const { tenant } = principalOf(request);
 * ```
 *
 * Throws when the request did not pass the hook (a route outside the API's
 * context): reading a missing principal as "anyone" would open the route.
 */
export function principalOf(request: FastifyRequest): Principal {
  const principal = (request as unknown as Record<symbol, Principal | undefined>)[PRINCIPAL];
  if (!principal) throw new Error(`No Celerity principal on ${request.method} ${request.url}: the route is not behind celerityApi's authentication`);
  return principal;
}

/** The principal of a request, or undefined before authentication ran (or on an open route). */
export function maybePrincipalOf(request: FastifyRequest): Principal | undefined {
  return (request as unknown as Record<symbol, Principal | undefined>)[PRINCIPAL];
}

/**
 * What a route of the job API requires, in its Fastify route `config`:
 * `{ config: { celerity: { scope: 'jobs:read' } } }`. A route that says
 * nothing requires a valid key (any scope); `open: true` requires none
 * (health probes).
 */
export interface RouteAuth {
  scope?: Scope;
  open?: boolean;
  /** The route also takes `CELERITY_METRICS_TOKEN` instead of a key (`/metrics`). */
  metricsToken?: boolean;
  /** The route serves HTML and sets its own Content-Security-Policy (the other security headers stay). */
  html?: boolean;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What the route asks of its caller under celerityApi; see {@link RouteAuth}. */
    celerity?: RouteAuth;
  }
}
