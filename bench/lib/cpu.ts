/**
 * Where the CPU went during a phase: the bench process, the worker
 * processes, Redis and PostgreSQL (every `postgres` process on the machine).
 * Read from /proc (Linux; elsewhere the process figures are null) and from
 * Redis' INFO cpu. Redis and PostgreSQL are shared with anything else using
 * them, so these figures are only clean on an otherwise idle machine.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { Cluster } from 'ioredis';
import type { RedisClient } from '../../packages/celerity/src/broker/connection.ts';

const TICK_MS = 10; // CLK_TCK = 100 on Linux.

export interface CpuSnapshot {
  bench: number;
  children: Map<number, number>;
  postgres: Map<number, number>;
  redis: number;
}

/** CPU ms of each phase's participants. */
export interface CpuUse {
  bench_ms: number;
  workers_ms: number | null;
  redis_ms: number | null;
  postgres_ms: number | null;
}

/** CPU ms (user + system, every thread) a process has used so far; null where /proc cannot tell. */
export function procCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * TICK_MS;
  } catch {
    return null;
  }
}

function postgresPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'postgres';
        } catch {
          return false;
        }
      })
      .map(Number);
  } catch {
    return [];
  }
}

/** Redis' CPU: the server's, or on a cluster the sum of its masters'. */
async function redisCpuMs(redis: RedisClient): Promise<number> {
  const servers = redis instanceof Cluster ? redis.nodes('master') : [redis];
  let ms = 0;
  for (const server of servers) {
    const info = await server.info('cpu');
    const user = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? NaN);
    const sys = Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? NaN);
    ms += (user + sys) * 1000;
  }
  return ms;
}

export async function cpuSnapshot(redis: RedisClient, childPids: number[]): Promise<CpuSnapshot> {
  const usage = process.cpuUsage();
  const children = new Map<number, number>();
  for (const pid of childPids) {
    const ms = procCpuMs(pid);
    if (ms !== null) children.set(pid, ms);
  }
  const postgres = new Map<number, number>();
  for (const pid of postgresPids()) {
    const ms = procCpuMs(pid);
    if (ms !== null) postgres.set(pid, ms);
  }
  return { bench: (usage.user + usage.system) / 1000, children, postgres, redis: await redisCpuMs(redis).catch(() => NaN) };
}

export function cpuUse(a: CpuSnapshot, b: CpuSnapshot): CpuUse {
  const sum = (before: Map<number, number>, after: Map<number, number>) => {
    if (after.size === 0) return null;
    let total = 0;
    for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0);
    return total;
  };
  return {
    bench_ms: Math.round(b.bench - a.bench),
    workers_ms: sum(a.children, b.children),
    redis_ms: Number.isFinite(b.redis - a.redis) ? Math.round(b.redis - a.redis) : null,
    postgres_ms: sum(a.postgres, b.postgres),
  };
}
