import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Redis } from 'ioredis';
import { freePort } from './process-helpers.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * End to end, as a user runs it: `celerity serve` and `celerity worker` as
 * separate processes on the quickstart app, jobs posted over HTTP and polled
 * to their final state.
 */
const ROOT = join(import.meta.dirname, '..', '..', '..');
const DATABASE_URL = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
const id = Math.random().toString(36).slice(2, 8);
const prefix = `e2e${id}`;
const schema = `e2e_${id}`;
const dir = mkdtempSync(join(tmpdir(), 'celerity-e2e-'));
const procs: ChildProcess[] = [];
let port = 0;
let base = '';

function env(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    CELERITY_PREFIX: prefix,
    LOG_LEVEL: 'warn',
    CELERITY_SQLITE_PATH: join(dir, 'celerity.db'),
    // Keys are test/api-keys.test.ts' and the adoption test's concern.
    CELERITY_AUTH: 'off',
    ...(DATABASE_URL ? { DATABASE_URL, CELERITY_DB_SCHEMA: schema } : {}),
  };
}

function start(command: 'serve' | 'worker'): ChildProcess {
  const child = spawn(process.execPath, ['packages/celerity/bin/celerity.js', command, '--app', 'examples/quickstart/app.ts'], {
    cwd: ROOT,
    env: env(),
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  procs.push(child);
  return child;
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

async function until<T>(fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function post(task: string, input: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ task, input }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function finalState(statusUrl: string): Promise<any> {
  return until(async () => {
    const job = (await (await fetch(base + statusUrl)).json()) as any;
    return ['completed', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
  });
}

let server: ChildProcess;

beforeAll(async () => {
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = start('serve');
  start('worker');
  await until(async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), 30_000);
}, 40_000);

afterAll(async () => {
  await Promise.all(procs.map(stop));
  const redis = new Redis('redis://127.0.0.1:6379');
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  if (DATABASE_URL) {
    const client = new pg.Client(DATABASE_URL);
    await client.connect();
    await client.query(`drop schema if exists ${schema} cascade`);
    await client.end();
  }
  rmSync(dir, { recursive: true, force: true });
});

describe(`celerity serve + worker as processes (${DATABASE_URL ? 'PostgreSQL' : 'SQLite'} store)`, () => {
  const submitted: Record<string, string> = {};

  it('runs math.add to completion with its result', async () => {
    const { status, body } = await post('math.add', { a: 2, b: 3 });
    expect(status).toBe(202);
    expect(body).toEqual({ job_id: expect.any(String), status: 'queued', status_url: `/v1/jobs/${body.job_id}` });
    const job = await finalState(body.status_url);
    expect(job).toMatchObject({ job_id: body.job_id, task: 'math.add', queue: 'default', status: 'completed', result: { sum: 5 }, attempts: 1, error: null });
    expect(Date.parse(job.finished_at)).toBeGreaterThanOrEqual(Date.parse(job.started_at));
    submitted.add = body.job_id;
  });

  it('retries demo.flaky and completes it on the third attempt', async () => {
    const { status, body } = await post('demo.flaky', { fail_times: 2 });
    expect(status).toBe(202);
    const job = await finalState(body.status_url);
    expect(job).toMatchObject({ status: 'completed', attempts: 3, result: { attempts: 3 } });
    submitted.flaky = body.job_id;
  });

  it('fails demo.fail and stores its error', async () => {
    const { body } = await post('demo.fail', {});
    const job = await finalState(body.status_url);
    expect(job.status).toBe('failed');
    expect(job.error).toMatchObject({ type: 'Error', message: 'this task always fails' });
    expect(job.error.stack).toContain('this task always fails');
    submitted.fail = body.job_id;
  });

  it('answers bad requests with a 4xx naming the problem, and enqueues nothing', async () => {
    const bad = await post('math.add', { a: 'two', b: 3 });
    expect(bad.status).toBe(422);
    expect(bad.body.error.code).toBe('invalid_input');
    expect(bad.body.error.details.issues[0].path).toBe('input.a');
    const unknown = await post('no.such.task', {});
    expect(unknown.status).toBe(422);
    expect(unknown.body.error).toMatchObject({ code: 'unknown_task', details: { field: 'task' } });
    const malformed = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"task":' });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as any).error.code).toBe('invalid_json');
    const missing = await fetch(`${base}/v1/jobs/does-not-exist`);
    expect(missing.status).toBe(404);
    const list = (await (await fetch(`${base}/v1/jobs?limit=100`)).json()) as any;
    // The worker's maintenance schedules (queue `celerity`) are in the history too.
    const ours = list.jobs.map((j: { task: string }) => j.task).filter((t: string) => !t.startsWith('celerity.'));
    expect(ours.sort()).toEqual(['demo.fail', 'demo.flaky', 'math.add']);
  });

  it('ends demo.spin (never yields) at its 2 s hard limit with TimeLimitExceeded, and the worker goes on', async () => {
    const started = Date.now();
    const { body } = await post('demo.spin', { ms: 60_000 });
    const job = await finalState(body.status_url);
    expect(job).toMatchObject({ status: 'failed', error: { type: 'TimeLimitExceeded' } });
    expect(Date.now() - started).toBeLessThan(4_000);
    const next = await post('math.add', { a: 1, b: 1 });
    expect((await finalState(next.body.status_url)).result).toEqual({ sum: 2 });
    submitted.spin = body.job_id;
  });

  it('cancels a running demo.sleep from the API, its worker being another process, within a second', async () => {
    const { body } = await post('demo.sleep', { ms: 60_000 });
    await until(async () => (((await (await fetch(base + body.status_url)).json()) as any).status === 'started' ? true : undefined));
    const asked = Date.now();
    const res = await fetch(`${base}${body.status_url}/cancel`, { method: 'POST' });
    expect(res.status).toBe(202);
    const job = await finalState(body.status_url);
    expect(Date.now() - asked).toBeLessThan(1_000);
    expect(job).toMatchObject({ status: 'cancelled', error: { type: 'JobCancelled' } });
    submitted.sleep = body.job_id;
  });

  it('gives one job for the same Idempotency-Key twice', async () => {
    const send = () =>
      fetch(`${base}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': `e2e-${id}` },
        body: JSON.stringify({ task: 'math.add', input: { a: 20, b: 22 } }),
      });
    const first = (await (await send()).json()) as any;
    const second = await send();
    expect(second.status).toBe(202);
    expect(((await second.json()) as any).job_id).toBe(first.job_id);
    expect((await finalState(first.status_url)).result).toEqual({ sum: 42 });
  });

  it('keeps job records across a restart of the API', async () => {
    expect(await stop(server)).toBe(0);
    server = start('serve');
    await until(async () => ((await fetch(`${base}/healthz`)).ok ? true : undefined), 30_000);
    const list = (await (await fetch(`${base}/v1/jobs?limit=100`)).json()) as any;
    const byId = Object.fromEntries(list.jobs.map((j: { job_id: string; status: string }) => [j.job_id, j.status]));
    expect(byId).toMatchObject({
      [submitted.add!]: 'completed',
      [submitted.flaky!]: 'completed',
      [submitted.fail!]: 'failed',
      [submitted.spin!]: 'failed',
      [submitted.sleep!]: 'cancelled',
    });
  });
});
