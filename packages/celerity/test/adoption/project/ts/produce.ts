// A producer script of the TypeScript app: the app object enqueues its own
// task, typed, and waits for the worker (another process) to finish it.
import app, { add } from './app.ts';

const handle = await app.enqueue(add, { a: 20, b: 22 });
const done = await handle.wait({ timeoutMs: 60_000, pollMs: 100 });
const sum: number | undefined = done.result?.sum;
console.log(JSON.stringify({ id: handle.id, status: done.status, sum }));
await app.close();

// Type checks only (never called): the input and result types follow the
// task, so a wrong input and a wrong use of the result do not compile. Were
// the shipped types to degrade to `any`, these @ts-expect-error would be unused.
export async function typeChecks(): Promise<void> {
  // @ts-expect-error: `a` must be a number
  await app.enqueue(add, { a: '20', b: 22 });
  const job = await (await app.enqueue(add, { a: 1, b: 2 })).wait();
  // @ts-expect-error: the result's `sum` is a number
  const wrong: string | undefined = job.result?.sum;
  void wrong;
}
