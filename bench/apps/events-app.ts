import { z } from 'zod';
import { createApp, defineTask } from 'celerity';
import { noop } from './tasks.ts';

/**
 * s6_events' job: reports progress once and returns, so that each job makes
 * four messages on GET /v1/events (queued, started, progress, completed).
 */
function progressJob(name: string) {
  return defineTask({
    name,
    input: z.object({}),
    handler: async (_input, ctx) => {
      await ctx.progress({ percent: 50 });
      return null;
    },
  });
}

export const progressTask = progressJob('bench.progress');

/** The same job under another name, for the warm-up: its messages are told apart by their task. */
export const warmupTask = progressJob('bench.progress-warmup');

/**
 * The app of s6_events' child processes (`celerity serve` and `celerity
 * worker --app bench/apps/events-app.ts`); configured from the environment
 * the benchmark gives them, as noop-app.ts.
 */
export const app = createApp({ tasks: [noop, progressTask, warmupTask], module: import.meta.url });
export default app;
