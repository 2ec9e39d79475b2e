// Bootstrap of an isolation thread. From the built package it imports the
// compiled thread-main.js; from source (tests, a checkout run through tsx) it
// registers tsx's loader first, since a loader given to the parent with
// `--import tsx` does not apply to a thread's entry file. The app module is
// imported by thread-main, which registers tsx itself for a TypeScript app.
import { existsSync } from 'node:fs';

const compiled = new URL('./thread-main.js', import.meta.url);
if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('./thread-main.ts', import.meta.url).href);
}
