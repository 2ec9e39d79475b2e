import { execFile } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join, posix, relative } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OPTIONS } from '../src/config.ts';
import { loadApp } from '../src/cli/load-app.ts';
import { all, copies, execForm, last, readDockerfile, workdir, type Dockerfile } from './adoption/dockerfile.ts';

/**
 * There is no Docker engine where the tests run: the compose file and the
 * Dockerfiles are checked as documents, against the repository they copy
 * from and the CLI they drive.
 */

const ROOT = join(import.meta.dirname, '..', '..', '..');
const CORE = JSON.parse(readFileSync(join(ROOT, 'packages/celerity/package.json'), 'utf8')) as { bin: Record<string, string>; files: string[]; dependencies: Record<string, string> };
const run = promisify(execFile);

interface Service {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  entrypoint?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  volumes?: string[];
  healthcheck?: { test?: string[] | string };
  stop_grace_period?: string;
}

const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const dockerfile = readDockerfile(join(ROOT, 'Dockerfile'));
const USER_APP_DOCKERFILE = join(ROOT, 'docs/examples/Dockerfile.user-app');
const userDockerfile = readDockerfile(USER_APP_DOCKERFILE);

const ENTRYPOINT = execForm(last(dockerfile.final, 'ENTRYPOINT'));
const WORKDIR = workdir(dockerfile.final);
/** Services running the Celerity image. */
const celerityServices = Object.entries(compose.services).filter(([, s]) => s.build !== undefined || s.image?.startsWith('celerity'));
/** Where npm puts the core's bin in any install: `node_modules/.bin/<name>`. */
const BIN = `node_modules/.bin/${Object.keys(CORE.bin)[0]}`;

/**
 * The repository path of a path of the image under WORKDIR: the image keeps
 * the repository's layout there (the build stage copies it, `npm ci` links
 * the workspaces the same way as in a checkout).
 */
function repoPath(imagePath: string): string {
  const rel = posix.relative(WORKDIR, posix.resolve(WORKDIR, imagePath));
  expect(rel.startsWith('..'), `${imagePath} is under ${WORKDIR}`).toBe(false);
  return join(ROOT, rel);
}

/** True if a COPY of the final stage puts `imagePath` (absolute, or relative to WORKDIR) into the image. */
function copiedToRuntime(file: Dockerfile, imagePath: string): boolean {
  const abs = posix.resolve(workdir(file.final), imagePath);
  return copies(file.final).some((c) => abs === c.dest || abs.startsWith(`${c.dest}/`));
}

/** The repository-relative real path of a repository path (workspace links followed). */
function realRel(path: string): string {
  return relative(ROOT, realpathSync(path)).split('\\').join('/');
}

/** The user of the final stage, which must not be root. */
function finalUser(file: Dockerfile): string | undefined {
  return last(file.final, 'USER')?.args;
}

/** A `.dockerignore` pattern as a regular expression over context paths: `**` any folders, `*` within one name. */
function ignorePattern(pattern: string): RegExp {
  const body = pattern
    .replace(/^\/+|\/+$/g, '')
    .split(/(\*\*\/|\*\*|\*)/)
    .map((part) => (part === '**/' ? '(?:.*/)?' : part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`);
}

/** `.dockerignore` (enough of its syntax for this repository's file: no `!` exceptions). */
const ignored: RegExp[] = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'))
  .map((l) => {
    if (l.startsWith('!')) throw new Error(`.dockerignore exception ${l}: isIgnored does not handle them yet`);
    return ignorePattern(l);
  });

/** True if `.dockerignore` keeps `path` (or a folder above it) out of the build context. */
function isIgnored(path: string): boolean {
  const parts = path.split('/');
  return parts.some((_, i) => ignored.some((re) => re.test(parts.slice(0, i + 1).join('/'))));
}

/** The command a service runs: the image's ENTRYPOINT, then its command. */
function argv(service: Service): string[] {
  expect(Array.isArray(service.command), 'commands in exec form (a list)').toBe(true);
  // The services run the image's entrypoint: the checks below are made against it.
  expect(service.entrypoint, "no service replaces the image's entrypoint").toBeUndefined();
  return [...ENTRYPOINT, ...(service.command as string[])];
}

/** The arguments after the entrypoint: the subcommand and its flags. */
function cliArgs(args: string[]): string[] {
  return args.slice(ENTRYPOINT.length);
}

function envOf(service: Service): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) return Object.fromEntries(env.map((e) => [e.split('=')[0]!, e.split('=').slice(1).join('=')]));
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

function flagValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

const helpCache = new Map<string, Promise<Set<string>>>();
/**
 * The flags a subcommand accepts, as its --help prints them, asked of the
 * entrypoint's script itself (its copy in the repository: the installed bin).
 */
function flagsOf(subcommand: string): Promise<Set<string>> {
  let flags = helpCache.get(subcommand);
  if (!flags) {
    flags = run(process.execPath, [repoPath(ENTRYPOINT[1]!), subcommand, '--help'], { cwd: ROOT }).then(({ stdout }) => {
      expect(stdout).toContain(`Usage: celerity ${subcommand}`);
      return new Set([...stdout.matchAll(/^\s+(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]!));
    });
    helpCache.set(subcommand, flags);
  }
  return flags;
}

/** Checks a command line's subcommand and flags against the CLI. */
async function expectKnownCommand(args: string[], where: string): Promise<void> {
  const [subcommand, ...rest] = args;
  expect(['serve', 'worker', 'dev'], where).toContain(subcommand);
  const accepted = await flagsOf(subcommand!);
  for (const flag of rest.filter((a) => a.startsWith('--'))) expect(accepted.has(flag), `${where}: ${subcommand} ${flag}`).toBe(true);
}

describe('Dockerfile (the demo)', () => {
  it('runs the installed celerity bin with node as PID 1, as a non-root user', () => {
    // Exec form with node first: no shell or wrapper between Docker and Node, which gets SIGTERM itself.
    expect(ENTRYPOINT).toEqual(['node', posix.join(WORKDIR, BIN)]);
    // In a checkout, as in the image, that bin is the core's, through the workspace link.
    expect(realRel(repoPath(ENTRYPOINT[1]!))).toBe(posix.join('packages/celerity', CORE.bin.celerity!));
    expect(CORE.files).toContain('bin');
    const user = finalUser(dockerfile);
    expect(user, 'USER in the final stage').toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(dockerfile.final.from).toMatch(/^node:\d+/);
  });

  it('copies into the runtime stage what the entrypoint and the default command load', () => {
    const cmd = execForm(last(dockerfile.final, 'CMD'));
    expect(cmd[0]).toBe('serve');
    const app = flagValue(cmd, '--app');
    expect(app, 'CMD --app').toBeDefined();
    const needed = [
      ENTRYPOINT[1]!,
      // What the bin's symlinks lead to, and what the bin loads: the built CLI and the package.json it reads its version from.
      realRel(repoPath(ENTRYPOINT[1]!)),
      'packages/celerity/dist/cli/main.js',
      'packages/celerity/package.json',
      app!,
      // The demo imports the quickstart tasks by package name, through its workspace link.
      realRel(join(ROOT, 'node_modules/celerity-example-quickstart')),
    ];
    for (const path of needed) {
      expect(existsSync(repoPath(path)), `${path} exists`).toBe(true);
      expect(copiedToRuntime(dockerfile, path), `${path} copied into the runtime stage`).toBe(true);
    }
  });

  it('builds the core with every dependency, and ships production dependencies only', () => {
    const build = dockerfile.stages.find((s) => s !== dockerfile.final && copies(dockerfile.final).some((c) => c.from === s.name));
    expect(build, 'a build stage the runtime stage copies from').toBeDefined();
    const runs = all(build!, 'RUN')
      .map((r) => r.args)
      .join('\n');
    expect(runs).toMatch(/\bnpm ci\b(?! --omit)/);
    expect(runs).toMatch(/npm run build -w celerity/);
    // After the build: devDependencies pruned from the node_modules the runtime stage copies.
    expect(runs.indexOf('--omit=dev')).toBeGreaterThan(runs.indexOf('npm run build'));
    expect(copies(dockerfile.final).some((c) => c.from === build!.name && c.dest === posix.join(WORKDIR, 'node_modules'))).toBe(true);
    // No sources of the core in the runtime stage: it runs dist/.
    expect(copiedToRuntime(dockerfile, 'packages/celerity/src/index.ts')).toBe(false);
    // tsx loads the TypeScript app at run time: it must survive the prune, as a dependency of the core.
    expect(CORE.dependencies.tsx).toBeDefined();
  });

  it('copies from the build context only what exists and .dockerignore lets through, and all the build needs', () => {
    for (const stage of dockerfile.stages) {
      for (const copy of copies(stage).filter((c) => c.from === undefined)) {
        for (const source of copy.sources) {
          expect(existsSync(join(ROOT, source)), `COPY ${source}: exists`).toBe(true);
          expect(isIgnored(source), `COPY ${source}: not in .dockerignore`).toBe(false);
        }
      }
    }
    const context = copies(dockerfile.stages[0]!)
      .filter((c) => c.from === undefined)
      .flatMap((c) => c.sources);
    // What `npm ci` (the core's prepare) and the build read, and what the runtime stage takes from there.
    for (const path of [
      'package-lock.json',
      'packages/celerity/package.json',
      'packages/celerity/tsconfig.build.json',
      'packages/celerity/src/index.ts',
      'packages/celerity/scripts/copy-assets.mjs',
      'packages/celerity/bin/celerity.js',
      'examples/documents/app.ts',
      'examples/quickstart/package.json',
    ]) {
      expect(
        context.some((s) => path === s || path.startsWith(`${s}/`)),
        `${path} copied into the build stage`,
      ).toBe(true);
      expect(isIgnored(path), `${path} not in .dockerignore`).toBe(false);
    }
    // The host's own builds and installs stay out.
    for (const path of ['node_modules', 'packages/celerity/dist', 'packages/celerity/test']) expect(isIgnored(path), `${path} in .dockerignore`).toBe(true);
  });
});

describe("docs/examples/Dockerfile.user-app (a user's own app)", () => {
  it('runs the installed celerity bin with node as PID 1, as a non-root user, with production dependencies only', () => {
    const entrypoint = execForm(last(userDockerfile.final, 'ENTRYPOINT'));
    expect(entrypoint).toEqual(['node', posix.join(workdir(userDockerfile.final), BIN)]);
    expect(copiedToRuntime(userDockerfile, entrypoint[1]!)).toBe(true);
    const user = finalUser(userDockerfile);
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    const source = copies(userDockerfile.final).find((c) => c.dest === workdir(userDockerfile.final))?.from;
    const build = userDockerfile.stages.find((s) => s.name !== undefined && s.name === source);
    expect(build, 'the runtime stage copies the app from a build stage').toBeDefined();
    const runs = all(build!, 'RUN')
      .map((r) => r.args)
      .join('\n');
    expect(runs).toMatch(/\bnpm ci\b/);
    expect(runs).toMatch(/npm prune --omit=dev|npm ci --omit=dev/);
  });

  it('has a default command the CLI accepts', async () => {
    const cmd = execForm(last(userDockerfile.final, 'CMD'));
    await expectKnownCommand(cmd, 'Dockerfile.user-app CMD');
    expect(flagValue(cmd, '--app')).toMatch(/\.(ts|js|mjs)$/);
  }, 30_000);

  it('is the Dockerfile docs/deploy.md shows', () => {
    const doc = readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8');
    const section = doc.slice(doc.indexOf('\n## Your own app in a container'));
    expect(section.length, 'the section').toBeLessThan(doc.length);
    const block = /```dockerfile\n([\s\S]*?)```/.exec(section);
    expect(block, 'a dockerfile block in the section').not.toBeNull();
    expect(block![1]!.trim()).toBe(readFileSync(USER_APP_DOCKERFILE, 'utf8').trim());
  });
});

describe('docker-compose.yml', () => {
  it('has Redis with AOF on and noeviction, and PostgreSQL with a volume and a health check', () => {
    const redis = compose.services.redis!;
    const cmd = Array.isArray(redis.command) ? redis.command : String(redis.command).split(/\s+/);
    expect(flagValue(cmd, '--appendonly')).toBe('yes');
    expect(flagValue(cmd, '--maxmemory-policy')).toBe('noeviction');
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    const postgres = compose.services.postgres!;
    expect(postgres.image).toMatch(/^postgres:/);
    expect(postgres.volumes?.some((v) => v.endsWith(':/var/lib/postgresql/data'))).toBe(true);
    expect(postgres.healthcheck?.test).toBeDefined();
  });

  it('runs an API and workers per queue group whose commands and flags exist in the CLI', async () => {
    const names = celerityServices.map(([name]) => name);
    expect(names).toContain('api');
    expect(names.filter((n) => n.startsWith('worker-')).length).toBeGreaterThanOrEqual(2);
    for (const [name, service] of celerityServices) {
      const args = cliArgs(argv(service));
      await expectKnownCommand(args, name);
      const app = flagValue(args, '--app');
      expect(app, `${name}: --app`).toBeDefined();
      // The app module exists, and is in the image.
      expect(existsSync(repoPath(app!)), `${name}: --app ${app}`).toBe(true);
      expect(copiedToRuntime(dockerfile, app!), `${name}: --app ${app} copied into the image`).toBe(true);
    }
  }, 30_000);

  it('sets only environment variables Celerity knows', () => {
    const known = new Set<string>(Object.values(OPTIONS).map((o) => o.env));
    for (const [name, service] of celerityServices) {
      const env = envOf(service);
      expect(Object.keys(env).length, name).toBeGreaterThan(0);
      for (const key of Object.keys(env)) expect(known.has(key), `${name}: ${key}`).toBe(true);
      expect(env.REDIS_URL, name).toMatch(/^redis:\/\/redis:/);
      expect(env.DATABASE_URL, name).toMatch(/^postgres:\/\/.*@postgres:/);
    }
  });

  it('shares the upload directory between the API and the workers', () => {
    for (const [name, service] of celerityServices) {
      const dir = envOf(service).CELERITY_UPLOAD_DIR;
      expect(dir, name).toBeDefined();
      expect(
        service.volumes?.some((v) => v.endsWith(`:${dir}`)),
        `${name} mounts ${dir}`,
      ).toBe(true);
    }
  });

  it('checks readiness on /readyz: the API on its port, workers on --health-port', () => {
    for (const [name, service] of celerityServices) {
      const test = JSON.stringify(service.healthcheck?.test ?? '');
      const args = argv(service);
      const port = args.includes('worker') ? flagValue(args, '--health-port') : (flagValue(args, '--port') ?? '8080');
      expect(port, `${name} port`).toBeDefined();
      expect(test, name).toContain(`127.0.0.1:${port}/readyz`);
    }
  });

  it('gives stopping workers longer than their shutdown grace, so that they drain before being killed', () => {
    for (const [name, service] of celerityServices.filter(([n]) => n.startsWith('worker-'))) {
      const grace = Number(envOf(service).CELERITY_SHUTDOWN_GRACE ?? OPTIONS.shutdownGrace.default);
      const stop = /^(\d+)s$/.exec(service.stop_grace_period ?? '10s');
      expect(stop, name).not.toBeNull();
      expect(Number(stop![1]) * 1000, name).toBeGreaterThan(grace);
    }
  });

  it('consumes every queue of the app, maintenance included, in some worker group', async () => {
    const app = await loadApp(join(ROOT, 'examples/documents/app.ts'));
    const consumed = new Set(
      celerityServices
        .map(([, s]) => argv(s))
        .map(cliArgs)
        .filter((a) => a[0] === 'worker')
        .flatMap((a) => (flagValue(a, '--queues') ?? app.queueNames().join(',')).split(',')),
    );
    for (const queue of app.queueNames()) expect(consumed.has(queue), `queue ${queue}`).toBe(true);
    for (const queue of consumed) expect(app.queueNames(), `queue ${queue}`).toContain(queue);
    await app.close();
  });
});
