import { expect, test } from 'vitest';
import { createRedis, viaBroker } from '../src/broker/connection.ts';
import { TEST_REDIS_URL } from './helpers.ts';

test('calls made while a connection opens share one wait: no listener per call, no leak warning', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  const redis = createRedis(TEST_REDIS_URL, 'producer');
  try {
    expect(redis.status).not.toBe('ready');
    const before = redis.listenerCount('ready');
    const calls = Array.from({ length: 50 }, (_, i) => viaBroker(redis, () => redis.echo(String(i))));
    // However many calls wait, the connection carries one more ready listener, not fifty.
    expect(redis.listenerCount('ready') - before).toBeLessThanOrEqual(1);
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    await new Promise((r) => setImmediate(r));
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  } finally {
    process.off('warning', onWarning);
    redis.disconnect();
  }
});
