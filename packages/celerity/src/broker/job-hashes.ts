import type { IRedisClient } from 'bullmq';
import type { JobFacts } from '../job-record.ts';
import type { RedisClient } from './connection.ts';
import { jobLogMarker } from './keys.ts';

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
 * The hash fields a job's record is built from ({@link JobFacts}), and the
 * log marker, read with `HMGET` in {@link readJobFactsAt}.
 */
const FACT_FIELDS = [
  'name',
  'data',
  'opts',
  'timestamp',
  'ats',
  'attemptsMade',
  'atm',
  'processedOn',
  'finishedOn',
  'returnvalue',
  'failedReason',
  'stacktrace',
  'progress',
  jobLogMarker.field,
] as const;

/**
 * What the recorder needs of the jobs of `ids`, read in one command: the
 * fields of each job that its record is built from, as `Job.fromId` gives
 * them (undefined for a job whose hash is gone), and whether it kept log
 * lines (`jobLogMarker`).
 *
 * Why not `Job.fromId`'s job: building a BullMQ `Job` (decoding all its
 * options, a bound function and a backend each) took a few percent of a
 * recording worker's CPU, for a record that reads a dozen fields.
 */
export async function readJobFactsAt(client: RedisClient | IRedisClient, keyOf: (id: string) => string, ids: readonly string[]): Promise<{ job: JobFacts | undefined; logged: boolean }[]> {
  const replies = await readHashes(client, ids.map(keyOf), FACT_FIELDS);
  return replies.map((values, i) => {
    // A job hash always has its name and data; all nil is a hash that is gone.
    if (values.every((v) => v == null)) return { job: undefined, logged: false };
    return { job: factsFromFields(values, ids[i]!), logged: values[FACT_FIELDS.length - 1] != null };
  });
}

/**
 * A job's facts from its hash's fields, parsed as BullMQ 6.7 parses them:
 * `getJobData` (the module-private `rawToJobJson` in
 * redis-queue-backend.js), then `Job.fromJSON` and the `Job` constructor.
 * BullMQ exports no way to read a job from a hash read elsewhere, so this
 * mirrors it; test/bullmq-assumptions.test.ts checks that the record built
 * from these facts is the one built from `Job.fromId`, for jobs in every
 * state.
 */
function factsFromFields(values: readonly (string | null)[], id: string): JobFacts {
  const [name, data, opts, timestamp, ats, attemptsMade, atm, processedOn, finishedOn, returnvalue, failedReason, stacktrace, progress] = values;
  const options = JSON.parse(opts || '{}') as Record<string, unknown>;
  return {
    id,
    name: name ?? (undefined as unknown as string),
    data: JSON.parse(data || '{}'),
    // The Job constructor's default; no other option is read for a record.
    opts: { attempts: 'attempts' in options ? (options.attempts as number) : 0 },
    timestamp: Number.parseInt(timestamp as string, 10),
    attemptsStarted: Number.parseInt(ats || '0', 10),
    attemptsMade: Number.parseInt(attemptsMade || atm || '0', 10),
    processedOn: (processedOn && Number.parseInt(processedOn, 10)) || undefined,
    finishedOn: (finishedOn && Number.parseInt(finishedOn, 10)) || undefined,
    returnvalue: typeof returnvalue === 'string' ? parsedOrUndefined(returnvalue) : null,
    failedReason: failedReason || (undefined as unknown as string),
    stacktrace: traces(stacktrace ?? null),
    progress: JSON.parse(progress || '0'),
  };
}

/** BullMQ's `getReturnValue`: a value that is not JSON reads as undefined. */
function parsedOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** BullMQ's `getTraces`: anything but a JSON array reads as no traces. */
function traces(text: string | null): string[] {
  if (!text) return [];
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) ? (parsed as string[]) : [];
  } catch {
    return [];
  }
}
