import type { RedisClient } from '../broker/connection.ts';
import { RECORDER_GROUP } from './recorder-read.ts';

/**
 * How far the SQL history trails one queue's event stream: the age of the
 * oldest entry the recorders' group has not acknowledged, whether no
 * recorder has read it yet or one read it and has not written it (a stuck
 * batch, a dead recorder whose entries wait to be claimed). Measured from
 * Redis, so it counts every recorder of every process, and it grows while
 * they all stand still. Ages use Redis' clock, as the stream ids do.
 *
 * `null`: the stream has no recorders' group (no recorder ever ran on it), so
 * there is no lag to speak of.
 */
export async function historyLagMs(redis: RedisClient, eventsKey: string): Promise<number | null> {
  const [[, groups], [, time]] = (await redis.multi().xinfo('GROUPS', eventsKey).time().exec()) as [[Error | null, unknown[][]], [Error | null, [string, string]]];
  // A stream that does not exist yet makes XINFO fail inside the MULTI.
  if (!Array.isArray(groups)) return null;
  const group = groups.map(pairs).find((g) => g.name === RECORDER_GROUP);
  if (!group) return null;
  const now = Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000);
  let oldest: string | undefined;
  if (Number(group.pending) > 0) {
    const summary = (await redis.xpending(eventsKey, RECORDER_GROUP)) as [number, string | null, string | null, unknown];
    if (summary[1]) oldest = summary[1];
  }
  if (oldest === undefined) {
    // Nothing pending: the oldest unrecorded entry, if any, is the first one not yet delivered.
    const next = (await redis.xrange(eventsKey, `(${String(group['last-delivered-id'])}`, '+', 'COUNT', 1)) as [string, string[]][];
    if (next.length > 0) oldest = next[0]![0];
  }
  if (oldest === undefined) return 0;
  return Math.max(0, now - Number(oldest.slice(0, oldest.indexOf('-'))));
}

function pairs(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}
