import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { InvalidInputError, TaskDefinitionError } from '../src/errors.ts';
import { backoffDelay, DEFAULT_BACKOFF, DEFAULT_QUEUE, DEFAULT_RETRIES, defineTask, parseInput, type BackoffPolicy } from '../src/task.ts';

const input = z.object({ a: z.number(), b: z.number() });
const handler = async ({ a, b }: { a: number; b: number }) => ({ sum: a + b });

describe('defineTask', () => {
  it('applies defaults', () => {
    const task = defineTask({ name: 'math.add', input, handler });
    expect(task.name).toBe('math.add');
    expect(task.queue).toBe(DEFAULT_QUEUE);
    expect(task.retries).toBe(DEFAULT_RETRIES);
    expect(task.backoff).toEqual(DEFAULT_BACKOFF);
    expect(task.description).toBeUndefined();
    expect(task.inputSchema).toBe(input);
    expect(task.handler).toBe(handler);
  });

  it('merges a partial backoff over the default and keeps the options given', () => {
    const task = defineTask({ name: 'x:y-z_1.2', input, handler, queue: 'emails.high', retries: 0, backoff: { base: 10 }, description: 'd' });
    expect(task.queue).toBe('emails.high');
    expect(task.retries).toBe(0);
    expect(task.backoff).toEqual({ base: 10, max: DEFAULT_BACKOFF.max, jitter: DEFAULT_BACKOFF.jitter });
    expect(task.description).toBe('d');
  });

  it.each([
    ['an empty name', { name: '' }, /Invalid task name ""/],
    ['a name with a space', { name: 'math add' }, /Invalid task name "math add"/],
    ['a name with a slash', { name: 'math/add' }, /Invalid task name/],
    ['a name over 200 characters', { name: 'a'.repeat(201) }, /Invalid task name/],
    ['a queue with a colon', { queue: 'a:b' }, /Invalid queue name "a:b"/],
    ['an empty queue', { queue: '' }, /Invalid queue name ""/],
    ['negative retries', { retries: -1 }, /retries must be a non-negative integer/],
    ['fractional retries', { retries: 1.5 }, /retries must be a non-negative integer/],
    ['a negative backoff base', { backoff: { base: -1 } }, /backoff needs 0 <= base <= max/],
    ['a NaN backoff base', { backoff: { base: Number.NaN } }, /backoff needs 0 <= base <= max/],
    ['a backoff max below base', { backoff: { base: 100, max: 50 } }, /backoff needs 0 <= base <= max/],
    ['a missing handler', { handler: undefined }, /handler must be a function/],
  ])('rejects %s with TaskDefinitionError', (_label, override, message) => {
    const def = { name: 'ok.task', input, handler, ...override } as Parameters<typeof defineTask>[0];
    let error: unknown;
    try {
      defineTask(def);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(TaskDefinitionError);
    expect((error as TaskDefinitionError).code).toBe('invalid_task_definition');
    expect((error as Error).message).toMatch(message);
  });

  it('accepts a 200-character name and base == max', () => {
    expect(() => defineTask({ name: 'a'.repeat(200), input, handler, backoff: { base: 5, max: 5 } })).not.toThrow();
  });
});

describe('parseInput', () => {
  const order = defineTask({
    name: 'shop.order',
    input: z.object({
      customer: z.object({ email: z.string().email(), name: z.string().min(1) }),
      items: z.array(z.object({ sku: z.string(), qty: z.number().int().positive() })).min(1),
      note: z.string().optional(),
      coupon: z.string().default('none'),
    }),
    handler: () => null,
  });

  it('returns the parsed data (with defaults) for valid input', () => {
    const parsed = parseInput(order, { customer: { email: 'a@b.co', name: 'A' }, items: [{ sku: 's', qty: 1 }] });
    expect(parsed).toEqual({ customer: { email: 'a@b.co', name: 'A' }, items: [{ sku: 's', qty: 1 }], coupon: 'none' });
  });

  it('throws InvalidInputError listing every bad field path', () => {
    let error: unknown;
    try {
      parseInput(order, {
        customer: { email: 'not-an-email', name: '' },
        items: [
          { sku: 's', qty: 1 },
          { sku: 7, qty: 1 },
          { sku: 's', qty: -2 },
        ],
        note: 3,
      });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    const e = error as InvalidInputError;
    expect(e.code).toBe('invalid_input');
    expect(e.httpStatus).toBe(422);
    expect(e.details.task).toBe('shop.order');
    const paths = e.details.issues.map((i) => i.path).sort();
    expect(paths).toEqual(['customer.email', 'customer.name', 'items.1.sku', 'items.2.qty', 'note']);
    for (const issue of e.details.issues) {
      expect(issue.message.length).toBeGreaterThan(0);
      expect(e.message).toContain(`${issue.path}: ${issue.message}`);
    }
    expect(e.message).toMatch(/^Invalid input for task "shop\.order": /);
  });

  it('names the root "(root)" when the input is not an object at all', () => {
    let error: unknown;
    try {
      parseInput(order, 'nope');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as InvalidInputError).details.issues).toEqual([expect.objectContaining({ path: '' })]);
    expect((error as Error).message).toContain('(root): ');
  });
});

describe('backoffDelay', () => {
  const none: BackoffPolicy = { base: 100, max: 1_000, jitter: 'none' };

  it('grows exponentially from base and is capped at max', () => {
    expect([1, 2, 3, 4, 5, 6, 10, 60].map((r) => backoffDelay(none, r))).toEqual([100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000]);
  });

  it('treats retry numbers below 1 as the first retry', () => {
    expect(backoffDelay(none, 0)).toBe(100);
    expect(backoffDelay(none, -3)).toBe(100);
  });

  it('is zero with a zero base', () => {
    expect(backoffDelay({ base: 0, max: 0, jitter: 'none' }, 5)).toBe(0);
  });

  it('full jitter scales the computed delay by the random draw', () => {
    const full: BackoffPolicy = { ...none, jitter: 'full' };
    expect(backoffDelay(full, 3, () => 0)).toBe(0);
    expect(backoffDelay(full, 3, () => 0.5)).toBe(200);
    expect(backoffDelay(full, 3, () => 0.999999)).toBe(400);
    expect(backoffDelay(full, 9, () => 0.25)).toBe(250);
  });

  it('full jitter with the real random source stays in [0, computed]', () => {
    const full: BackoffPolicy = { base: 100, max: 1_000, jitter: 'full' };
    for (let retry = 1; retry <= 8; retry++) {
      const computed = backoffDelay({ ...full, jitter: 'none' }, retry);
      const draws = Array.from({ length: 300 }, () => backoffDelay(full, retry));
      for (const d of draws) {
        expect(Number.isInteger(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(computed);
      }
      // Actually jittered, not constant.
      expect(new Set(draws).size).toBeGreaterThan(10);
    }
  });
});
