/**
 * The queue hints a process keeps (`Broker.hintQueue`): the queue an id was
 * last seen in, for the last 10,000 ids, forgetting the oldest first.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Broker } from '../src/broker/broker.ts';
import { loadConfig } from '../src/config.ts';
import { TEST_REDIS_URL } from './helpers.ts';

let broker: Broker | undefined;
afterEach(async () => {
  await broker?.close();
  broker = undefined;
});

describe('queue hints', () => {
  it('keep where an id was last seen, and forget the oldest ids past 10,000', () => {
    broker = new Broker(loadConfig({ env: { REDIS_URL: TEST_REDIS_URL } }));
    broker.hintQueue('first', 'a');
    broker.hintQueue('chosen', 'a');
    // A chosen id may come back in another queue once its job is gone.
    broker.hintQueue('chosen', 'b');
    expect(broker.queueHint('chosen')).toBe('b');
    for (let i = 0; i < 9_998; i++) broker.hintQueue(`id-${i}`, 'c');
    expect(broker.queueHint('first'), 'the 10,000th id keeps the first').toBe('a');
    broker.hintQueue('one-more', 'c');
    expect(broker.queueHint('first')).toBeUndefined();
    expect(broker.queueHint('chosen')).toBe('b');
    expect(broker.queueHint('one-more')).toBe('c');
    expect(broker.queueHint('id-0')).toBe('c');
  });
});
