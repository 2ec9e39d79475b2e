import { Job, type IRedisClient, type Queue } from 'bullmq';
import type { RedisClient } from './connection.ts';

/**
 * Reads many job hashes in one command.
 *
 * KEYS: the job hashes, all of one prefix (so one Redis Cluster slot, under
 * the prefix's hash tag).
 * ARGV: the fields to read (`HMGET`); none reads every field (`HGETALL`).
 * Returns one reply per key, in order: `HMGET`'s values (nil for a missing
 * field or hash), or `HGETALL`'s flat field/value list (empty for a hash
 * that is gone).
 */
const READ_HASHES_LUA = `
local out = {}
for i = 1, #KEYS do
  if #ARGV == 0 then
    out[i] = redis.call('HGETALL', KEYS[i])
  else
    out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
  end
end
return out`;

/**
 * Why one script rather than a command per job: the recorder reads a batch's
 * hashes, up to a hundred at a time. One `HGETALL` per job on an
 * auto-pipelined connection went out in one write, but ioredis builds each
 * batch as a `Pipeline` whose `length` is a getter defined on the instance;
 * V8 keeps such an accessor in the old generation, and it kept the whole
 * batch (its commands and every reply) alive past each scavenge until a full
 * collection. One command per chunk builds no pipeline, and Redis parses one
 * command instead of a hundred (docs/benchmarks.md, run 10).
 */
export async function readHashes(client: RedisClient | IRedisClient, keys: readonly string[], fields: readonly string[] = []): Promise<(string | null)[][]> {
  if (keys.length === 0) return [];
  // A queue's client (`IRedisClient`) is BullMQ's proxy over the ioredis
  // connection Celerity made (src/broker/connection.ts); it forwards `eval`.
  return (await (client as RedisClient).eval(READ_HASHES_LUA, keys.length, ...keys, ...fields)) as (string | null)[][];
}

/**
 * The jobs of `ids`, read in one command: what `Job.fromId` gives for each
 * (undefined for a job whose hash is gone), with the raw hash beside it for
 * fields BullMQ does not map (Celerity's own, such as the log marker).
 */
export async function readJobsAt(queue: Queue, client: RedisClient | IRedisClient, ids: readonly string[]): Promise<{ job: Job | undefined; hash: Record<string, string> }[]> {
  const replies = await readHashes(
    client,
    ids.map((id) => queue.toKey(id)),
  );
  return replies.map((flat, i) => {
    if (flat.length === 0) return { job: undefined, hash: {} };
    const hash: Record<string, string> = {};
    for (let j = 0; j + 1 < flat.length; j += 2) hash[flat[j]!] = flat[j + 1]!;
    return { job: jobFromHash(queue, hash, ids[i]!), hash };
  });
}

/**
 * A BullMQ job from its raw hash, as `Job.fromId` makes it: BullMQ 6.7's
 * `getJobData` (the module-private `rawToJobJson` in
 * redis-queue-backend.js), then `Job.fromJSON`. BullMQ exports no way to
 * build a job from a hash read elsewhere, so this mirrors it;
 * test/bullmq-assumptions.test.ts checks the two give the same job for jobs
 * in every state.
 */
function jobFromHash(queue: Queue, raw: Record<string, string | undefined>, id: string): Job {
  const json = {
    id: raw.id,
    name: raw.name,
    data: raw.data || '{}',
    opts: Job.optsFromJSON(raw.opts),
    progress: JSON.parse(raw.progress || '0'),
    delay: Number.parseInt(raw.delay as string, 10),
    priority: Number.parseInt(raw.priority as string, 10),
    timestamp: Number.parseInt(raw.timestamp as string, 10),
    attemptsStarted: Number.parseInt(raw.ats || '0', 10),
    attemptsMade: Number.parseInt(raw.attemptsMade || raw.atm || '0', 10),
    stalledCounter: Number.parseInt(raw.stc || '0', 10),
    finishedOn: raw.finishedOn ? Number.parseInt(raw.finishedOn, 10) : undefined,
    processedOn: raw.processedOn ? Number.parseInt(raw.processedOn, 10) : undefined,
    repeatJobKey: raw.rjk,
    debounceId: raw.deid,
    deduplicationId: raw.deid,
    failedReason: raw.failedReason,
    deferredFailure: raw.defa,
    stacktrace: raw.stacktrace,
    returnvalue: raw.returnvalue,
    parentKey: raw.parentKey,
    parent: raw.parent ? JSON.parse(raw.parent) : undefined,
    processedBy: raw.pb,
  };
  return Job.fromJSON(queue, json as unknown as Parameters<typeof Job.fromJSON>[1], id);
}
