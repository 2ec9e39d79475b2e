/**
 * Child processes of the benchmark: Celerity workers and API servers (the
 * real CLI), raw BullMQ workers and autocannon. Each is killed when its scope
 * closes, and every one still alive is SIGKILLed when the benchmark exits,
 * however it exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { summariseLogs } from './logs.ts';
import type { Scope } from './scope.ts';
import type { ScenarioContext } from './types.ts';

export const ROOT = join(import.meta.dirname, '..', '..');

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** `BENCH_PROF=<dir>`: children write V8 CPU profiles there (open them in Chrome DevTools). */
function profileArgs(): string[] {
  const dir = process.env.BENCH_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class Proc {
  readonly child: ChildProcess;
  readonly name: string;
  readonly exited: Promise<Exit>;
  /** When it was spawned (performance.now()): about when its V8 isolate's clock began. */
  readonly spawnedAt = performance.now();
  running = true;
  private out = '';
  private stdoutText = '';

  constructor(scope: Scope, name: string, command: string, args: string[], opts: { env: NodeJS.ProcessEnv; ipc?: boolean }) {
    this.name = name;
    this.child = spawn(command, args, {
      cwd: ROOT,
      env: opts.env,
      stdio: opts.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    });
    live.add(this.child);
    const keep = (chunk: Buffer) => {
      this.out += chunk.toString();
      if (this.out.length > 256 * 1024) this.out = this.out.slice(-128 * 1024);
      if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${chunk.toString()}`);
    };
    this.child.stdout!.on('data', (chunk: Buffer) => {
      if (this.stdoutText.length < 4 * 1024 * 1024) this.stdoutText += chunk.toString();
    });
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.running = false;
        live.delete(this.child);
        resolve({ code, signal });
      });
      this.child.once('error', (err) => {
        this.out += `\nspawn error: ${err.message}`;
        this.running = false;
        live.delete(this.child);
        resolve({ code: null, signal: null });
      });
    });
    scope.defer(`stop ${name}`, () => this.stop());
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** What it printed on stdout (its first 4 MB). */
  get stdout(): string {
    return this.stdoutText;
  }

  /** Everything it printed (the last 128 KB at least). */
  get output(): string {
    return this.out;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Fails with the process's output if it has exited. */
  assertRunning(): void {
    if (!this.running) throw new Error(`${this.name} exited early; output:\n${this.out.slice(-4000)}`);
  }

  /** Next IPC message satisfying `pred`. */
  message<T>(pred: (msg: any) => boolean, timeoutMs = 30_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no expected message after ${timeoutMs} ms; output:\n${this.out.slice(-4000)}`));
      }, timeoutMs);
      const onMessage = (msg: unknown) => {
        if (pred(msg)) {
          done();
          resolve(msg as T);
        }
      };
      const onExit = () => {
        done();
        reject(new Error(`${this.name} exited; output:\n${this.out.slice(-4000)}`));
      };
      const done = () => {
        clearTimeout(timer);
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
      };
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
    });
  }

  send(msg: object): void {
    if (this.child.connected) this.child.send(msg);
  }

  /** Resolves with everything it printed on stdout once it exits 0; rejects otherwise. */
  async result(timeoutMs: number): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      this.exited,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${this.name} still running after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]).finally(() => clearTimeout(timer));
    if (exit.code !== 0) throw new Error(`${this.name} exited ${exit.code ?? exit.signal}; output:\n${this.out.slice(-4000)}`);
    return this.stdoutText;
  }
}

/**
 * A process whose warnings (pino lines of level warn and above, or any
 * non-JSON output) become notes of the scenario once it has stopped.
 */
function watched(ctx: ScenarioContext, scope: Scope, name: string, args: string[], opts: { env: NodeJS.ProcessEnv; ipc?: boolean; nodeArgs?: string[] | undefined }): Proc {
  let proc: Proc | undefined;
  // Registered first, so it runs after the process's own stop step.
  scope.defer(`collect ${name} warnings`, () => {
    if (proc) for (const note of summariseLogs(name, proc.output)) ctx.note(note);
  });
  proc = new Proc(scope, name, process.execPath, [...profileArgs(), ...(opts.nodeArgs ?? []), ...args], opts);
  return proc;
}

/** `node packages/celerity/bin/celerity.js <command> --app <app>` (default bench/apps/noop-app.ts) with `env`. */
export function celerity(
  ctx: ScenarioContext,
  scope: Scope,
  name: string,
  command: 'worker' | 'serve' | 'recorder',
  env: NodeJS.ProcessEnv,
  app = 'bench/apps/noop-app.ts',
  nodeArgs?: string[],
): Proc {
  return watched(ctx, scope, name, ['packages/celerity/bin/celerity.js', command, '--app', app], { env, nodeArgs });
}

/** A raw BullMQ worker process (bench/workers/raw-worker.ts). */
export function rawWorker(ctx: ScenarioContext, scope: Scope, name: string, env: NodeJS.ProcessEnv, nodeArgs?: string[]): Proc {
  return watched(ctx, scope, name, ['--conditions=celerity-source', '--import', 'tsx', 'bench/workers/raw-worker.ts'], { env, ipc: true, nodeArgs });
}

/** A raw Fastify + BullMQ API process (bench/workers/raw-api.ts). */
export function rawApi(ctx: ScenarioContext, scope: Scope, name: string, env: NodeJS.ProcessEnv): Proc {
  return watched(ctx, scope, name, ['--conditions=celerity-source', '--import', 'tsx', 'bench/workers/raw-api.ts'], { env, ipc: true });
}

export { freePort } from '../../packages/celerity/src/cli/dev-redis.ts';
