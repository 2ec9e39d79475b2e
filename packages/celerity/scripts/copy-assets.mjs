// Copies what tsc does not emit into dist/: the isolation threads' bootstrap,
// a plain .mjs file that must run before any TypeScript loader exists.
// Only a changed file is written: a rebuild (the adoption test packs the
// package, which runs `prepare`) must not rewrite a file that running
// processes of other tests may be loading at that moment.
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';

const assets = ['worker/isolation/thread-entry.mjs'];
for (const asset of assets) {
  const from = new URL(`../src/${asset}`, import.meta.url);
  const to = new URL(`../dist/${asset}`, import.meta.url);
  if (existsSync(to) && readFileSync(to).equals(readFileSync(from))) continue;
  mkdirSync(new URL('.', to), { recursive: true });
  copyFileSync(from, to);
}
