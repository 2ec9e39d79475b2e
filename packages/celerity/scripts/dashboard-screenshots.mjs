// Screenshots of the dashboard for the docs: starts `celerity dev` on the
// documents example (its own Redis prefix, SQLite file and working directory,
// all removed at the end), submits a few jobs, and saves
// docs/images/dashboard-overview.png and docs/images/dashboard-job.png.
//
//   npm run build -w celerity && node packages/celerity/scripts/dashboard-screenshots.mjs
//
// Needs Redis on REDIS_URL (default 127.0.0.1:6379) and chromium at
// /usr/bin/chromium (or CELERITY_CHROMIUM).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { chromium } from 'playwright-core';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const repo = join(pkg, '..', '..');
const images = join(repo, 'docs', 'images');
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `shots${randomBytes(4).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'celerity-shots-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;

const dev = spawn(process.execPath, [join(pkg, 'bin', 'celerity.js'), 'dev', '--app', join(repo, 'examples', 'documents', 'app.ts'), '--port', String(port)], {
  cwd: dir,
  env: { ...process.env, REDIS_URL: redisUrl, CELERITY_PREFIX: prefix, LOG_LEVEL: 'warn', CELERITY_AUTH: 'keys' },
  stdio: ['ignore', 'ignore', 'inherit'],
});
let browser;
try {
  await until(async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok, 60_000, 'celerity dev to answer /healthz');
  const key = readFileSync(join(dir, '.celerity', 'dev-key'), 'utf8').trim();
  const submit = async (task, input) => {
    const res = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ task, input }) });
    if (res.status !== 202) throw new Error(`submitting ${task}: ${res.status} ${await res.text()}`);
    return (await res.json()).job_id;
  };
  for (let i = 0; i < 12; i++) await submit('math.add', { a: i, b: i * 2 });
  await submit('demo.fail', { message: 'the invoice service answered 503' });
  await submit('demo.progress', { steps: 60, step_ms: 500 });
  await submit('demo.progress', { steps: 40, step_ms: 400 });
  const flaky = await submit('demo.flaky', { fail_times: 2 });
  const job = async (id) => (await fetch(`${base}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${key}` } })).json();
  await until(async () => (await job(flaky)).status === 'completed', 30_000, 'the flaky job to complete');
  // The workers' heartbeats (every 5 s) list their running jobs: one that does, for the overview.
  const busy = async () => (await (await fetch(`${base}/v1/workers`, { headers: { authorization: `Bearer ${key}` } })).json()).workers.some((w) => w.active_jobs.length > 0);
  await until(busy, 15_000, 'a heartbeat listing the running jobs');

  browser = await chromium.launch({ executablePath: process.env.CELERITY_CHROMIUM ?? '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' })).newPage();
  await page.goto(`${base}/dashboard/`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('rowheader', { name: 'default' }).waitFor();
  // A worker with its running jobs (`2/10`), as the heartbeat above listed them.
  await page
    .getByText(/^[1-9]\d*\/\d+/)
    .first()
    .waitFor();
  // The schedules (GET /v1/schedules) and the charts drawn from GET /v1/stats.
  await page.getByRole('heading', { name: 'Schedules' }).waitFor();
  await page.locator('.chart canvas').first().waitFor();
  mkdirSync(images, { recursive: true });
  await page.screenshot({ path: join(images, 'dashboard-overview.png'), fullPage: true });
  await page.goto(`${base}/dashboard/#/jobs/${flaky}`);
  await page.getByRole('heading', { level: 1, name: /demo\.flaky/ }).waitFor();
  await page.getByRole('heading', { name: 'Attempts' }).waitFor();
  await page.screenshot({ path: join(images, 'dashboard-job.png'), fullPage: true });
  console.log(`dashboard-screenshots: ${join('docs', 'images', 'dashboard-overview.png')}, ${join('docs', 'images', 'dashboard-job.png')}`);
} finally {
  await browser?.close();
  dev.kill('SIGTERM');
  await new Promise((resolve) => (dev.exitCode !== null ? resolve() : dev.once('exit', resolve)));
  await deleteKeys(redisUrl, prefix);
  rmSync(dir, { recursive: true, force: true });
}

async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    if (dev.exitCode !== null) throw new Error(`celerity dev exited (${dev.exitCode}) while waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function deleteKeys(url, keyPrefix) {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
