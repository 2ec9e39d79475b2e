/**
 * The Lua scripts of the rate limits and tenant caps. Each runs atomically
 * on Redis and reads the time from Redis (`TIME`), so that the workers'
 * clocks never disagree about a window. Their KEYS and ARGV are documented as
 * BullMQ documents its own.
 */

/** Shared by both scripts: records why a job waits and undoes BullMQ's count of its start. */
const HOLD = `
local function holdJob(heldKey, reasonKey, jobKey, jobId, now, wait, reason, label)
  local untilMs = now + wait
  rcall("SET", reasonKey, cjson.encode({reason = reason, key = label, ["until"] = untilMs}), "PX", wait + 60000)
  rcall("ZADD", heldKey, untilMs, jobId)
  -- Entries whose hold ended a minute ago have lost their reason: trim them.
  rcall("ZREMRANGEBYSCORE", heldKey, "-inf", now - 60000)
  -- BullMQ's move to active counted a start: the job did not start.
  local started = rcall("HINCRBY", jobKey, "ats", -1)
  if started <= 0 then
    rcall("HDEL", jobKey, "processedOn")
  end
end
`;

/**
 * Admits a job past its rate limits and its tenant's concurrency cap, or
 * holds it back. All or nothing: a job held by one limit spends none of the
 * others.
 *
 * Input:
 *   KEYS[1] held index: ZSET job id -> end of its hold (ms)
 *   KEYS[2] this job's wait reason (string, JSON)
 *   KEYS[3] this job's BullMQ hash
 *   KEYS[4] the tenant's running set: ZSET job id -> end of its lease (ms); unused when ARGV[3] is 0
 *   KEYS[2 + 3i], KEYS[3 + 3i], KEYS[4 + 3i] for rate limit i (1..n): its window (ZSET of starts scored
 *           by time), its pause (string), its queue of held jobs (ZSET job id -> the time it was given)
 *
 *   ARGV[1] job id
 *   ARGV[2] n, the number of rate limits
 *   ARGV[3] the tenant's cap; 0 for none
 *   ARGV[4] lease of a running slot, ms (the lock duration)
 *   ARGV[5] prefix of this queue's job keys ("<prefix>:<queue>:"), to find a job's BullMQ lock
 *   ARGV[6] how long a job over its cap waits before it is tried again, ms
 *   ARGV[7] the cap's label
 *   ARGV[5 + 3i], ARGV[6 + 3i], ARGV[7 + 3i] for rate limit i: max starts, window ms, label
 *
 * Output:
 *   {0, now} admitted: a start is counted in every window, the job holds a slot of the cap, and
 *            its `processedOn` is the admission's time (the start its history shows is the one the limits counted)
 *   {1, wait ms, reason, label} held: its reason is written, BullMQ's count of its start undone
 */
export const GATE_SCRIPT = `
local rcall = redis.call
${HOLD}
local t = rcall("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobId = ARGV[1]
local n = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local wait, reason, label, binding = 0, nil, nil, 0
local slots = {}
local function consider(ms, why, what, limit)
  if ms > wait then
    wait, reason, label, binding = ms, why, what, limit
  end
end

for i = 1, n do
  local windowKey = KEYS[2 + 3 * i]
  local heldKey = KEYS[4 + 3 * i]
  local max = tonumber(ARGV[5 + 3 * i])
  local per = tonumber(ARGV[6 + 3 * i])
  local name = ARGV[7 + 3 * i]
  local paused = rcall("PTTL", KEYS[3 + 3 * i])
  if paused > 0 then
    consider(paused, "rate_limit_pause", name, 0)
  end
  -- The window holds the starts in (now - per, now].
  rcall("ZREMRANGEBYSCORE", windowKey, "-inf", now - per)
  -- A job held before keeps its turn: only the jobs given an earlier time
  -- are ahead of it (a moment early or late, it is not sent to the back).
  local mine = rcall("ZSCORE", heldKey, jobId)
  rcall("ZREM", heldKey, jobId)
  rcall("ZREMRANGEBYSCORE", heldKey, "-inf", now)
  local count = rcall("ZCARD", windowKey)
  if count >= max then
    -- Held jobs are given the slots as they free, one each, in turn: the
    -- j-th frees when the start (count - max + j mod max) leaves the window,
    -- or the start that will take its place, per ms later for each round.
    -- (More than max starts are in the window when max was lowered since.)
    -- So a backlog over the limit wakes a window's worth at a time, not all at once.
    local ahead
    if mine then
      ahead = rcall("ZCOUNT", heldKey, "-inf", "(" .. mine)
    else
      ahead = rcall("ZCARD", heldKey)
    end
    local index = count - max + (ahead % max)
    local entry = rcall("ZRANGE", windowKey, index, index, "WITHSCORES")
    slots[i] = tonumber(entry[2]) + per * (1 + math.floor(ahead / max))
    consider(slots[i] - now, "rate_limit", name, i)
  end
end

local running = KEYS[4]
if cap > 0 and not rcall("ZSCORE", running, jobId) then
  -- Leases past their end are kept while the job's BullMQ lock lives (its
  -- worker renews it), and dropped once the lock is gone (a dead worker).
  local expired = rcall("ZRANGEBYSCORE", running, "-inf", now)
  for _, id in ipairs(expired) do
    if rcall("EXISTS", ARGV[5] .. id .. ":lock") == 1 then
      rcall("ZADD", running, now + lease, id)
    else
      rcall("ZREM", running, id)
    end
  end
  if rcall("ZCARD", running) >= cap then
    consider(tonumber(ARGV[6]), "tenant_cap", ARGV[7], 0)
  end
end

if wait > 0 then
  if binding > 0 then
    -- Only the limit that decides the wait keeps the job's turn.
    local heldKey = KEYS[4 + 3 * binding]
    rcall("ZADD", heldKey, slots[binding], jobId)
    local ttl = slots[binding] - now + tonumber(ARGV[6 + 3 * binding])
    if rcall("PTTL", heldKey) < ttl then
      rcall("PEXPIRE", heldKey, ttl)
    end
  end
  holdJob(KEYS[1], KEYS[2], KEYS[3], jobId, now, wait, reason, label)
  return {1, wait, reason, label}
end

for i = 1, n do
  local windowKey = KEYS[2 + 3 * i]
  rcall("ZADD", windowKey, now, jobId .. "@" .. now)
  rcall("PEXPIRE", windowKey, tonumber(ARGV[6 + 3 * i]))
end
if cap > 0 then
  -- A job already in the set is a re-run after a stall: same slot, new lease.
  rcall("ZADD", running, now + lease, jobId)
end
rcall("HSET", KEYS[3], "processedOn", now)
rcall("DEL", KEYS[2])
rcall("ZREM", KEYS[1], jobId)
return {0, now}
`;

/**
 * `ctx.rateLimited(ms)`: pauses a rate limit for every worker and holds the
 * job back for as long.
 *
 * Input:
 *   KEYS[1] held index
 *   KEYS[2] this job's wait reason
 *   KEYS[3] this job's BullMQ hash
 *   KEYS[4] the pause of the limit; unused when ARGV[4] is 0
 *
 *   ARGV[1] job id
 *   ARGV[2] ms of the pause
 *   ARGV[3] the limit's label (or the task's, when it has no limit to pause)
 *   ARGV[4] 1 to pause KEYS[4], 0 to hold this job alone
 *
 * Output: the ms the job waits (a longer pause already running wins).
 */
export const PAUSE_SCRIPT = `
local rcall = redis.call
${HOLD}
local t = rcall("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[2])
if ARGV[4] == "1" then
  local current = rcall("PTTL", KEYS[4])
  if current > wait then
    wait = current
  elseif wait > 0 then
    rcall("SET", KEYS[4], "1", "PX", wait)
  end
end
if wait < 1 then
  wait = 1
end
holdJob(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now, wait, "rate_limit_pause", ARGV[3])
return wait
`;
