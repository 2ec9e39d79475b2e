// Bootstrap of an isolation thread. Like bin/celerity.js, it registers tsx's
// loader so that the thread can import TypeScript: its own main module and
// the app module that defines the handlers. (A loader passed with
// `execArgv: ['--import', 'tsx']` does not apply to a thread's entry file.)
import { existsSync } from 'node:fs';
import { register } from 'tsx/esm/api';

register();
const source = new URL('./thread-main.ts', import.meta.url);
await import(existsSync(source) ? source.href : new URL('./thread-main.js', import.meta.url).href);
