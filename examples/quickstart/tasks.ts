import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { defineTask } from 'celerity';

/** `{a, b}` → `{sum}`: the smallest useful task. */
export const add = defineTask({
  name: 'math.add',
  description: 'Adds two numbers.',
  input: z.object({ a: z.number(), b: z.number() }),
  handler: async ({ a, b }) => ({ sum: a + b }),
});

/** Reports progress after each step; poll the job to watch it move. */
export const progress = defineTask({
  name: 'demo.progress',
  description: 'Sleeps `steps` times `step_ms` ms, reporting progress after each step.',
  input: z.object({
    steps: z.number().int().min(1).max(10_000),
    step_ms: z.number().int().min(0).max(60_000).default(200),
  }),
  handler: async ({ steps, step_ms }, ctx) => {
    for (let step = 1; step <= steps; step++) {
      await sleep(step_ms, undefined, { signal: ctx.signal });
      await ctx.progress({ percent: Math.round((step / steps) * 100), stage: `step ${step}/${steps}`, steps_done: step });
    }
    return { steps };
  },
});

/** A transient failure on the first `fail_times` attempts, then success. */
export class TransientError extends Error {
  override name = 'TransientError';
}

export const flaky = defineTask({
  name: 'demo.flaky',
  description: 'Fails its first `fail_times` attempts with a transient error, then succeeds.',
  input: z.object({ fail_times: z.number().int().min(0).max(5) }),
  retries: 5,
  // Short enough for a demo; production tasks keep the 2 s default base.
  backoff: { base: 200, max: 2_000 },
  handler: async ({ fail_times }, ctx) => {
    if (ctx.attempt <= fail_times) {
      throw new TransientError(`transient failure on attempt ${ctx.attempt} of ${fail_times + 1}`);
    }
    return { attempts: ctx.attempt };
  },
});

/** Always fails, so that the stored error can be seen. */
export const fail = defineTask({
  name: 'demo.fail',
  description: 'Always throws; its error is stored with the job.',
  input: z.object({ message: z.string().max(500).default('this task always fails') }),
  retries: 1,
  backoff: { base: 100, max: 100 },
  handler: async ({ message }) => {
    throw new Error(message);
  },
});

/**
 * Busy-loops for `ms` without ever yielding: only a terminable thread can
 * stop it, so it runs isolated with a hard limit of 2 s.
 */
export const spin = defineTask({
  name: 'demo.spin',
  description: 'Busy-loops `ms` ms without yielding; isolated in a thread, hard time limit 2 s.',
  input: z.object({ ms: z.number().int().min(0).max(3_600_000) }),
  isolation: 'thread',
  timeLimits: { hard: 2_000 },
  retries: 0,
  handler: async ({ ms }) => {
    const until = Date.now() + ms;
    let spins = 0;
    while (Date.now() < until) spins++;
    return { spun_ms: ms, spins };
  },
});

/** Awaits a timer that honours `ctx.signal`: cancel it and it stops at once. */
export const sleepTask = defineTask({
  name: 'demo.sleep',
  description: 'Sleeps `ms` ms; stops at once when cancelled.',
  input: z.object({ ms: z.number().int().min(0).max(3_600_000) }),
  handler: async ({ ms }, ctx) => {
    await sleep(ms, undefined, { signal: ctx.signal });
    return { slept_ms: ms };
  },
});
