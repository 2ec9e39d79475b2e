#!/usr/bin/env node
// Checks that every package a workspace imports is one it declares, so that a
// missing dependency fails here rather than in a user's install (npm hoisting
// makes an undeclared import work in this monorepo and break everywhere else).
//
//   node scripts/check-deps.mjs [rootDir]     (rootDir defaults to this repo)
//
// Which files may use which declarations:
// - a library (a workspace under packages/): src/ and bin/ ship, so their
//   imports, type-only ones included (they end up in the shipped .d.ts), must be
//   in its dependencies, optionalDependencies or peerDependencies; its test/ and
//   scripts/ may also use its devDependencies and the root's devDependencies
//   (they run from the root).
// - an app (any other workspace, e.g. examples/*): every code file; non-test
//   files use its own dependencies, test files (under test/ or *.test.*) also
//   its devDependencies and the root's.
// - bench/peers (the benchmark's peers, with a package.json and lockfile of
//   their own): its own dependencies only.
// - the root: bench/, scripts/ and root-level files use the root's dependencies
//   and devDependencies, the workspace packages and what those declare (the
//   workspace install puts them all in the root's node_modules; the benchmark
//   drives raw BullMQ with the very copy Celerity uses, so it must not declare
//   its own).
// - a library must never import what only an app depends on (the demo's PDF,
//   CSV and LLM packages), and a dependency it declares but nothing in src/ or
//   bin/ uses is reported too.
//
// Output: one line per problem, `file:line: message`; exit code 1 if any.
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// The TypeScript parser (a root devDependency) rather than regular expressions:
// it tells comments and strings from imports, and type-only from runtime ones.
// Resolved from this script's repo, so a checked tree needs no node_modules.
const ts = createRequire(import.meta.url)('typescript');

const CODE = /\.(?:[cm]?[jt]s|tsx)$/;
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', '.celerity']);
const builtins = new Set(builtinModules);

/** Every code file under `dir` (absolute), skipping installs and build output. */
function walk(dir) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out = [];
  for (const e of entries) {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) out.push(...walk(full));
    } else if (e.isFile() && CODE.test(e.name)) {
      out.push(full);
    }
  }
  return out.sort();
}

/** `@scope/name/sub` → `@scope/name`, `name/sub` → `name`; null for relative, absolute, URL, `#subpath` and builtin specifiers. */
export function packageName(spec) {
  if (/^(?:\.|\/|#|[a-z][a-z0-9+.-]*:)/i.test(spec)) return null; // ./x, /x, #x, node:x, file:x, data:x
  const parts = spec.split('/');
  const name = spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
  if (builtins.has(name) || builtins.has(spec)) return null;
  return name;
}

function stringArg(node) {
  const a = node.arguments?.[0];
  return a && (ts.isStringLiteral(a) || ts.isNoSubstitutionTemplateLiteral(a)) ? a : null;
}

const isCreateRequireCall = (n) => ts.isCallExpression(n) && ts.isIdentifier(n.expression) && n.expression.text === 'createRequire';

/**
 * The module references of one file: static imports and re-exports, `import type`,
 * `import('x')` (also in type positions), `require('x')`, `createRequire(u)('x')`
 * and resolve probes (`require.resolve('x')`, `createRequire(u).resolve('x')`,
 * `import.meta.resolve('x')`), which load or locate a package by name.
 */
export function moduleRefs(file, text) {
  const kind = /\.[cm]?js$/.test(file) ? ts.ScriptKind.JS : ts.ScriptKind.TS;
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  // Names bound to a require function: `require` itself and `const req = createRequire(...)`.
  const requireNames = new Set(['require']);
  const collect = (n) => {
    if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.initializer && isCreateRequireCall(n.initializer)) requireNames.add(n.name.text);
    ts.forEachChild(n, collect);
  };
  collect(sf);
  const isRequireFn = (n) => (ts.isIdentifier(n) && requireNames.has(n.text)) || isCreateRequireCall(n);

  const refs = [];
  const add = (lit, typeOnly) => {
    const line = sf.getLineAndCharacterOfPosition(lit.getStart(sf)).line + 1;
    refs.push({ spec: lit.text, line, typeOnly });
  };
  const allTypeOnly = (elements) => elements.length > 0 && elements.every((e) => e.isTypeOnly);
  const visit = (n) => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      const c = n.importClause;
      const typeOnly = !!c && (c.isTypeOnly || (!c.name && !!c.namedBindings && ts.isNamedImports(c.namedBindings) && allTypeOnly(c.namedBindings.elements)));
      add(n.moduleSpecifier, typeOnly);
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      const typeOnly = n.isTypeOnly || (!!n.exportClause && ts.isNamedExports(n.exportClause) && allTypeOnly(n.exportClause.elements));
      add(n.moduleSpecifier, typeOnly);
    } else if (ts.isImportEqualsDeclaration(n) && ts.isExternalModuleReference(n.moduleReference) && ts.isStringLiteral(n.moduleReference.expression)) {
      add(n.moduleReference.expression, n.isTypeOnly);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      add(n.argument.literal, true);
    } else if (ts.isCallExpression(n)) {
      const lit = stringArg(n);
      const callee = n.expression;
      if (lit) {
        if (callee.kind === ts.SyntaxKind.ImportKeyword || isRequireFn(callee)) add(lit, false);
        else if (
          ts.isPropertyAccessExpression(callee) &&
          callee.name.text === 'resolve' &&
          (isRequireFn(callee.expression) || (ts.isMetaProperty(callee.expression) && callee.expression.keywordToken === ts.SyntaxKind.ImportKeyword))
        ) {
          add(lit, false);
        }
      }
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return refs;
}

function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

const keys = (...objs) => new Set(objs.flatMap((o) => Object.keys(o ?? {})));
const rel = (root, file) => path.relative(root, file).split(path.sep).join('/');

/** The line of `"name":` in a package.json, for pointing at a declaration. */
function declLine(pkgJsonText, name) {
  const i = pkgJsonText.split('\n').findIndex((l) => l.includes(`"${name}":`));
  return i + 1 || 1;
}

export function checkDeps(root) {
  const problems = [];
  const rootPkg = readJson(path.join(root, 'package.json'));
  const rootDev = keys(rootPkg.dependencies, rootPkg.devDependencies);
  const workspaces = (rootPkg.workspaces ?? []).map((dir) => {
    const text = readFileSync(path.join(root, dir, 'package.json'), 'utf8');
    const pkg = JSON.parse(text);
    const runtime = keys(pkg.dependencies, pkg.optionalDependencies, pkg.peerDependencies);
    return { dir, text, pkg, runtime, dev: keys(pkg.devDependencies), library: dir.startsWith('packages/') };
  });
  const workspaceNames = new Set(workspaces.map((w) => w.pkg.name));
  const libraries = workspaces.filter((w) => w.library);
  const apps = workspaces.filter((w) => !w.library);
  // What only an app needs (the demo's pdfjs-dist, csv-parse, @anthropic-ai/sdk, the
  // apps themselves): a library importing one of these is a layering mistake,
  // reported as such even if it were also declared.
  const appOnly = new Map();
  for (const app of apps) {
    appOnly.set(app.pkg.name, app.dir);
    for (const name of app.runtime) {
      if (!libraries.some((l) => l.runtime.has(name) || l.dev.has(name)) && !workspaceNames.has(name)) appOnly.set(name, app.dir);
    }
  }

  let files = 0;
  let imports = 0;
  /** Checks the files of one zone; `allowed(name, ref)` is true when the import is declared. */
  const scan = (absFiles, owner, allowed, { library = false, uses } = {}) => {
    for (const file of absFiles) {
      files++;
      for (const ref of moduleRefs(file, readFileSync(file, 'utf8'))) {
        const name = packageName(ref.spec);
        if (!name) continue;
        imports++;
        uses?.add(name);
        const where = `${rel(root, file)}:${ref.line}`;
        if (library && appOnly.has(name)) {
          problems.push(`${where}: '${name}' is a dependency of the example app ${appOnly.get(name)}; the core (${owner}) must never import it`);
        } else if (library && name.startsWith('@types/')) {
          problems.push(`${where}: '${name}' is a devDependency's types; ${owner}'s shipped code and .d.ts must not need it`);
        } else if (!allowed(name, ref)) {
          problems.push(`${where}: '${name}' is not a declared dependency of ${owner}`);
        }
      }
    }
  };

  for (const lib of libraries) {
    const abs = (sub) => walk(path.join(root, lib.dir, sub));
    const owner = lib.pkg.name;
    const shipped = (name) => lib.runtime.has(name) || name === owner;
    const uses = new Set();
    scan([...abs('src'), ...abs('bin')], owner, shipped, { library: true, uses });
    // dashboard/: the browser client, bundled at build time into dist/, so its libraries are devDependencies.
    scan([...abs('test'), ...abs('scripts'), ...abs('dashboard')], owner, (name) => shipped(name) || lib.dev.has(name) || rootDev.has(name), { library: true });
    // A runtime declaration nothing ships with would be installed by every user for nothing.
    for (const field of ['dependencies', 'optionalDependencies', 'peerDependencies']) {
      for (const name of Object.keys(lib.pkg[field] ?? {})) {
        if (!uses.has(name)) {
          problems.push(`${lib.dir}/package.json:${declLine(lib.text, name)}: '${name}' is in ${field} of ${owner} but nothing in src/ or bin/ imports it`);
        }
      }
    }
  }

  for (const app of apps) {
    const owner = app.pkg.name;
    const own = (name) => app.runtime.has(name) || name === owner;
    const all = walk(path.join(root, app.dir));
    const isTest = (f) => /(?:^|\/)test\//.test(rel(path.join(root, app.dir), f)) || /\.test\.[^/]+$/.test(f);
    scan(
      all.filter((f) => !isTest(f)),
      owner,
      own,
    );
    scan(all.filter(isTest), owner, (name) => own(name) || app.dev.has(name) || rootDev.has(name));
  }

  // bench/peers: the peers the benchmark measures, with a package.json and a
  // lockfile of their own (installed on demand, apart from the root's): its
  // files use what it declares.
  const peersDir = path.join(root, 'bench', 'peers');
  let peerFiles = [];
  try {
    const peersPkg = readJson(path.join(peersDir, 'package.json'));
    const declared = keys(peersPkg.dependencies);
    peerFiles = walk(peersDir);
    scan(peerFiles, `bench/peers (${peersPkg.name})`, (name) => declared.has(name));
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }

  // The root's own code: the benchmark, these scripts, root config files.
  const rootFiles = [
    ...walk(path.join(root, 'bench')).filter((f) => !peerFiles.includes(f)),
    ...walk(path.join(root, 'scripts')),
    ...readdirSync(root, { withFileTypes: true })
      .filter((e) => e.isFile() && CODE.test(e.name))
      .map((e) => path.join(root, e.name)),
  ];
  const installed = (name) => rootDev.has(name) || workspaceNames.has(name) || workspaces.some((w) => w.runtime.has(name));
  scan(rootFiles, `the root package (${rootPkg.name})`, installed);

  return { problems, files, imports };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
  const { problems, files, imports } = checkDeps(root);
  for (const p of problems) console.log(p);
  if (problems.length > 0) {
    console.error(`check-deps: ${problems.length} problem(s) in ${rel(process.cwd(), root) || '.'}`);
    process.exit(1);
  }
  console.log(`check-deps: ok (${files} files, ${imports} package imports)`);
}
