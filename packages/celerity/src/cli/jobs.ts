import { createInterface } from 'node:readline/promises';
import { type Command, Option } from 'commander';
import type { App } from '../app.ts';
import { ALL_TENANTS } from '../auth/principal.ts';
import { loadConfig, OPTIONS, type OptionName, type RawConfig } from '../config.ts';
import { newJobId } from '../ids.ts';
import { JOB_STATUSES } from '../job-record.ts';
import type { BulkAction, BulkFilter } from '../ops/bulk/operations.ts';
import { runBulkHere } from '../ops/bulk/run.ts';
import { parseSearchFilter, type SearchFilterFields, searchFilterProperties } from '../api/search-filter.ts';
import { InvalidSearchError } from '../store/job-search.ts';
import { CliError } from './cli-error.ts';
import { loadApp } from './load-app.ts';

/** What the job and queue commands need: where Redis and the store are. */
export const ACTION_OPTIONS: OptionName[] = ['redisUrl', 'brokerUrl', 'prefix', 'redisCluster', 'databaseUrl', 'databaseSchema', 'sqlitePath', 'resultTtl', 'logLevel'];

export type ActionFlags = Partial<Record<OptionName, string>> & { app: string };

/** Adds the store and Redis flags, and the required `--app`. */
export function withActionConfig(cmd: Command): Command {
  for (const name of ACTION_OPTIONS) {
    const meta = OPTIONS[name];
    cmd.addOption(new Option(`${meta.flag} <value>`, `${meta.doc} [env ${meta.env}]`));
  }
  return cmd.requiredOption('--app <module>', 'module exporting the app (default export or `app`)');
}

/** Loads the app with the flags over the environment (validated first: a bad flag is one line), runs `fn`, closes it. */
export async function withApp<T>(flags: ActionFlags, fn: (app: App) => Promise<T>): Promise<T> {
  const given: RawConfig = {};
  for (const name of ACTION_OPTIONS) if (flags[name] !== undefined) given[name] = flags[name];
  loadConfig({ flags: given });
  const app = (await loadApp(flags.app)).configure(given);
  try {
    return await fn(app);
  } finally {
    await app.close();
  }
}

interface FilterFlags extends ActionFlags {
  status?: string;
  task?: string;
  tenant?: string;
  keyId?: string;
  queue?: string;
  idPrefix?: string;
  createdAfter?: string;
  createdBefore?: string;
  finishedAfter?: string;
  finishedBefore?: string;
  error?: string;
  where?: string[];
  dryRun?: boolean;
  yes?: boolean;
  input?: string;
  json?: boolean;
}

const print = (line: string) => process.stdout.write(`${line}\n`);
const say = (line: string) => process.stderr.write(`${line}\n`);

/**
 * `celerity jobs retry|cancel|delete <id>` act on one job;
 * `celerity jobs retry|cancel|delete --status failed --task x` on every job
 * of the history the filter matches: the count first, then (with `--yes`,
 * or after a confirmation on a terminal) the action, run in this process
 * with an entry in the audit log, stoppable with Ctrl-C.
 * `celerity jobs promote <id>` runs a delayed job now.
 */
export function registerJobs(program: Command): void {
  const jobs = program.command('jobs').description('Operate on jobs: retry, cancel, delete (one, or every job a filter matches), promote.');
  for (const action of ['retry', 'cancel', 'delete'] as const) {
    const cmd = withActionConfig(
      jobs
        .command(action)
        .description(
          `${action[0]!.toUpperCase()}${action.slice(1)} a job by id, or every job of the history a filter matches, the filters of GET /v1/jobs (a count first; --yes to go on without asking).`,
        )
        .argument('[id]', 'the job; leave it out to act by filter'),
    )
      .addOption(new Option('--status <status>', 'only jobs of this status').choices(JOB_STATUSES))
      .option('--task <name>', 'only jobs of this task')
      .option('--tenant <tenant>', "only this tenant's jobs")
      .option('--key-id <id>', 'only the jobs submitted with this API key')
      .option('--queue <name>', 'only the jobs of this queue')
      .option('--id-prefix <prefix>', 'only the jobs whose id starts with this')
      .option('--created-after <instant>', 'only the jobs created at or after this instant (epoch ms, or ISO-8601 with a time zone)')
      .option('--created-before <instant>', 'only the jobs created before this instant')
      .option('--finished-after <instant>', 'only the jobs finished at or after this instant')
      .option('--finished-before <instant>', 'only the jobs finished before this instant')
      .option('--error <text>', 'only the jobs whose error message or type contains this text')
      .option(
        '--where <condition>',
        'a condition on the input or the result, input.ticket_id:"T-1"; repeat it for several, all of which must hold',
        (value: string, all: string[]) => [...all, value],
        [],
      )
      .option('--dry-run', 'only count the jobs the filter matches')
      .option('--yes', 'do not ask for confirmation')
      .option('--json', 'print the outcome as JSON');
    if (action === 'retry') cmd.option('--input <json>', "the new job's input (JSON) instead of the original's; only with an id");
    cmd.action(async (id: string | undefined, flags: FilterFlags) => {
      await withApp(flags, (app) => (id === undefined ? byFilter(app, action, flags) : one(app, action, id, flags)));
    });
  }
  withActionConfig(jobs.command('promote').description('Run a delayed job now.').argument('<id>', 'the job')).action(async (id: string, flags: ActionFlags) => {
    await withApp(flags, async (app) => print(`${id}: ${await app.promote(id)}`));
  });
}

/** The filter flags as the API spells its search filters (`--key-id` is `key_id`), each only when given. */
function filterFields(flags: FilterFlags): SearchFilterFields {
  const given = new Map<string, unknown>(Object.entries(flags));
  const fields: Record<string, unknown> = {};
  for (const name of Object.keys(searchFilterProperties)) {
    // Commander names a flag's value in camel case: --created-after is createdAfter.
    const value = given.get(name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()));
    if (value !== undefined && !(Array.isArray(value) && value.length === 0)) fields[name] = value;
  }
  return fields as SearchFilterFields;
}

/** The filter parsed as the API parses it; a malformed one is one line naming its flag. */
function parseFilter(fields: SearchFilterFields): BulkFilter {
  try {
    return parseSearchFilter(fields, 'cli');
  } catch (err) {
    if (!(err instanceof InvalidSearchError)) throw err;
    const issue = err.details.issues[0]!;
    // `cli.created_after` → --created-after; `cli.where.1` → --where.
    const flag = `--${issue.path
      .replace(/^cli\./, '')
      .replace(/\.\d+$/, '')
      .replace(/_/g, '-')}`;
    throw new CliError(`${flag}: ${issue.message}`);
  }
}

async function one(app: App, action: BulkAction, id: string, flags: FilterFlags): Promise<void> {
  if (Object.keys(filterFields(flags)).length > 0) throw new CliError(`jobs ${action}: give a job id or a filter, not both`);
  if (action === 'retry') {
    let input: unknown;
    if (flags.input !== undefined) {
      try {
        input = JSON.parse(flags.input);
      } catch {
        throw new CliError('--input: not valid JSON');
      }
    }
    const handle = await app.retry(id, input === undefined ? {} : { input });
    print(flags.json ? JSON.stringify({ job_id: handle.id, retry_of: id }) : `${handle.id} (retry of ${id})`);
  } else if (action === 'cancel') {
    const outcome = await app.cancel(id);
    print(flags.json ? JSON.stringify({ job_id: id, status: outcome }) : `${id}: ${outcome}`);
  } else {
    await app.deleteJob(id);
    print(flags.json ? JSON.stringify({ job_id: id, deleted: true }) : `${id}: deleted`);
  }
}

async function byFilter(app: App, action: BulkAction, flags: FilterFlags): Promise<void> {
  if (flags.input !== undefined) throw new CliError('--input applies to one job (give its id), not to a filter');
  const filter = parseFilter(filterFields(flags));
  if (Object.keys(filter).length === 0)
    throw new CliError(
      `jobs ${action}: give a job id or at least one filter (--status, --task, --queue, --tenant, --key-id, --id-prefix, --created-after/--created-before, --finished-after/--finished-before, --error, --where)`,
    );
  // The CLI runs with the store's own rights (like `celerity keys`): every tenant.
  const actor = { keyId: null, keyName: 'cli', scope: ALL_TENANTS, taskPatterns: null };
  const count = await app.countBulk(actor, filter);
  if (flags.dryRun || count === 0) {
    print(flags.json ? JSON.stringify({ count }) : `${count} job${count === 1 ? '' : 's'} match`);
    return;
  }
  if (!flags.yes) {
    if (!process.stdin.isTTY) throw new CliError(`${count} jobs match; add --yes to ${action} them`);
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    const answer = await rl.question(`${action} ${count} job${count === 1 ? '' : 's'}? [y/N] `);
    rl.close();
    if (!/^y(es)?$/i.test(answer.trim())) throw new CliError('nothing done', 1);
  }
  const controller = new AbortController();
  const stop = () => {
    const reason = new Error('stopped from the CLI');
    reason.name = 'JobCancelled';
    controller.abort(reason);
  };
  process.once('SIGINT', stop);
  let last = 0;
  const op = await runBulkHere(app, actor, action, filter, newJobId(), {
    signal: controller.signal,
    progress: async (p) => {
      if (!flags.json && Date.now() - last > 1_000) {
        last = Date.now();
        say(`${action}: ${String(p.done)} done, ${String(p.failed)} failed of ${String(p.matched)}`);
      }
    },
  });
  process.off('SIGINT', stop);
  if (flags.json) print(JSON.stringify({ operation_id: op.id, status: op.status, matched: op.matched, done: op.done, failed: op.failed, errors: op.errors }));
  else {
    print(`${op.id}: ${op.status}, ${op.done} done, ${op.failed} failed of ${op.matched}`);
    for (const e of op.errors) print(`  ${e.job_id}: ${e.code}: ${e.message}`);
  }
  if (op.status !== 'completed') process.exitCode = 1;
}
