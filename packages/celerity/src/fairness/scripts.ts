/**
 * The fair stage's Lua scripts. Each runs atomically in Redis, so the choice
 * of the next tenant and the pop of its job hold across every process.
 *
 * Keys of the stage are built inside the scripts from `base`
 * (`<prefix>:celerity:fair:<queue>:`, src/broker/fair-keys.ts) because a
 * tenant's backlog key is only known there; like BullMQ's own scripts, which
 * build job keys the same way, they rely on the prefix's hash tag to share a
 * slot on Redis Cluster.
 *
 * Scheduling is start-time fair queuing in its stride form: every tenant with
 * a backlog sits in `active` scored by its virtual pass; the next job comes
 * from the tenant of lowest pass, whose pass then grows by 1 / weight. The
 * virtual time `vt` is the pass of the tenant served last. A tenant joining
 * the active set starts at max(vt, the pass it left with), so idle time earns
 * it no credit and leaving and coming back gains nothing. Each choice is a
 * ZRANGE and a ZADD on `active`: O(log n) in the number of active tenants.
 * The passes tenants left with sit in `left`, scored by pass: vt never
 * decreases, so each dispatch drops those at or below it, and `left` holds
 * only tenants that left within about one step of vt (at most 10,000), not
 * every tenant ever seen.
 */

/** Adds a job to its tenant's backlog and makes the tenant active. */
const BACKLOG_ADD = `
local function backlogAdd(base, tenant, priority, id)
  local seq = redis.call('HINCRBY', base .. 'seq', tenant, 1)
  redis.call('ZADD', base .. 'b:' .. tenant, 'NX', priority * 4294967296 + seq, id)
  if not redis.call('ZSCORE', base .. 'active', tenant) then
    local vt = tonumber(redis.call('GET', base .. 'vt') or '0')
    local last = tonumber(redis.call('ZSCORE', base .. 'left', tenant) or '0')
    if last > vt then vt = last end
    redis.call('ZREM', base .. 'left', tenant)
    redis.call('ZADD', base .. 'active', vt, tenant)
  end
end
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * Puts a job that BullMQ's add just parked into the fair stage, in the same
 * MULTI as the add. Only if the add created this job (its hash carries this
 * add's timestamp and it sits in `delayed`): an add that returned an existing
 * job (same job id, idempotency key) must not queue it twice. A job with a
 * future due time waits in `deferred` until the dispatcher moves it.
 *
 * KEYS[1] the job's hash, KEYS[2] BullMQ's `delayed`.
 * ARGV[1] base, [2] job id, [3] tenant ('' for none), [4] priority (0 = none),
 * [5] the add's timestamp, [6] due time in ms (0 = now).
 * Returns 1 (in a backlog), 2 (deferred) or 0 (not ours: nothing done).
 */
export const PARK_LUA = `${BACKLOG_ADD}
local base, id, tenant, priority = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('HGET', KEYS[1], 'timestamp') ~= ARGV[5] or not redis.call('ZSCORE', KEYS[2], id) then return 0 end
local due = tonumber(ARGV[6])
if due > 0 and due > nowMs() then
  redis.call('ZADD', base .. 'deferred', due, id .. '\\n' .. priority .. '\\n' .. tenant)
  return 2
end
backlogAdd(base, tenant, priority, id)
return 1`;

/**
 * Takes the next jobs in fair order, as many as the window has room for.
 *
 * 1. Removes from `inflight` the jobs the caller promoted since its last call.
 * 2. Moves due deferred jobs (user delays) into their tenants' backlogs.
 * 3. If BullMQ's wait list plus the in-flight jobs hold at most `low`
 *    jobs, refills them up to `window`: lowest pass first, skipping
 *    backlog entries whose job left `delayed` meanwhile (cancelled, deleted,
 *    drained, promoted by hand), which costs their tenant nothing.
 *    Each job taken is recorded in `inflight` with the Redis time, so that a
 *    caller dying before its promote loses nothing: the sweep finds it.
 *
 * KEYS[1] BullMQ's `wait`, KEYS[2] BullMQ's `delayed`.
 * ARGV[1] base, [2] window, [3] low water mark, [4] most jobs to take,
 * [5..] job ids promoted since the caller's last call.
 * Returns { job ids taken, next due time of a deferred job or -1 }.
 */
export const DISPATCH_LUA = `${BACKLOG_ADD}
local rcall = redis.call
local base = ARGV[1]
local inflight, active = base .. 'inflight', base .. 'active'
for i = 5, #ARGV do rcall('ZREM', inflight, ARGV[i]) end
local now = nowMs()
local due = rcall('ZRANGEBYSCORE', base .. 'deferred', '-inf', now, 'LIMIT', 0, 500)
for _, m in ipairs(due) do
  rcall('ZREM', base .. 'deferred', m)
  local id, prio, tenant = string.match(m, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')
  if id and rcall('ZSCORE', KEYS[2], id) then backlogAdd(base, tenant, tonumber(prio), id) end
end
local taken = {}
local queued = rcall('LLEN', KEYS[1]) + rcall('ZCARD', inflight)
if queued <= tonumber(ARGV[3]) then
  local room = math.min(tonumber(ARGV[2]) - queued, tonumber(ARGV[4]))
  local skips = 0
  local weights = {}
  while room > 0 and skips < 1000 do
    local head = rcall('ZRANGE', active, 0, 0, 'WITHSCORES')
    if #head == 0 then break end
    local tenant, pass = head[1], tonumber(head[2])
    local backlog = base .. 'b:' .. tenant
    local popped = rcall('ZPOPMIN', backlog)
    if #popped == 0 then
      rcall('ZREM', active, tenant)
      rcall('ZADD', base .. 'left', pass, tenant)
      rcall('HDEL', base .. 'seq', tenant)
    elseif not rcall('ZSCORE', KEYS[2], popped[1]) then
      skips = skips + 1
    else
      local w = weights[tenant]
      if not w then
        w = tonumber(rcall('HGET', base .. 'w:api', tenant) or rcall('HGET', base .. 'w:cfg', tenant) or '1')
        if not w or w <= 0 then w = 1 end
        weights[tenant] = w
      end
      rcall('SET', base .. 'vt', pass)
      local nextPass = pass + 1 / w
      if rcall('ZCARD', backlog) == 0 then
        rcall('ZREM', active, tenant)
        rcall('ZADD', base .. 'left', nextPass, tenant)
        rcall('HDEL', base .. 'seq', tenant)
      else
        rcall('ZADD', active, nextPass, tenant)
      end
      rcall('ZADD', inflight, now, popped[1])
      taken[#taken + 1] = popped[1]
      room = room - 1
    end
  end
end
-- A tenant that left at or below the virtual time would rejoin at the
-- virtual time anyway (which never decreases): its entry says nothing more.
-- While only one-job tenants come and go the virtual time stands still, so
-- the set is also capped: past 10,000 the entries nearest the virtual time
-- go, whose tenants would then rejoin at most one step (1 / weight) early.
local left = base .. 'left'
rcall('ZREMRANGEBYSCORE', left, '-inf', rcall('GET', base .. 'vt') or '0')
local leftCount = rcall('ZCARD', left)
if leftCount > 10000 then rcall('ZREMRANGEBYRANK', left, 0, leftCount - 10001) end
-- What versions before \`left\` kept instead, for every tenant ever seen: let
-- go in the background. At worst a tenant that had left one step ahead of the
-- virtual time rejoins at it, once.
rcall('UNLINK', base .. 'last')
local nextDue = rcall('ZRANGE', base .. 'deferred', 0, 0, 'WITHSCORES')
return { taken, nextDue[2] or '-1' }`;

/**
 * Finds jobs taken from a backlog but not promoted for `stale` ms (their
 * dispatcher died between the pop and the promote) and stamps them again,
 * so that concurrent sweeps rarely take the same ones. The caller promotes
 * them; promoting a job twice, or one no longer delayed, changes nothing.
 *
 * ARGV[1] base, [2] stale ms, [3] most jobs. Returns the job ids.
 */
export const SWEEP_LUA = `${BACKLOG_ADD}
local inflight = ARGV[1] .. 'inflight'
local now = nowMs()
local stale = redis.call('ZRANGEBYSCORE', inflight, '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(stale) do redis.call('ZADD', inflight, now, id) end
return stale`;

/** Removes jobs from `inflight` once promoted. ARGV[1] base, [2..] job ids. */
export const DONE_LUA = `
for i = 2, #ARGV do redis.call('ZREM', ARGV[1] .. 'inflight', ARGV[i]) end
return #ARGV - 1`;
