import { createHash, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import { InvalidOptionsError, type FieldIssue } from '../errors.ts';
import { isIdentifierText, MAX_NAME_LENGTH } from '../limits.ts';
import type { ApiKeysTable } from '../store/db.ts';
import type { JobStore } from '../store/job-store.ts';
import { SCOPES, type Principal, type Scope } from './principal.ts';

/**
 * An API key is `cel_<id>_<secret>`: a public id of 16 characters (shown in
 * lists and in the `key_id` of the jobs the key submits) and a secret of 32
 * random bytes. The fixed-length id makes the token parse without ambiguity
 * (the secret's base64url may hold `_`), and the `cel_` prefix lets secret
 * scanners find leaked keys. Only the SHA-256 of the secret is stored: the
 * secret has 256 bits of entropy, so a slow hash would add nothing.
 */
const TOKEN = /^cel_([0-9a-z]{16})_([A-Za-z0-9_-]{43})$/;
const ID_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** A task-name pattern: a task name's characters plus `*`. */
const TASK_PATTERN = /^[A-Za-z0-9_.:\-*]{1,200}$/;

/** An API key as stored, without its secret. */
export interface ApiKey {
  id: string;
  name: string;
  tenant: string | null;
  scopes: Scope[];
  tasks: string[] | null;
  createdAt: number;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export interface NewKey {
  name: string;
  /** The tenant whose jobs the key sees and submits; none: the jobs without a tenant. */
  tenant?: string | null | undefined;
  scopes: readonly string[];
  /** Task-name patterns (`reports.*`) the key is limited to; none: every task. */
  tasks?: readonly string[] | null | undefined;
}

/** Splits a presented token into id and secret; undefined when it is not shaped like a key. */
export function parseToken(token: string): { id: string; secret: string } | undefined {
  const m = TOKEN.exec(token);
  return m ? { id: m[1] as string, secret: m[2] as string } : undefined;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/**
 * Constant-time check of a presented secret against a stored hash (hex, or
 * the bytes of it, which the authenticator keeps so that the hot path
 * decodes nothing).
 */
export function secretMatches(secret: string, storedHash: string | Buffer): boolean {
  // One-shot hash: about half the cost of createHash().update().digest() on the API's hot path.
  const presented = hash('sha256', secret, 'buffer');
  const stored = typeof storedHash === 'string' ? Buffer.from(storedHash, 'hex') : storedHash;
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

function newKeyId(): string {
  const bytes = randomBytes(16);
  let id = '';
  for (const b of bytes) id += ID_ALPHABET[b % 36];
  return id;
}

/** Checks a new key's fields; throws InvalidOptionsError naming each bad one. */
export function validateNewKey(key: NewKey): { name: string; tenant: string | null; scopes: Scope[]; tasks: string[] | null } {
  const issues: FieldIssue[] = [];
  const name = typeof key.name === 'string' ? key.name.trim() : '';
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !isIdentifierText(name)) issues.push({ path: 'name', message: `must be 1 to ${MAX_NAME_LENGTH} characters, without control characters` });
  const tenant = key.tenant ?? null;
  if (tenant !== null && (typeof tenant !== 'string' || tenant.length === 0 || tenant.length > MAX_NAME_LENGTH || !isIdentifierText(tenant))) {
    issues.push({ path: 'tenant', message: `must be 1 to ${MAX_NAME_LENGTH} characters, without control characters` });
  }
  const scopes = [...new Set(key.scopes ?? [])];
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0) issues.push({ path: 'scopes', message: `name at least one of ${SCOPES.join(', ')}` });
  else if (unknown.length > 0) issues.push({ path: 'scopes', message: `unknown scope ${unknown.map((s) => JSON.stringify(s)).join(', ')}; known: ${SCOPES.join(', ')}` });
  let tasks: string[] | null = null;
  if (key.tasks !== undefined && key.tasks !== null) {
    tasks = [...new Set(key.tasks)];
    const bad = tasks.filter((p) => !TASK_PATTERN.test(p));
    if (tasks.length === 0) issues.push({ path: 'tasks', message: 'name at least one task pattern, or leave it out for every task' });
    else if (bad.length > 0) issues.push({ path: 'tasks', message: `${bad.map((p) => JSON.stringify(p)).join(', ')}: a pattern is a task name where * stands for any characters` });
  }
  if (issues.length > 0) throw new InvalidOptionsError(issues);
  return { name, tenant, scopes: scopes as Scope[], tasks };
}

/**
 * Creates a key. Returns the token, which is not stored and cannot be shown
 * again, with the key's record.
 */
export async function createKey(store: JobStore, input: NewKey, now: number = Date.now()): Promise<{ token: string; key: ApiKey }> {
  const valid = validateNewKey(input);
  const id = newKeyId();
  const secret = randomBytes(32).toString('base64url');
  const row: ApiKeysTable = {
    id,
    name: valid.name,
    tenant: valid.tenant,
    scopes: JSON.stringify(valid.scopes),
    tasks: valid.tasks === null ? null : JSON.stringify(valid.tasks),
    secret_hash: hashSecret(secret),
    created_at: now,
    revoked_at: null,
    last_used_at: null,
  };
  await store.db.insertInto('api_keys').values(row).execute();
  return { token: `cel_${id}_${secret}`, key: fromRow(row) };
}

/** Every key, newest first, revoked ones included. */
export async function listKeys(store: JobStore): Promise<ApiKey[]> {
  const rows = await store.db.selectFrom('api_keys').selectAll().orderBy('created_at', 'desc').orderBy('id', 'desc').execute();
  return rows.map(fromRow);
}

/** True when at least one key is not revoked. */
export async function hasActiveKey(store: JobStore): Promise<boolean> {
  const row = await store.db.selectFrom('api_keys').select('id').where('revoked_at', 'is', null).limit(1).executeTakeFirst();
  return row !== undefined;
}

/** A key by its id, revoked or not, with its secret's hash; undefined when there is none. */
export async function findKey(store: JobStore, id: string): Promise<(ApiKey & { secretHash: string }) | undefined> {
  const row = await store.db.selectFrom('api_keys').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? { ...fromRow(row), secretHash: row.secret_hash } : undefined;
}

/**
 * Revokes the key with this id, or the one active key with this name.
 * Returns the revoked keys (empty when none matched). A name held by several
 * active keys is refused: revoke them by id.
 */
export async function revokeKey(store: JobStore, idOrName: string, now: number = Date.now()): Promise<ApiKey[]> {
  const byId = await store.db.selectFrom('api_keys').selectAll().where('id', '=', idOrName).execute();
  const rows = byId.length > 0 ? byId : await store.db.selectFrom('api_keys').selectAll().where('name', '=', idOrName).where('revoked_at', 'is', null).execute();
  if (rows.length > 1) {
    throw new InvalidOptionsError([{ path: 'key', message: `${rows.length} active keys are named "${idOrName}"; revoke one by its id (${rows.map((r) => r.id).join(', ')})` }]);
  }
  const row = rows[0];
  if (!row) return [];
  if (row.revoked_at === null) await store.db.updateTable('api_keys').set({ revoked_at: now }).where('id', '=', row.id).execute();
  return [fromRow({ ...row, revoked_at: row.revoked_at ?? now })];
}

/** Records when keys were last used (the authenticator batches these). */
export async function touchKeys(store: JobStore, uses: ReadonlyMap<string, number>): Promise<void> {
  for (const [id, at] of uses) {
    await store.db
      .updateTable('api_keys')
      .set({ last_used_at: at })
      .where('id', '=', id)
      .where((eb) => eb.or([eb('last_used_at', 'is', null), eb('last_used_at', '<', at)]))
      .execute();
  }
}

/** The principal an active key stands for. */
export function principalOfKey(key: ApiKey): Principal {
  return { keyId: key.id, name: key.name, tenant: key.tenant, scopes: new Set(key.scopes), tasks: key.tasks };
}

function fromRow(row: ApiKeysTable): ApiKey {
  return {
    id: row.id,
    name: row.name,
    tenant: row.tenant,
    scopes: JSON.parse(row.scopes) as Scope[],
    tasks: row.tasks === null ? null : (JSON.parse(row.tasks) as string[]),
    createdAt: Number(row.created_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
  };
}
