import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_DOC_PATH, renderConfigDoc } from '../scripts/config-doc.ts';
import { OPTIONS } from '../src/config.ts';

const ROOT = join(import.meta.dirname, '..', '..', '..');

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'packages/celerity/bin/celerity.js'), ...args], {
      cwd: ROOT,
      // A clean environment apart from PATH: no stray CELERITY_* from the shell.
      env: { PATH: process.env.PATH ?? '', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('docs/configuration.md', () => {
  it('is what scripts/config-doc.ts generates from the schema (run `npm run docs:config` after changing an option)', () => {
    expect(readFileSync(CONFIG_DOC_PATH, 'utf8')).toBe(renderConfigDoc());
  });

  it('documents every option with its variable, flag, default and accepted values', () => {
    const page = renderConfigDoc();
    for (const meta of Object.values(OPTIONS)) {
      const row = page.split('\n').find((l) => l.startsWith(`| \`${meta.env}\` |`));
      expect(row, meta.env).toBeDefined();
      expect(row).toContain(`\`${meta.flag}\``);
      expect(row!.split(' | ').length, meta.env).toBeGreaterThanOrEqual(5);
    }
    expect(page).toContain('| `CELERITY_CONCURRENCY` | `--concurrency` | `10` | integer, 1 to 10000 |');
    expect(page).toContain('| `LOG_LEVEL` | `--log-level` | `info` | one of `fatal`, `error`, `warn`, `info`, `debug`, `trace`, `silent` |');
    expect(page).toContain('| `CELERITY_HISTORY_RETENTION` | `--history-retention` | `30` | integer ≥ 0 |');
  });
});

describe('a bad value stops start-up', () => {
  it('with one line on stderr naming the option, and a non-zero exit (environment and flag)', async () => {
    const [fromEnv, fromFlag] = await Promise.all([
      run(['worker', '--app', 'examples/quickstart/app.ts'], { CELERITY_CONCURRENCY: 'abc' }),
      run(['dev', '--app', 'examples/quickstart/app.ts', '--history-retention', 'forever'], {}),
    ]);
    for (const [res, env, flag, value] of [
      [fromEnv, 'CELERITY_CONCURRENCY', '--concurrency', 'abc'],
      [fromFlag, 'CELERITY_HISTORY_RETENTION', '--history-retention', 'forever'],
    ] as const) {
      expect(res.code, res.stderr).toBe(2);
      const lines = res.stderr.split('\n').filter((l) => l.trim() !== '' && !/ExperimentalWarning|--trace-warnings/.test(l));
      expect(lines, res.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^celerity: Invalid configuration ${env} \\(${flag}\\): .*\\(got "${value}"\\)$`));
      expect(res.stdout).toBe('');
    }
  }, 30_000);
});
