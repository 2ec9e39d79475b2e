import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from './process-helpers.ts';
import { OPTIONS } from '../src/config.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const BIN = join(ROOT, 'packages/celerity/bin/celerity.js');
const APP = join(ROOT, 'examples/quickstart/app.ts');

function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20_000 });
}

describe('celerity CLI', () => {
  it('stops on a bad configuration value with one line naming the option', () => {
    const res = run(['worker', '--app', APP, '--concurrency', 'many']);
    expect(res.status).toBe(2);
    const lines = res.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^celerity: Invalid configuration CELERITY_CONCURRENCY \(--concurrency\)/);
    const fromEnv = run(['serve', '--app', APP], { PORT: '99999' });
    expect(fromEnv.status).toBe(2);
    expect(fromEnv.stderr.trim()).toMatch(/^celerity: Invalid configuration PORT \(--port\)/);
  });

  it('prints its version', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'packages/celerity/package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const res = run([flag]);
      expect(res.status).toBe(0);
      expect(res.stdout.trim()).toBe(version);
    }
  });

  it('says in one line when the app module is missing or is not an app', () => {
    const missing = run(['worker', '--app', 'nope/app.ts']);
    expect(missing.status).toBe(2);
    expect(missing.stderr.trim()).toBe('celerity: --app: no such file nope/app.ts');
    const notApp = run(['worker', '--app', 'examples/quickstart/tasks.ts']);
    expect(notApp.status).toBe(2);
    expect(notApp.stderr.trim()).toMatch(/must export an app made with createApp\(\)/);
  });

  it('dev mode starts a private redis-server when none answers, and stops it on SIGTERM', async () => {
    if (spawnSync('redis-server', ['--version']).status !== 0) throw new Error('redis-server must be on PATH for this test');
    const cwd = mkdtempSync(join(tmpdir(), 'celerity-dev-'));
    const [redisPort, apiPort] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, [BIN, 'dev', '--app', APP], {
      cwd,
      env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}`, PORT: String(apiPort), HOST: '127.0.0.1', LOG_LEVEL: 'warn', DATABASE_URL: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    try {
      const deadline = Date.now() + 25_000;
      while (!out.includes('Try:') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
      expect(out).toContain(`API on http://localhost:${apiPort}`);
      expect(out).toContain(`private Redis redis://127.0.0.1:${redisPort}`);
      expect(out).toContain(`curl -X POST http://localhost:${apiPort}/v1/jobs -H "authorization: Bearer $(cat .celerity/dev-key)"`);
      // Dev mode made an admin key, printed it and saved it where the printed curl lines read it.
      const key = readFileSync(join(cwd, '.celerity/dev-key'), 'utf8').trim();
      expect(out).toContain(`API key: ${key}`);
      expect(statSync(join(cwd, '.celerity/dev-key')).mode & 0o777).toBe(0o600);
      expect((await fetch(`http://127.0.0.1:${apiPort}/v1/jobs`)).status).toBe(401);
      const auth = { authorization: `Bearer ${key}` };
      const res = await fetch(`http://127.0.0.1:${apiPort}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...auth },
        body: JSON.stringify({ task: 'math.add', input: { a: 2, b: 3 } }),
      });
      expect(res.status).toBe(202);
      const { status_url } = (await res.json()) as any;
      let job: any;
      for (let i = 0; i < 100 && job?.status !== 'completed'; i++) {
        job = (await (await fetch(`http://127.0.0.1:${apiPort}${status_url}`, { headers: auth })).json()) as any;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(job).toMatchObject({ status: 'completed', result: { sum: 5 } });
      expect(existsSync(join(cwd, '.celerity/redis/appendonlydir'))).toBe(true);
      expect(existsSync(join(cwd, '.celerity/celerity.db'))).toBe(true);
    } finally {
      const exit = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      expect(await exit).toBe(0);
      rmSync(cwd, { recursive: true, force: true });
    }
    // The private server went away with it.
    const ping = spawnSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8' });
    expect(ping.stdout.trim()).not.toBe('PONG');
  }, 40_000);
});

describe('configuration docs', () => {
  it('the README table lists every option with its variable, flag and default', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const meta of Object.values(OPTIONS)) {
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${meta.env}\` |`));
      expect(row, meta.env).toBeDefined();
      expect(row).toContain(`\`${meta.flag}\``);
      const shown = meta.default.startsWith('(') ? meta.default.slice(1, -1) : `\`${meta.default}\``;
      expect(row).toContain(shown);
    }
  });
});
