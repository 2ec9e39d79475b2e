import { TaskDefinitionError } from './errors.ts';
import { isIdentifierText, MAX_NAME_LENGTH } from './limits.ts';

/** One secret, or several during a rotation (a signature by any one of them verifies). */
export type WebhookSecret = string | readonly string[];

/**
 * The secret of one tenant, for tasks that serve several senders: called
 * with the `X-Tenant-Id` of the request; undefined when the tenant is
 * unknown (the request is then refused like a bad signature).
 */
export type WebhookSecretLookup = (tenant: string) => WebhookSecret | undefined | Promise<WebhookSecret | undefined>;

/** The `webhook` option of `defineTask`: the task takes signed webhooks at `POST /v1/hooks/<name>`. */
export interface WebhookOptions {
  /**
   * The shared HMAC secret (at least 16 characters), several during a
   * rotation, or a function giving each tenant's. With a function, the
   * request names its tenant in `X-Tenant-Id`, and a valid signature proves
   * it; with a fixed secret the job's tenant is `tenant`.
   */
  secret: WebhookSecret | WebhookSecretLookup;
  /** Seconds a signature's timestamp may be off from now, either way. Default 300. */
  tolerance?: number;
  /** The tenant of the jobs, with a fixed secret. Default: none. */
  tenant?: string;
}

/** A task's `webhook` option, checked. */
export interface Webhook {
  /** The secrets, or the function giving a tenant's. */
  readonly secret: readonly string[] | WebhookSecretLookup;
  readonly tolerance: number;
  /** The tenant of the jobs with a fixed secret; undefined with a function (the tenant comes with the request). */
  readonly tenant: string | undefined;
}

export const DEFAULT_WEBHOOK_TOLERANCE = 300;
export const MIN_WEBHOOK_SECRET_LENGTH = 16;
// The tolerance is the replay window; past a day it no longer guards against
// much, and replays would outlive the idempotency keys that catch them.
const MAX_WEBHOOK_TOLERANCE = 86_400;

/**
 * Checks a `webhook` option at definition time, so that a short secret or a
 * typo fails when the app loads rather than on the first delivery. Messages
 * never quote a secret.
 */
export function webhookOption(owner: string, value: WebhookOptions | undefined): Webhook | undefined {
  if (value === undefined) return undefined;
  const fail = (message: string): never => {
    throw new TaskDefinitionError(`${owner}: webhook ${message}`);
  };
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return fail('must be { secret, tolerance?, tenant? }');
  const unknown = Object.keys(value).filter((k) => k !== 'secret' && k !== 'tolerance' && k !== 'tenant');
  if (unknown.length > 0) fail(`has unknown option${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (it takes secret, tolerance, tenant)`);
  const tolerance = value.tolerance ?? DEFAULT_WEBHOOK_TOLERANCE;
  if (!Number.isInteger(tolerance) || tolerance < 1 || tolerance > MAX_WEBHOOK_TOLERANCE) fail(`tolerance must be an integer of seconds in [1, ${MAX_WEBHOOK_TOLERANCE}]`);
  const { tenant } = value;
  if (tenant !== undefined && !(typeof tenant === 'string' && tenant.length > 0 && tenant.length <= MAX_NAME_LENGTH && isIdentifierText(tenant))) {
    fail(`tenant must be a tenant id (1-${MAX_NAME_LENGTH} characters, no control characters)`);
  }
  let secret: Webhook['secret'];
  if (typeof value.secret === 'function') {
    if (tenant !== undefined) fail('tenant cannot be set with a secret function: the tenant is the X-Tenant-Id its secret verifies');
    secret = value.secret;
  } else {
    const problem = secretsProblem(value.secret);
    if (problem) fail(`secret ${problem}, or a function (tenant) => secret`);
    secret = Object.freeze([...secretList(value.secret as WebhookSecret)]);
  }
  const webhook: Webhook = { secret, tolerance, tenant };
  // Out of logs and JSON dumps of the task: a serialized task must not carry its secrets.
  Object.defineProperty(webhook, 'toJSON', { value: () => ({ tolerance, tenant: tenant ?? null, per_tenant: typeof secret === 'function' }) });
  return Object.freeze(webhook);
}

/** What is wrong with a secret or a list of secrets, or undefined. */
export function secretsProblem(value: unknown): string | undefined {
  const ok = (s: unknown) => typeof s === 'string' && s.length >= MIN_WEBHOOK_SECRET_LENGTH;
  if (Array.isArray(value)) return value.length > 0 && value.every(ok) ? undefined : `must be a non-empty list of strings of at least ${MIN_WEBHOOK_SECRET_LENGTH} characters`;
  return ok(value) ? undefined : `must be a string of at least ${MIN_WEBHOOK_SECRET_LENGTH} characters, a non-empty list of them`;
}

export function secretList(secret: WebhookSecret): readonly string[] {
  return typeof secret === 'string' ? [secret] : secret;
}
