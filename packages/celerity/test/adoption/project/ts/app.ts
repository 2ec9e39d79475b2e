// A user's app in TypeScript, as the adoption test installs it: `celerity`
// and `zod` imported by name from the project's own node_modules.
import { isMainThread, threadId } from 'node:worker_threads';
import { z } from 'zod';
import { createApp, defineTask } from 'celerity';

export const add = defineTask({
  name: 'adopt.add',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: ({ a, b }) => ({ sum: a + b }),
});

/**
 * Tells where it runs. Run before `spin`, it also starts the isolation
 * thread (loading the app module in it), which `spin` then reuses: `spin`'s
 * short hard limit is spent in its loop, not in a thread's start-up.
 */
export const where = defineTask({
  name: 'adopt.where',
  input: z.object({}),
  isolation: 'thread',
  retries: 0,
  handler: () => ({ isMainThread, threadId }),
});

/**
 * Never yields: only terminating its thread at the hard limit stops it. The
 * progress it posts first shows that the handler really ran in the thread.
 */
export const spin = defineTask({
  name: 'adopt.spin',
  input: z.object({ label: z.string().default('spin') }),
  isolation: 'thread',
  timeLimits: { hard: 1_500 },
  retries: 0,
  handler: (_input, ctx) => {
    void ctx.progress({ stage: 'spinning' });
    for (;;) {
      // spins: never yields to the event loop, so only terminating the thread stops it
    }
  },
});

// No `module: import.meta.url`: the CLI's `--app` tells the isolation threads
// where the app is (the JavaScript app passes `module` instead).
export const app = createApp({ tasks: [add, where, spin] });
export default app;
