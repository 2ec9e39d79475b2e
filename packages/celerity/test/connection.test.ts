import { Cluster } from 'ioredis';
import { expect, test } from 'vitest';
import { createRedis, viaBroker } from '../src/broker/connection.ts';
import { freePort } from '../src/cli/dev-redis.ts';
import { BrokerUnavailableError } from '../src/errors.ts';
import { TEST_REDIS_URL } from './helpers.ts';

test('calls made while a connection opens share one wait: no listener per call, no leak warning', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  const redis = createRedis({ brokerUrl: TEST_REDIS_URL, redisCluster: 'off' }, 'producer');
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

test('a cluster producer whose seeds do not answer fails fast with BrokerUnavailableError, as a single-server one does', async () => {
  const port = await freePort();
  const redis = createRedis({ brokerUrl: `redis://127.0.0.1:${port}`, redisCluster: 'on' }, 'producer');
  try {
    expect(redis).toBeInstanceOf(Cluster);
    // Refused once the first connection attempt has failed, not held until the cluster comes back.
    await expect(viaBroker(redis, () => redis.get('{x}:k'))).rejects.toBeInstanceOf(BrokerUnavailableError);
  } finally {
    redis.disconnect();
  }
});

test('a cluster between masters (failover) is BrokerUnavailableError, though the cluster object stays ready', async () => {
  // The errors ioredis and Redis gave enqueues in a local failover (3 masters,
  // 3 replicas, the queue's master SIGKILLed), while the cluster read `ready`.
  const redis = createRedis({ brokerUrl: TEST_REDIS_URL, redisCluster: 'off' }, 'producer');
  try {
    await viaBroker(redis, () => redis.ping());
    const seen = [
      'Too many Cluster redirections. Last error: ReplyError: MOVED 15557 127.0.0.1:30003',
      'Too many Cluster redirections. Last error: Error: Connection is closed.',
      'CLUSTERDOWN The cluster is down',
      'TRYAGAIN Multiple keys request during rehashing of slot',
    ];
    for (const message of seen) {
      const failed = viaBroker(redis, () => Promise.reject(new Error(message)));
      await expect(failed, message).rejects.toBeInstanceOf(BrokerUnavailableError);
    }
    // An error of the command itself is not the broker's absence.
    await expect(viaBroker(redis, () => Promise.reject(new Error('WRONGTYPE Operation against a key holding the wrong kind of value')))).rejects.not.toBeInstanceOf(BrokerUnavailableError);
  } finally {
    redis.disconnect();
  }
});
