import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..', '..');
const SCRIPT = join(ROOT, 'scripts', 'check-deps.mjs');

// Run as `npm run check:deps` runs it: a separate process, one line per problem, exit 1 if any.
function checkDeps(root?: string): { code: number | null; lines: string[]; stderr: string } {
  const r = spawnSync(process.execPath, root ? [SCRIPT, root] : [SCRIPT], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, lines: r.stdout.split('\n').filter(Boolean), stderr: r.stderr };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A small monorepo shaped like this one; `extra` adds or replaces files (path → content). */
function fixture(extra: Record<string, string> = {}): string {
  const root = mkdtempSync(join(tmpdir(), 'celerity-check-deps-'));
  dirs.push(root);
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  const files: Record<string, string> = {
    'package.json': json({ name: 'ws', private: true, workspaces: ['packages/celerity', 'examples/documents'], devDependencies: { vitest: '*', '@types/pg': '*' } }),
    'packages/celerity/package.json': json({
      name: 'celerity',
      dependencies: { fastify: '*', tsx: '*', pg: '*' },
      optionalDependencies: { 'better-sqlite3': '*' },
      peerDependencies: { 'pino-pretty': '*' },
      devDependencies: { typescript: '*' },
    }),
    'packages/celerity/src/index.ts': [
      "import { readFileSync } from 'node:fs';",
      "import path from 'path';",
      "import type { FastifyInstance } from 'fastify';",
      "import { helper } from './helper.ts';",
      '// A comment is not an import: ',
      "// import nope from 'left-pad';",
      'const doc = "import x from \'left-pad\'";',
      'export async function load() {',
      "  const { register } = await import('tsx/esm/api');",
      '  return { register, readFileSync, path, helper, doc };',
      '}',
      "export type Server = FastifyInstance & import('./helper.ts').Helper;",
      '',
    ].join('\n'),
    'packages/celerity/src/helper.ts': 'export const helper = 1;\nexport type Helper = { h: 1 };\n',
    'packages/celerity/src/db.ts': [
      "import { createRequire } from 'node:module';",
      "import pg from 'pg';",
      'const require = createRequire(import.meta.url);',
      "export const sqlite = () => createRequire(import.meta.url)('better-sqlite3');",
      "export const pretty = () => require.resolve('pino-pretty');",
      'export { pg };',
      '',
    ].join('\n'),
    'packages/celerity/bin/cli.js': "#!/usr/bin/env node\nawait import(new URL('../dist/main.js', import.meta.url).href);\n",
    'packages/celerity/test/a.test.ts': "import { it } from 'vitest';\nimport ts from 'typescript';\nimport type { Pool } from 'pg';\nit('x', () => { void ts; void (null as Pool | null); });\n",
    'examples/documents/package.json': json({ name: 'demo', dependencies: { celerity: '*', 'csv-parse': '*' } }),
    'examples/documents/app.ts': "import { load } from 'celerity';\nimport { parse } from 'csv-parse/sync';\nexport { load, parse };\n",
    'examples/documents/test/app.test.ts': "import { it } from 'vitest';\nimport { load } from 'celerity';\nit('x', () => void load);\n",
    ...extra,
  };
  for (const [file, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), content);
  }
  return root;
}

describe('scripts/check-deps.mjs', () => {
  it('passes a clean tree: builtins, relative, type-only, dynamic, createRequire and resolve uses of declared packages; comments and strings ignored', () => {
    const r = checkDeps(fixture());
    expect(r.lines.at(-1)).toMatch(/^check-deps: ok/);
    expect(r.code).toBe(0);
  });

  it('reports an undeclared static import in the core, with file and line', () => {
    const r = checkDeps(fixture({ 'packages/celerity/src/extra.ts': "// why\nimport leftPad from 'left-pad';\nexport default leftPad;\n" }));
    expect(r.code).toBe(1);
    expect(r.lines).toContain("packages/celerity/src/extra.ts:2: 'left-pad' is not a declared dependency of celerity");
  });

  it('reports a demo dependency imported by the core with its own message', () => {
    const r = checkDeps(fixture({ 'packages/celerity/src/extra.ts': "import { parse } from 'csv-parse/sync';\nexport { parse };\n" }));
    expect(r.code).toBe(1);
    expect(r.lines).toContain("packages/celerity/src/extra.ts:1: 'csv-parse' is a dependency of the example app examples/documents; the core (celerity) must never import it");
  });

  it('reports an undeclared dynamic import, require and createRequire()(), and a scoped subpath by its package name', () => {
    const r = checkDeps(
      fixture({
        'packages/celerity/src/extra.ts': [
          "import { createRequire } from 'node:module';",
          "export const a = () => import('left-pad');",
          "export const b = () => createRequire(import.meta.url)('is-odd');",
          "export const c = () => import('@scope/pkg/deep/file.js');",
          '',
        ].join('\n'),
        'packages/celerity/bin/old.cjs': "const x = require('is-even');\nmodule.exports = x;\n",
      }),
    );
    expect(r.code).toBe(1);
    expect(r.lines).toEqual(
      expect.arrayContaining([
        "packages/celerity/src/extra.ts:2: 'left-pad' is not a declared dependency of celerity",
        "packages/celerity/src/extra.ts:3: 'is-odd' is not a declared dependency of celerity",
        "packages/celerity/src/extra.ts:4: '@scope/pkg' is not a declared dependency of celerity",
        "packages/celerity/bin/old.cjs:1: 'is-even' is not a declared dependency of celerity",
      ]),
    );
  });

  it('holds shipped code to runtime dependencies: a devDependency or @types package is refused in src/ even as a type', () => {
    const r = checkDeps(
      fixture({
        'packages/celerity/src/extra.ts': "import type { Node } from 'typescript';\nimport type { PoolConfig } from '@types/pg';\nexport type X = Node | PoolConfig;\n",
      }),
    );
    expect(r.code).toBe(1);
    expect(r.lines).toContain("packages/celerity/src/extra.ts:1: 'typescript' is not a declared dependency of celerity");
    expect(r.lines).toContain("packages/celerity/src/extra.ts:2: '@types/pg' is a devDependency's types; celerity's shipped code and .d.ts must not need it");
  });

  it("lets tests use the root devDependencies but not an example's non-test files", () => {
    const r = checkDeps(fixture({ 'examples/documents/lib.ts': "import { it } from 'vitest';\nexport { it };\n" }));
    expect(r.lines).toEqual(["examples/documents/lib.ts:1: 'vitest' is not a declared dependency of demo"]);
    expect(r.code).toBe(1);
  });

  it('reports a declared runtime dependency of the core that nothing in src/ or bin/ uses', () => {
    const r = checkDeps(fixture({ 'packages/celerity/src/db.ts': "export const pretty = () => import.meta.resolve('pino-pretty');\nexport const s = () => import('better-sqlite3');\n" }));
    expect(r.lines).toEqual(["packages/celerity/package.json:6: 'pg' is in dependencies of celerity but nothing in src/ or bin/ imports it"]);
    expect(r.code).toBe(1);
  });

  it('passes on this repository', () => {
    const r = checkDeps();
    expect(r.lines, r.stderr).toEqual([expect.stringMatching(/^check-deps: ok/)]);
    expect(r.code).toBe(0);
  });
});
