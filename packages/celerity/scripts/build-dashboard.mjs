// Builds the dashboard's client (dashboard/src) into dist/dashboard/assets/:
// one script and one style sheet with content hashes in their names, and
// manifest.json naming them for the server (src/dashboard/assets.ts). The
// UI and chart libraries are bundled in, so the package needs neither at
// run time, nor any network: no CDN, system fonts only.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/dashboard/assets`;
const tmp = `${outdir}.tmp-${process.pid}`;

const result = await build({
  entryPoints: { app: `${root}dashboard/src/main.tsx` },
  bundle: true,
  format: 'esm',
  target: ['chrome111', 'firefox115', 'safari16.4'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: false,
  legalComments: 'eof',
  entryNames: '[name]-[hash]',
  outdir: tmp,
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((f) => basename(f));
const js = outputs.find((f) => f.endsWith('.js'));
const css = outputs.find((f) => f.endsWith('.css'));
if (!js || !css || outputs.length !== 2) throw new Error(`build-dashboard: expected one .js and one .css, got ${outputs.join(', ')}`);

// Hashed names: a file already there is this very file, and is left alone
// (a rebuild while tests serve the assets must not rewrite them). The
// manifest is written last, by a rename, so it never names a missing file.
mkdirSync(outdir, { recursive: true });
for (const name of [js, css]) if (!existsSync(`${outdir}/${name}`)) renameSync(`${tmp}/${name}`, `${outdir}/${name}`);
const manifest = `${JSON.stringify({ js, css }, null, 2)}\n`;
if (!existsSync(`${outdir}/manifest.json`) || readFileSync(`${outdir}/manifest.json`, 'utf8') !== manifest) {
  writeFileSync(`${tmp}/manifest.json`, manifest);
  renameSync(`${tmp}/manifest.json`, `${outdir}/manifest.json`);
}
rmSync(tmp, { recursive: true, force: true });
// Earlier builds' files: the package ships only this one.
for (const name of readdirSync(outdir)) if (name !== js && name !== css && name !== 'manifest.json') rmSync(`${outdir}/${name}`);
console.log(`build-dashboard: ${js}, ${css}`);
