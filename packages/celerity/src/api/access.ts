import type { App } from '../app.ts';
import { inTenantScope, isAdmin, taskAllowed, tenantScopeOf, type Principal } from '../auth/principal.ts';
import { createHash } from 'node:crypto';
import type { EnqueueOptions } from '../client/enqueue.ts';
import { ForbiddenError, InvalidInputError, InvalidOptionsError, JobNotFoundError } from '../errors.ts';
import { MAX_NAME_LENGTH } from '../limits.ts';
import type { JobRecord } from '../job-record.ts';

/** Tasks of Celerity's own (maintenance): only admin keys may submit them. */
const INTERNAL_TASK = /^celerity\./;

/**
 * A submission's enqueue options as this principal may give them. The tenant
 * comes from the key: a request naming another tenant is refused (an admin
 * may name any). The job records the key that submitted it. For a key that
 * is not an admin's, whose view is one tenant, nothing may reach across
 * tenants: an idempotency key is scoped to the tenant (the same key from two
 * tenants makes two jobs), and `job_id` is refused, since job ids are global
 * and an existing one would answer with another tenant's job.
 * Throws ForbiddenError when the task is outside the key's patterns or is
 * internal; these checks come before the input is validated, so that a key
 * learns nothing of tasks it may not use.
 */
export function scopedSubmission(principal: Principal, task: string, options: EnqueueOptions, tenantField: string): EnqueueOptions {
  assertMaySubmit(principal, task);
  // Copied with Object.assign, not a spread: on Node 20, adding a property
  // to an object made by a spread costs about a microsecond each
  // (docs/benchmarks.md, run 22), and this runs on every submission.
  if (isAdmin(principal)) return principal.keyId !== null ? Object.assign({}, options, { keyId: principal.keyId }) : options;
  if (options.tenant !== undefined && options.tenant !== principal.tenant) {
    throw new ForbiddenError(`${tenantField} names another tenant than the API key's; leave it out (the key's tenant is used)`, { field: tenantField });
  }
  if (options.jobId !== undefined) {
    throw new InvalidOptionsError([
      { path: 'options.job_id', message: "job ids are global across tenants, so a tenant's key cannot choose one; send an Idempotency-Key instead (it is scoped to the tenant)" },
    ]);
  }
  // options.tenant is now absent or the key's own.
  const scoped: EnqueueOptions = Object.assign({}, options);
  if (principal.tenant !== null) scoped.tenant = principal.tenant;
  if (options.idempotencyKey !== undefined) scoped.idempotencyKey = tenantIdempotencyKey(principal.tenant, options.idempotencyKey);
  if (principal.keyId !== null) scoped.keyId = principal.keyId;
  return scoped;
}

/**
 * An idempotency key in the tenant's own space. The tenant goes in as a
 * digest (tenant names may hold any character), and a long result is hashed
 * whole so that it stays within the key's length limit.
 */
export function tenantIdempotencyKey(tenant: string | null, key: string): string {
  const space = tenant === null ? 'none' : createHash('sha256').update(tenant).digest('base64url').slice(0, 16);
  const scoped = `tenant:${space}:${key}`;
  return scoped.length <= MAX_NAME_LENGTH ? scoped : `tenant:${space}:sha256:${createHash('sha256').update(key).digest('base64url')}`;
}

/** Throws ForbiddenError unless the principal may submit jobs of `task`. */
export function assertMaySubmit(principal: Principal, task: string): void {
  if (INTERNAL_TASK.test(task) && !isAdmin(principal)) {
    throw new ForbiddenError(`"${task}" is an internal task; only admin keys may submit it`, { task });
  }
  if (!taskAllowed(principal, task)) {
    throw new ForbiddenError(`The API key "${principal.name}" may not use the task "${task}"`, { task });
  }
}

/**
 * A file handle in a submitted input is refused unless an admin sends it:
 * handles are made by POST /v1/uploads, which submits their job itself, and
 * one copied from elsewhere could name another tenant's file.
 */
export function assertNoUploadHandle(principal: Principal, task: string, input: unknown): void {
  if (isAdmin(principal) || input === null || typeof input !== 'object') return;
  const file = (input as { file?: unknown }).file;
  if (file !== null && typeof file === 'object' && ('path' in file || 'upload_id' in file)) {
    throw new InvalidInputError(task, [{ path: 'file', message: 'upload handles are made by POST /v1/uploads, which submits the job itself; send the file there' }]);
  }
}

/**
 * The job if the principal may see it: its tenant's, of a task its patterns
 * allow. Otherwise JobNotFoundError, the very answer of a job that does not
 * exist, so that a key cannot tell another tenant's job from none.
 */
export async function visibleJob(app: App, principal: Principal, id: string): Promise<JobRecord> {
  const record = await app.getJob(id, { scope: tenantScopeOf(principal) });
  if (!record || !inTenantScope(tenantScopeOf(principal), record.tenant) || !taskAllowed(principal, record.task)) throw new JobNotFoundError(id);
  return record;
}
