/**
 * The dashboard as a user gets it: built assets in the packed package (and
 * neither the client's source nor its libraries as dependencies), served by
 * the built CLI's `celerity serve`. Needs `npm run build` first, as the
 * spawned-CLI tests do.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, testEnv } from '../helpers.ts';
import { freePort, Proc, processEnv, ROOT } from '../process-helpers.ts';

const PKG = join(ROOT, 'packages', 'celerity');
const manifest = () => JSON.parse(readFileSync(join(PKG, 'dist', 'dashboard', 'assets', 'manifest.json'), 'utf8')) as { js: string; css: string };

describe('the dashboard in the package', () => {
  afterAll(cleanup);

  it('ships its built script and style sheet, not its source, and depends on none of its libraries', () => {
    // --ignore-scripts: the files of the build at hand, without building again.
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts', '--loglevel=error'], { cwd: PKG, encoding: 'utf8' });
    const files = (JSON.parse(out) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    const { js, css } = manifest();
    expect(files).toEqual(expect.arrayContaining([`dist/dashboard/assets/${js}`, `dist/dashboard/assets/${css}`, 'dist/dashboard/assets/manifest.json', 'dist/dashboard/plugin.js']));
    expect(files.filter((f) => f.startsWith('dashboard/'))).toEqual([]);
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
    const runtime = { ...pkg.dependencies, ...pkg.optionalDependencies, ...pkg.peerDependencies };
    for (const name of ['preact', 'uplot', 'esbuild', 'playwright-core']) expect(runtime[name], name).toBeUndefined();
  });

  it('is served by `celerity serve` at /dashboard', async () => {
    const env = testEnv('sqlite');
    const port = await freePort();
    const serve = new Proc('serve', process.execPath, [join(PKG, 'bin', 'celerity.js'), 'serve', '--app', 'examples/quickstart/app.ts'], {
      env: processEnv(env, { PORT: String(port), HOST: '127.0.0.1', CELERITY_AUTH: 'off' }),
    });
    const base = `http://127.0.0.1:${port}`;
    let page: Response | undefined;
    for (let i = 0; i < 300 && serve.running; i++) {
      page = await fetch(`${base}/dashboard`).catch(() => undefined);
      if (page) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(page?.status, serve.output).toBe(200);
    const html = await page!.text();
    expect(html).toContain(`/dashboard/assets/${manifest().js}`);
    expect(html).toContain('data-auth="off"');
    expect((await fetch(`${base}/dashboard/assets/${manifest().css}`)).status).toBe(200);
    await serve.kill('SIGTERM');
    await serve.waitExit(20_000);
  });
});
