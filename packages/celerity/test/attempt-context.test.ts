import { setFlagsFromString } from 'node:v8';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Retry, UpstreamRateLimit } from '../src/errors.ts';
import { AttemptContext, type AttemptLazies } from '../src/worker/attempt-context.ts';

// V8's own view of an object's layout; the flag only lets this file's
// functions below use its intrinsics.
setFlagsFromString('--allow-natives-syntax');
const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean;

const FIELDS = { jobId: 'j1', task: 't.task', queue: 'default', tenant: 'acme', attempt: 2, maxAttempts: 3 };

function lazies(): AttemptLazies & { made: { signal: number; log: number }; updates: unknown[] } {
  const made = { signal: 0, log: 0 };
  const updates: unknown[] = [];
  const controller = new AbortController();
  const logger = pino({ enabled: false });
  return {
    made,
    updates,
    signal: () => {
      made.signal++;
      return controller.signal;
    },
    log: () => {
      made.log++;
      return logger;
    },
    progress: async (update) => {
      updates.push(update);
    },
  };
}

describe('AttemptContext (an inline handler’s ctx)', () => {
  it('is a fast-mode object, unlike an object literal with getters', () => {
    // An object literal with `get signal()` is made in dictionary mode, its
    // accessors in the old generation: they keep each attempt's closures,
    // and the whole attempt, past every scavenge until a full collection
    // (docs/benchmarks.md, run 10). The control shows the check can tell.
    let x = 0;
    const literal = {
      jobId: 'j1',
      get signal() {
        return x++;
      },
    };
    expect(hasFastProperties(literal)).toBe(false);
    expect(hasFastProperties(new AttemptContext(FIELDS, lazies()))).toBe(true);
  });

  it('carries the attempt’s fields', () => {
    const ctx = new AttemptContext(FIELDS, lazies());
    expect({ jobId: ctx.jobId, task: ctx.task, queue: ctx.queue, tenant: ctx.tenant, attempt: ctx.attempt, maxAttempts: ctx.maxAttempts }).toEqual(FIELDS);
  });

  it('makes the signal and the logger only when the handler reads them, and each read asks again', () => {
    const l = lazies();
    const ctx = new AttemptContext(FIELDS, l);
    expect(l.made).toEqual({ signal: 0, log: 0 });
    const { signal, log } = ctx;
    expect(signal.aborted).toBe(false);
    expect(typeof log.info).toBe('function');
    expect(l.made).toEqual({ signal: 1, log: 1 });
  });

  it('lets a handler destructure progress, retry and rateLimited', async () => {
    const l = lazies();
    const { progress, retry, rateLimited } = new AttemptContext(FIELDS, l);
    await progress({ done: 1 });
    expect(l.updates).toEqual([{ done: 1 }]);
    expect(() => retry({ delay: 10, reason: 'busy' })).toThrow(Retry);
    expect(() => rateLimited(1_000)).toThrow(UpstreamRateLimit);
  });
});
