import { z } from 'zod';
import { createApp, defineTask } from 'celerity';

/** s6_fairness' job: sleeps `ms` (a stand-in for a call to an upstream API). */
function sleeper(name: string, queue: string) {
  return defineTask({
    name,
    queue,
    input: z.object({ ms: z.number().int().min(0).max(10_000) }),
    handler: async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return null;
    },
  });
}

/** On the queue `fair`, which the benchmark names in CELERITY_FAIR_QUEUES. */
export const fairTask = sleeper('bench.fair', 'fair');
/** The same job on the queue `fifo`, which runs in arrival order: the run without fairness. */
export const fifoTask = sleeper('bench.fifo', 'fifo');

/**
 * The app of s6_fairness' worker processes (`celerity worker --app
 * bench/apps/fair-app.ts`); configured from the environment the benchmark
 * gives them (CELERITY_FAIR_QUEUES=fair), as noop-app.ts.
 */
export const app = createApp({ tasks: [fairTask, fifoTask], module: import.meta.url });
export default app;
