import { z } from 'zod';
import { defineTask } from 'celerity';

/** The benchmark's job: validates an empty object and does nothing. */
export const noop = defineTask({
  name: 'bench.noop',
  input: z.object({}),
  handler: async () => null,
});

/** The queue every benchmark job goes to (Celerity's default queue). */
export const BENCH_QUEUE = noop.queue;
