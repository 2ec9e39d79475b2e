// A producer script of the JavaScript app: the app object enqueues its own
// task and waits for the worker (another process) to finish it.
import app, { add } from './app.js';

const handle = await app.enqueue(add, { a: 20, b: 22 });
const done = await handle.wait({ timeoutMs: 60_000, pollMs: 100 });
console.log(JSON.stringify({ id: handle.id, status: done.status, sum: done.result?.sum }));
await app.close();
