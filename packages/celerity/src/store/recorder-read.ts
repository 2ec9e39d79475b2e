import type { RedisClient } from '../broker/connection.ts';
import { jobLogMarker } from '../broker/keys.ts';

/**
 * The consumer group of every recorder, on every queue's event stream: each
 * entry goes to one recorder of it, and stays pending in it until written.
 */
export const RECORDER_GROUP = 'celerity-recorder';

/** Entries whose values add up to more than this many bytes are left out of the batch's JSON and read apart ({@link readBatch}). */
export const LARGE_ENTRY_BYTES = 16_384;

/** The hash fields the happy path needs, in the order the batch script and the recorder's own reads take them. */
export const ATTEMPT_FIELDS = ['ats', 'processedOn', 'finishedOn', jobLogMarker.field] as const;

/**
 * The recorder's read of one batch, in one script: `XREADGROUP` over the
 * queues' event streams (non-blocking: a script cannot block), and for each
 * job with an `active` or `completed` entry in it the few fields of its hash
 * the happy path needs, all returned as one JSON text.
 *
 * Why a script: read as `XREADGROUP`'s reply, a batch of 2,000 entries is
 * 2,000 nested arrays of six to eight strings each, which ioredis parses
 * into buffers and then converts to strings one by one; the happy path's
 * hash fields came in a second round trip. As one JSON text, Node parses
 * the batch in one native call. Measured on a stream of 20,000 drained
 * jobs (adds and drain, 80,000 entries) read, folded and acknowledged:
 * Node's CPU 17 µs a job → 5.5, Redis's 9.3 → 9.8; in the benchmark's
 * `history_cost`, the recorder process's CPU a drained job 15 → 10.5-11 µs
 * and the history's 30 → 27.5 (docs/benchmarks.md, run 29).
 *
 * KEYS: the event streams, all of one prefix (so one Redis Cluster slot,
 * under the prefix's hash tag).
 * ARGV[1]: the consumer group; ARGV[2]: this consumer; ARGV[3]: the most
 * entries per stream (`COUNT`); ARGV[4]: the id to read from, `>` (entries
 * never delivered) or `0` (this consumer's pending ones); ARGV[5 … 4 + f]:
 * the hash fields to read, {@link ATTEMPT_FIELDS} in order (the script is
 * built with their count, f); ARGV[4 + f + i]: the job hash key prefix of
 * KEYS[i] (`<prefix>:<queue>:`).
 *
 * Returns an empty string when nothing was read and the id was `0`. When
 * nothing was read and the id was `>`, `["idle", lastIds]`: each stream's
 * last entry id (`0-0` for none), every one of them delivered already, for
 * {@link waitForEntries}. Otherwise a JSON array with, per stream that had
 * entries, `[key, entries, facts]`: `entries` as `XREADGROUP` gives them
 * (`[id, [field, value, …]]`, `false` for an entry deleted after delivery),
 * `facts` `[jobId, …the fields' values]` (`false` for a
 * field the hash lacks; all `false` for a hash that is gone). An entry whose
 * values pass {@link LARGE_ENTRY_BYTES} comes as `[id, 0]`, to be read on its
 * own: one JSON text for a batch of large results (a `completed` entry
 * carries the job's result) could pass the longest string V8 makes (about
 * 512 MB), and the batch would fail for ever.
 *
 * Relies on BullMQ's stream entries naming their event and job in the
 * fields `event` and `jobId` (checked in test/bullmq-assumptions.test.ts).
 */
const READ_BATCH_LUA = `
local n = #KEYS
local nf = ${ATTEMPT_FIELDS.length}
local fields = {}
for f = 1, nf do fields[f] = ARGV[4 + f] end
local args = {'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
local prefixOf = {}
for i = 1, n do
  args[6 + i] = KEYS[i]
  args[6 + n + i] = ARGV[4]
  prefixOf[KEYS[i]] = ARGV[4 + nf + i]
end
local reply = redis.call('XREADGROUP', unpack(args))
local out = {}
if reply then
  for s = 1, #reply do
    local key, entries = reply[s][1], reply[s][2]
    if #entries > 0 then
      local prefix = prefixOf[key]
      local seen, facts = {}, {}
      for i = 1, #entries do
        local body = entries[i][2]
        if body then
          local event, job
          local size = 0
          for j = 1, #body - 1, 2 do
            local field = body[j]
            size = size + #body[j + 1]
            if field == 'event' then event = body[j + 1] elseif field == 'jobId' then job = body[j + 1] end
          end
          if size > ${LARGE_ENTRY_BYTES} then entries[i][2] = 0 end
          if job and (event == 'active' or event == 'completed') and not seen[job] then
            seen[job] = true
            local h = redis.call('HMGET', prefix .. job, unpack(fields))
            local fact = {job}
            for f = 1, nf do fact[f + 1] = h[f] or false end
            facts[#facts + 1] = fact
          end
        end
      end
      out[#out + 1] = {key, entries, facts}
    end
  end
end
if #out > 0 then return cjson.encode(out) end
if ARGV[4] ~= '>' then return '' end
local last = {}
for i = 1, n do
  local tail = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  last[i] = tail[1] and tail[1][1] or '0-0'
end
return cjson.encode({'idle', last})`;

/** The few fields of a job hash the happy path needs; null when the hash is gone. */
export interface AttemptFacts {
  /** Attempts started (`ats`): 1 means the events in hand are of the first and only attempt. */
  started: number;
  processedOn: number | undefined;
  finishedOn: number | undefined;
  /** The job kept log lines (`jobLogMarker`): its lines go to `job_logs` once it is done. */
  logged: boolean;
}

/** One stream's part of a batch: its entries as `XREADGROUP` gives them. */
export type StreamEntries = [key: string, entries: [id: string, body: string[] | null][]];

/** What one read gave: the entries of each stream that had some, and the facts of the jobs they start or end, by stream key and job id. */
export interface Batch {
  streams: StreamEntries[];
  facts: Map<string, Map<string, AttemptFacts | null>>;
}

/** Nothing new: each stream's last entry id, all delivered already (see {@link waitForEntries}). */
export interface Idle {
  idle: string[];
}

/**
 * Reads one batch (see {@link READ_BATCH_LUA}): entries never delivered
 * (`from` `>`), or this consumer's pending ones (`0`). Null when `0` found
 * none; {@link Idle} when `>` found none.
 */
export async function readBatch(
  redis: RedisClient,
  streams: readonly { key: string; jobKeyPrefix: string }[],
  group: string,
  consumer: string,
  count: number,
  from: '>' | '0',
): Promise<Batch | Idle | null> {
  const text = (await redis.eval(READ_BATCH_LUA, streams.length, ...streams.map((s) => s.key), group, consumer, count, from, ...ATTEMPT_FIELDS, ...streams.map((s) => s.jobKeyPrefix))) as string;
  if (text === '') return null;
  const parsed = JSON.parse(text) as ['idle', string[]] | [string, [string, string[] | false][], unknown][];
  if (parsed[0] === 'idle') return { idle: parsed[1] as string[] };
  const batch: Batch = { streams: [], facts: new Map() };
  for (const [key, entries, facts] of parsed as [string, [string, string[] | false | 0][], unknown][]) {
    const large: [string, string[] | false | 0][] = [];
    for (const entry of entries) {
      // A deleted entry's body is `false` in the JSON; Node's readers expect null.
      if (entry[1] === false) (entry as unknown as [string, null])[1] = null;
      else if (entry[1] === 0) large.push(entry);
    }
    // Read apart, each on its own (a large result is rare): gone meanwhile (trimmed), it reads as deleted.
    await Promise.all(
      large.map(async (entry) => {
        const found = (await redis.xrange(key, entry[0], entry[0])) as [string, string[]][];
        (entry as unknown as [string, string[] | null])[1] = found[0]?.[1] ?? null;
      }),
    );
    batch.streams.push([key, entries as [string, string[] | null][]]);
    const byJob = new Map<string, AttemptFacts | null>();
    // cjson writes an empty table as `{}`.
    if (Array.isArray(facts)) {
      for (const [job, ...values] of facts as [string, ...(string | false)[]][]) byJob.set(job, attemptFactsOf(values));
    }
    batch.facts.set(key, byJob);
  }
  return batch;
}

/**
 * Waits until one of the streams has an entry past `lastIds` (as an idle
 * {@link readBatch} gave them), or `blockMs` passes. Reads nothing for the
 * group: the next {@link readBatch} does. Everything up to `lastIds` was
 * delivered when they were taken, so no entry slips between the two.
 */
export async function waitForEntries(redis: RedisClient, keys: readonly string[], lastIds: readonly string[], blockMs: number): Promise<void> {
  await redis.xread('COUNT', 1, 'BLOCK', blockMs, 'STREAMS', ...keys, ...lastIds);
}

/** A job's {@link AttemptFacts} from the values of {@link ATTEMPT_FIELDS} (null or `false` where the hash has none); null for a hash that is gone. */
export function attemptFactsOf([ats, processedOn, finishedOn, logged]: readonly (string | false | null | undefined)[]): AttemptFacts | null {
  if (ats == null || ats === false) return null;
  return { started: Number(ats), processedOn: optionalNumber(processedOn), finishedOn: optionalNumber(finishedOn), logged: logged != null && logged !== false };
}

function optionalNumber(value: string | false | null | undefined): number | undefined {
  const n = value == null || value === false ? Number.NaN : Number(value);
  return Number.isFinite(n) ? n : undefined;
}
