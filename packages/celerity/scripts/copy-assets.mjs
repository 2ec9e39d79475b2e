// Copies what tsc does not emit into dist/: the isolation threads' bootstrap,
// a plain .mjs file that must run before any TypeScript loader exists.
import { copyFileSync, mkdirSync } from 'node:fs';

const assets = ['worker/isolation/thread-entry.mjs'];
for (const asset of assets) {
  const to = new URL(`../dist/${asset}`, import.meta.url);
  mkdirSync(new URL('.', to), { recursive: true });
  copyFileSync(new URL(`../src/${asset}`, import.meta.url), to);
}
