import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Command, Option } from 'commander';
import { createKey, findKey, listKeys, parseToken, revokeKey, secretMatches, type ApiKey } from '../auth/key-store.ts';
import { SCOPES } from '../auth/principal.ts';
import { loadConfig, OPTIONS, type OptionName, type RawConfig } from '../config.ts';
import { InvalidOptionsError } from '../errors.ts';
import { JobStore } from '../store/job-store.ts';
import { CliError } from './cli-error.ts';

/** Where the keys live: the job store. */
const STORE_OPTIONS: OptionName[] = ['databaseUrl', 'databaseSchema', 'sqlitePath'];

type StoreFlags = Partial<Record<OptionName, string>>;

/**
 * Adds `celerity keys create|list|revoke`. Keys live in the job store
 * (Celerity's SQL schema), so these commands need only its settings, not the
 * app; API processes see a new or revoked key within a second.
 */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description('Create, list and revoke API keys of the job API.');

  withStore(
    keys
      .command('create')
      .description('Create an API key and print it (once: only its hash is stored). The key goes to stdout, the rest to stderr.')
      .requiredOption('--name <name>', 'what the key is for (shown in lists and logs)')
      .requiredOption('--scopes <list>', `comma-separated scopes: ${SCOPES.join(', ')}`)
      .option('--tenant <tenant>', "the tenant whose jobs the key submits and sees; without it, the jobs without a tenant (an admin key sees every tenant's)")
      .option('--tasks <patterns>', 'comma-separated task-name patterns the key is limited to, `*` for any characters (e.g. `reports.*`)')
      .option('--json', 'print the key and its record as JSON'),
  ).action(async (flags: StoreFlags & { name: string; scopes: string; tenant?: string; tasks?: string; json?: boolean }) => {
    await withOpenStore(flags, async (store) => {
      const { token, key } = await createKey(store, { name: flags.name, tenant: flags.tenant, scopes: list(flags.scopes), tasks: flags.tasks === undefined ? null : list(flags.tasks) }).catch(oneLine);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ key: token, ...keyJson(key) })}\n`);
        return;
      }
      process.stderr.write(`Created API key ${key.id} (${describe(key)}). It is shown only now:\n`);
      process.stdout.write(`${token}\n`);
    });
  });

  withStore(keys.command('list').description('List the API keys, newest first (revoked ones too).').option('--json', 'print JSON')).action(async (flags: StoreFlags & { json?: boolean }) => {
    await withOpenStore(flags, async (store) => {
      const all = await listKeys(store);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ keys: all.map(keyJson) })}\n`);
        return;
      }
      if (all.length === 0) {
        process.stdout.write('No API keys. Create one with: celerity keys create --name <name> --scopes <scopes>\n');
        return;
      }
      const rows = all.map((k) => [k.id, k.name, k.tenant ?? '-', k.scopes.join(','), k.tasks?.join(',') ?? '*', iso(k.createdAt), iso(k.lastUsedAt), iso(k.revokedAt)]);
      for (const line of table(['ID', 'NAME', 'TENANT', 'SCOPES', 'TASKS', 'CREATED', 'LAST USED', 'REVOKED'], rows)) process.stdout.write(`${line}\n`);
    });
  });

  withStore(
    keys.command('revoke').description('Revoke an API key by id (or by name, when one active key has it); API processes refuse it within a second.').argument('<key>', 'the key id or name'),
  ).action(async (idOrName: string, flags: StoreFlags) => {
    await withOpenStore(flags, async (store) => {
      const revoked = await revokeKey(store, idOrName).catch(oneLine);
      const key = revoked[0];
      if (!key) throw new CliError(`no active API key has the id or name "${idOrName}" (see celerity keys list)`, 1);
      process.stdout.write(`Revoked API key ${key.id} (${describe(key)})\n`);
    });
  });
}

function withStore(cmd: Command): Command {
  for (const name of STORE_OPTIONS) {
    const meta = OPTIONS[name];
    cmd.addOption(new Option(`${meta.flag} <value>`, `${meta.doc} [env ${meta.env}]`));
  }
  return cmd;
}

async function withOpenStore(flags: StoreFlags, fn: (store: JobStore) => Promise<void>): Promise<void> {
  const given: RawConfig = {};
  for (const name of STORE_OPTIONS) if (flags[name] !== undefined) given[name] = flags[name];
  const config = loadConfig({ flags: given });
  const store = new JobStore({ databaseUrl: config.databaseUrl, sqlitePath: config.sqlitePath, schema: config.databaseSchema });
  try {
    await store.check();
    await store.migrate();
    await fn(store);
  } finally {
    await store.close();
  }
}

/** A bad field as one CLI line, naming the flag. */
function oneLine(err: unknown): never {
  if (err instanceof InvalidOptionsError) throw new CliError(err.details.issues.map((i) => `--${i.path === 'key' ? 'key' : i.path}: ${i.message}`).join('; '));
  throw err;
}

function list(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function describe(k: ApiKey): string {
  return `name ${k.name}, ${k.tenant === null ? 'no tenant' : `tenant ${k.tenant}`}, scopes ${k.scopes.join(',')}${k.tasks ? `, tasks ${k.tasks.join(',')}` : ''}`;
}

function keyJson(k: ApiKey) {
  return {
    id: k.id,
    name: k.name,
    tenant: k.tenant,
    scopes: k.scopes,
    tasks: k.tasks,
    created_at: iso(k.createdAt),
    last_used_at: k.lastUsedAt === null ? null : iso(k.lastUsedAt),
    revoked_at: k.revokedAt === null ? null : iso(k.revokedAt),
  };
}

function iso(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString();
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows].map((r) =>
    r
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd(),
  );
}

/**
 * The key `celerity dev` serves with: the one saved in `file` when it is
 * still valid, else a new admin key named `dev`, saved there (mode 0600) so
 * that the README's curl lines can read it with `$(cat .celerity/dev-key)`.
 */
export async function devKey(store: JobStore, file: string): Promise<{ token: string; created: boolean }> {
  const saved = await readFile(file, 'utf8').then(
    (t) => t.trim(),
    () => undefined,
  );
  const parsed = saved === undefined ? undefined : parseToken(saved);
  if (saved !== undefined && parsed) {
    const key = await findKey(store, parsed.id);
    if (key && key.revokedAt === null && secretMatches(parsed.secret, key.secretHash) && key.scopes.includes('admin')) return { token: saved, created: false };
  }
  const { token } = await createKey(store, { name: 'dev', scopes: ['admin'] });
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  return { token, created: true };
}
