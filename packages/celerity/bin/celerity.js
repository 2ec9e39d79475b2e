#!/usr/bin/env node
// The CLI is compiled JavaScript (dist/, built by `prepare` on install or by
// `npm run build`). A TypeScript app module is loaded through tsx, registered
// by the CLI only when the app needs it.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('celerity: the package is not built (no dist/); run `npm run build` in its folder');
  process.exit(1);
}
await import(main.href);
