import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { Cluster } from 'ioredis';
import { createRedis, type RedisClient, type RedisTarget } from '../broker/connection.ts';
import { CliError } from './cli-error.ts';

/** True when a Redis server answers PING at `url` within a second. */
export async function redisAnswers(url: string): Promise<boolean> {
  const redis = createRedis({ brokerUrl: url, redisCluster: 'off' }, 'probe');
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

export interface PrivateRedis {
  url: string;
  /** Asks the server to shut down and resolves when it has exited. */
  stop(): Promise<void>;
}

/**
 * For `npm start` on a fresh machine: when nothing answers at `url` but
 * `redis-server` is installed, start a private one with its data (AOF) in
 * `dataDir`, on the URL's port when that is a local one and free.
 */
export async function ensureDevRedis(url: string, dataDir: string): Promise<PrivateRedis | null> {
  if (await redisAnswers(url)) return null;
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    throw new CliError(`Redis is not reachable at ${url}: install and start it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL.`, 1);
  }
  const parsed = new URL(url);
  const local = ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(parsed.hostname);
  const wanted = local ? Number(parsed.port || 6379) : 0;
  const port = (await portFree(wanted)) ? wanted : await freePort();
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no', '--logfile', 'redis.log'], {
    stdio: 'ignore',
  });
  const privateUrl = `redis://127.0.0.1:${port}`;
  for (let i = 0; i < 50; i++) {
    if (await redisAnswers(privateUrl)) {
      const exited = new Promise<void>((res) => child.once('exit', () => res()));
      return {
        url: privateUrl,
        stop: async () => {
          if (child.exitCode === null) child.kill('SIGTERM');
          await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
        },
      };
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new CliError(`Could not start a private redis-server on port ${port} (see ${dir}/redis.log).`, 1);
}

function portFree(port: number): Promise<boolean> {
  if (port === 0) return Promise.resolve(false);
  return new Promise((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });
}

/** A TCP port free on 127.0.0.1 right now (tests and the benchmark use it too). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

/**
 * Deletes every key under `<prefix>:` (SCAN + UNLINK): how tests and the
 * benchmark clean up the private prefix each of them runs under. A URL
 * means one server; on a cluster, every master is scanned.
 */
export async function deleteRedisKeys(target: string | RedisTarget, prefix: string): Promise<number> {
  const redis = createRedis(typeof target === 'string' ? { brokerUrl: target, redisCluster: 'off' } : target, 'probe', { connectTimeout: 5_000 });
  let deleted = 0;
  try {
    await redis.connect();
    const servers: RedisClient[] = redis instanceof Cluster ? redis.nodes('master') : [redis];
    for (const server of servers) {
      let cursor = '0';
      do {
        const [next, keys] = await server.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, (c) => `\\${c}`)}:*`, 'COUNT', 1000);
        // One key per UNLINK: keys of different slots may not share a command on a cluster.
        if (keys.length > 0) deleted += redis instanceof Cluster ? (await Promise.all(keys.map((key) => server.unlink(key)))).reduce((a, b) => a + b, 0) : await server.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
  return deleted;
}
