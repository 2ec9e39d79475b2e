import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OPTIONS } from '../src/config.ts';
import { loadApp } from '../src/cli/load-app.ts';

/**
 * There is no Docker engine where the tests run: the compose file and the
 * Dockerfile are checked as documents, against the CLI they drive.
 */

const ROOT = join(import.meta.dirname, '..', '..', '..');
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
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

/** The last `INSTRUCTION [json array]` of the Dockerfile's final stage. */
function execForm(instruction: string): string[] {
  const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const lines = finalStage.split('\n').filter((l) => l.startsWith(`${instruction} `));
  const last = lines.at(-1);
  expect(last, `${instruction} in the Dockerfile's final stage`).toBeDefined();
  return JSON.parse(last!.slice(instruction.length + 1)) as string[];
}

const ENTRYPOINT = execForm('ENTRYPOINT');
/** Services running the Celerity image. */
const celerityServices = Object.entries(compose.services).filter(([, s]) => s.build !== undefined || s.image?.startsWith('celerity'));

function argv(service: Service): string[] {
  expect(Array.isArray(service.command), 'commands in exec form (a list)').toBe(true);
  const entrypoint = service.entrypoint === undefined ? ENTRYPOINT : (service.entrypoint as string[]);
  return [...entrypoint, ...(service.command as string[])];
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
/** The flags a subcommand accepts, as its --help prints them. */
function flagsOf(subcommand: string): Promise<Set<string>> {
  let flags = helpCache.get(subcommand);
  if (!flags) {
    flags = run(process.execPath, [join(ROOT, 'packages/celerity/bin/celerity.js'), subcommand, '--help'], { cwd: ROOT }).then(({ stdout }) => {
      expect(stdout).toContain(`Usage: celerity ${subcommand}`);
      return new Set([...stdout.matchAll(/^\s+(?:-\w, )?(--[a-z][a-z-]*)/gm)].map((m) => m[1]!));
    });
    helpCache.set(subcommand, flags);
  }
  return flags;
}

describe('Dockerfile', () => {
  it('runs the CLI as a non-root user, with the runtime dependencies only and the sources it loads', () => {
    expect(ENTRYPOINT).toEqual(['node', 'packages/celerity/bin/celerity.js']);
    expect(execForm('CMD')[0]).toBe('serve');
    expect(dockerfile).toMatch(/^FROM node:\d+/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    // tsx runs the TypeScript CLI and apps at run time: it must be a runtime dependency.
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(pkg.dependencies.tsx).toBeDefined();
    for (const dir of ['bin', 'src', 'examples']) expect(dockerfile).toMatch(new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    const user = /^USER (\S+)$/m.exec(dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')));
    expect(user?.[1]).toBeDefined();
    expect(['root', '0']).not.toContain(user![1]);
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
      const args = argv(service);
      expect(args.slice(0, 2), name).toEqual(['node', 'packages/celerity/bin/celerity.js']);
      const [subcommand, ...rest] = args.slice(2);
      expect(['serve', 'worker', 'dev'], name).toContain(subcommand);
      const accepted = await flagsOf(subcommand!);
      for (const flag of rest.filter((a) => a.startsWith('--'))) expect(accepted.has(flag), `${name}: ${subcommand} ${flag}`).toBe(true);
      const app = flagValue(rest, '--app');
      expect(app && existsSync(join(ROOT, app)), `${name}: --app ${app}`).toBe(true);
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
        .filter((a) => a[2] === 'worker')
        .flatMap((a) => (flagValue(a, '--queues') ?? app.queueNames().join(',')).split(',')),
    );
    for (const queue of app.queueNames()) expect(consumed.has(queue), `queue ${queue}`).toBe(true);
    for (const queue of consumed) expect(app.queueNames(), `queue ${queue}`).toContain(queue);
    await app.close();
  });
});
