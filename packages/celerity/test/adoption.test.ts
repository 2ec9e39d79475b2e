/**
 * Celerity as a new user gets it: the core packed with `npm pack`, installed
 * from the tarball into a project outside the repository, and that project's
 * own apps (one TypeScript, one plain JavaScript) run with its
 * `node_modules/.bin/celerity` as separate worker and API processes on
 * PostgreSQL and Redis. Nothing here imports the repository's sources into
 * the apps: what is missing from the tarball, or works only inside the
 * monorepo, fails here.
 *
 * Redis and PostgreSQL are required (TEST_REDIS_URL, TEST_DATABASE_URL):
 * when they do not answer, the test fails saying so rather than skipping.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, sep } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { freePort } from '../src/cli/dev-redis.ts';
import { cleanup, deleteRedisKeys, dropSchema, onCleanup, randomToken, TEST_DATABASE_URL, TEST_REDIS_URL } from './helpers.ts';
import { Proc, ROOT } from './process-helpers.ts';
import { execForm, last, readDockerfile, workdir } from './adoption/dockerfile.ts';
import { cleanEnv, CORE_DIR, createProject, mustRun, packCore, requireServices, runCommand, until } from './adoption/harness.ts';

/** Packages of the demo app (examples/documents) that must not reach a user of the core. */
const DEMO_ONLY = ['pdfjs-dist', '@anthropic-ai/sdk', 'csv-parse'];
const VERSION = (JSON.parse(readFileSync(join(CORE_DIR, 'package.json'), 'utf8')) as { version: string }).version;

let root: string;
let project: string;
let bin: string;

beforeAll(async () => {
  await requireServices(TEST_REDIS_URL, TEST_DATABASE_URL);
  // Outside the repository: no node_modules of the monorepo above the
  // project can supply a package the tarball forgot to depend on.
  root = mkdtempSync(join(tmpdir(), 'celerity-adoption-'));
  onCleanup(() => rmSync(root, { recursive: true, force: true }));
  project = join(root, 'project');
  const tarball = await packCore(join(root, 'pack'));
  await createProject(project, tarball);
  bin = join(project, 'node_modules/.bin/celerity');
}, 360_000);

// Processes first (their cleanups were registered last), then schemas, keys, the temp dir.
afterAll(cleanup, 60_000);

// Concurrent: type-checking (CPU) overlaps the two apps' runs (mostly waiting on their processes).
describe.concurrent('celerity installed from its tarball into a new project', () => {
  it('prints the package version, from its bin and from the entrypoint of the user-app Dockerfile', async ({ expect }) => {
    const { stdout } = await mustRun(bin, ['--version'], { cwd: project, env: cleanEnv(), timeoutMs: 30_000 });
    expect(stdout.trim()).toBe(VERSION);
    // docs/examples/Dockerfile.user-app copies a project like this one to its WORKDIR: its ENTRYPOINT must run in a real install.
    const docker = readDockerfile(join(ROOT, 'docs/examples/Dockerfile.user-app'));
    const [node, script] = execForm(last(docker.final, 'ENTRYPOINT'));
    expect(node).toBe('node');
    const inProject = join(project, posix.relative(workdir(docker.final), script!));
    const viaEntrypoint = await mustRun(process.execPath, [inProject, '--version'], { cwd: project, env: cleanEnv(), timeoutMs: 30_000 });
    expect(viaEntrypoint.stdout.trim()).toBe(VERSION);
  }, 60_000);

  it("installs none of the demo app's dependencies, and one zod shared with the app", async ({ expect }) => {
    const ls = await runCommand('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: project, env: cleanEnv(), timeoutMs: 60_000 });
    expect(ls.code, `npm ls failed:\n${ls.stderr}`).toBe(0);
    const names = ls.stdout
      .split('\n')
      .filter((line) => line.includes(`node_modules${sep}`))
      .map((line) =>
        line
          .slice(line.lastIndexOf(`node_modules${sep}`) + 'node_modules/'.length)
          .split(sep)
          .join('/'),
      );
    expect(names).toContain('celerity');
    for (const name of DEMO_ONLY) expect(names, `${name} installed`).not.toContain(name);
    // devDependencies of the project are left out, as asked.
    expect(names).not.toContain('typescript');
    // The user's zod is the core's: defineTask's types then accept the user's schemas.
    expect(names.filter((n) => n === 'zod')).toHaveLength(1);
  }, 60_000);

  it('type-checks the TypeScript app and every shipped declaration (strict, NodeNext, skipLibCheck off)', async ({ expect }) => {
    const tsc = await runCommand(join(project, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.json'], { cwd: project, env: cleanEnv(), timeoutMs: 150_000 });
    expect(tsc.code, `tsc:\n${tsc.stdout}${tsc.stderr}`).toBe(0);
  }, 150_000);

  it.for([
    { lang: 'TypeScript', app: 'ts/app.ts', producer: ['node_modules/.bin/tsx', 'ts/produce.ts'] },
    { lang: 'JavaScript', app: 'js/app.js', producer: [process.execPath, 'js/produce.js'] },
  ])(
    'runs the $lang app: worker and API processes, jobs by HTTP and by the typed client, a never-yielding thread stopped at its hard limit',
    { timeout: 180_000 },
    async ({ app, producer }, { expect }) => {
      const token = randomToken();
      const schema = `adopt_${token}`;
      const prefix = `adopt-${token}`;
      onCleanup(async () => {
        await Promise.allSettled([dropSchema(schema, TEST_DATABASE_URL), deleteRedisKeys(prefix, TEST_REDIS_URL)]);
      });
      const port = await freePort();
      const env = cleanEnv({
        REDIS_URL: TEST_REDIS_URL,
        DATABASE_URL: TEST_DATABASE_URL,
        CELERITY_DB_SCHEMA: schema,
        CELERITY_PREFIX: prefix,
        // One job at a time: the job after the spinning one runs only if its slot was freed.
        CELERITY_CONCURRENCY: '1',
        LOG_LEVEL: 'warn',
      });
      // Closed by default: the newcomer makes a key first, as the README says.
      // Without a tenant, it sees the jobs without one, such as the producer script's below.
      const created = await mustRun(bin, ['keys', 'create', '--name', 'adopt', '--scopes', 'jobs:submit,jobs:read'], { cwd: project, env, timeoutMs: 60_000 });
      const key = created.stdout.trim();
      expect(key).toMatch(/^cel_/);
      const auth = { authorization: `Bearer ${key}` };
      const worker = new Proc(`worker ${app}`, bin, ['worker', '--app', app], { cwd: project, env });
      const api = new Proc(`serve ${app}`, bin, ['serve', '--app', app, '--port', String(port), '--host', '127.0.0.1'], { cwd: project, env });
      const base = `http://127.0.0.1:${port}`;
      const outputs = () => [worker, api].map((p) => `[${p.name}${p.running ? '' : ' exited'}]\n${p.output.slice(-3000)}`).join('\n');
      const dead = () => ([worker, api].some((p) => !p.running) ? `a process exited:\n${outputs()}` : undefined);

      await until(async () => ((await fetch(`${base}/readyz`)).ok ? true : undefined), { timeoutMs: 60_000, describe: () => `${base}/readyz\n${outputs()}`, problem: dead });

      const submit = async (task: string, input: unknown): Promise<string> => {
        const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ task, input }) });
        const body = (await res.json()) as { job_id: string };
        expect(res.status, JSON.stringify(body)).toBe(202);
        return body.job_id;
      };
      const read = async (id: string): Promise<any> => (await fetch(`${base}/v1/jobs/${id}`, { headers: auth })).json();
      const finished = (id: string): Promise<any> =>
        until(
          async () => {
            const job = await read(id);
            return ['completed', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
          },
          { timeoutMs: 60_000, describe: () => `job ${id} to finish\n${outputs()}`, problem: dead },
        );

      // A job submitted over HTTP.
      const added = await finished(await submit('adopt.add', { a: 2, b: 3 }));
      expect(added).toMatchObject({ task: 'adopt.add', status: 'completed', result: { sum: 5 }, error: null, tenant: null, key_id: key.slice(4, 20) });

      // An isolated task runs in a thread of the worker, which imports the app module.
      const where = await finished(await submit('adopt.where', {}));
      expect(where, JSON.stringify(where)).toMatchObject({ status: 'completed', result: { isMainThread: false } });

      // The isolated task never yields: its thread (the one above, reused) is terminated at the hard limit.
      const spun = await finished(await submit('adopt.spin', {}));
      expect(spun, JSON.stringify(spun)).toMatchObject({ task: 'adopt.spin', status: 'failed', attempts: 1, error: { type: 'TimeLimitExceeded' } });
      // Posted by the handler inside the thread before it spins: the thread found the app module.
      expect(spun.progress).toEqual({ stage: 'spinning' });
      // Ended by the 1.5 s limit (a little slack: the times are taken around its timer, not by it), not by anything sooner.
      expect(Date.parse(spun.finished_at) - Date.parse(spun.started_at)).toBeGreaterThanOrEqual(1_400);

      // The app as a producer, from a script of its own, after the termination: the worker goes on.
      const [command, ...args] = producer;
      const produced = await mustRun(command!.startsWith('node_modules') ? join(project, command!) : command!, args, { cwd: project, env, timeoutMs: 90_000 });
      const line = produced.stdout.trim().split('\n').at(-1)!;
      const out = JSON.parse(line) as { id: string; status: string; sum: number };
      expect(out).toMatchObject({ status: 'completed', sum: 42 });
      expect(await read(out.id)).toMatchObject({ task: 'adopt.add', status: 'completed', result: { sum: 42 } });

      expect(worker.running, outputs()).toBe(true);
      expect(api.running, outputs()).toBe(true);
    },
  );
});
