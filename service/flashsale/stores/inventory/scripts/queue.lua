-- queue.lua: a library, prepended by the loader to the waiting room's scripts (queue_join,
-- queue_ticket, queue_length). One sale's queue and its admission counter, which whoever asks
-- advances from the time elapsed: no leader, no timer, and every pod sees one count.
--
-- The queue hash holds
--   l     how many joined after the opening (arrival order); the only field before the opening
--   m     how many joined before the opening: set when the draw is sealed (the first call at
--         or after the opening), absent before
--   a     how many are admitted: always the first `a` of the queue order
--   b, t  the anchor: `b` admissions are due by ms `t`, and one more every 1e6 / rate ms after
--         it while anyone waits
-- Queue order: the `m` tickets of the draw set by their random score (drawn by the pod from
-- `secrets` when each joined; never shown), then the later ones by arrival.
-- A ticket's record (the tickets hash): "<user_id> <arrival after the opening, 0 if drawn>
-- <its pass's expiry ms, 0 until the pass is issued>".
--
-- Exactness: admission k (k = 1, 2, ...) is due 1e6 / rate ms after the later of admission
-- k - 1 (the opening, for the first) and the moment ticket k joined. While anyone waits, the
-- due count at ms x is b + floor((x - t) * rate / 1e6), computed from the anchor (never summed
-- step by step, so it cannot drift); a join that finds nobody waiting moves the anchor to its
-- own time, so budget never piles up while the queue is empty. `rate` is admissions per 1000 s
-- (an integer), so the products are exact integers below 2^53.

-- The script's clock in ms: the caller's when given (tests drive it), else Redis's own (TIME),
-- so that the pods' clocks do not matter.
local function queue_now(given)
  if given ~= '' then
    return tonumber(given)
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The counters. The first call at or after the opening seals the draw: the order of those who
-- joined before it is fixed from then on, and admissions count from the opening.
local function queue_state(state_key, draw_key, now, start)
  local f = redis.call('HMGET', state_key, 'm', 'l', 'a', 'b', 't')
  local s = {
    m = tonumber(f[1]), l = tonumber(f[2]) or 0, a = tonumber(f[3]) or 0,
    b = tonumber(f[4]) or 0, t = tonumber(f[5]) or start,
  }
  if not s.m and now >= start then
    s.m, s.a, s.b, s.t = redis.call('ZCARD', draw_key), 0, 0, start
    redis.call('HSET', state_key, 'm', s.m, 'a', 0, 'b', 0, 't', start)
  end
  return s
end

-- Records the admissions due by `now` (none after the sale's end); returns how many this call
-- admitted, so that each admission is counted by exactly one caller.
local function queue_advance(state_key, s, now, ends, rate)
  if not s.m then
    return 0
  end
  local elapsed = math.max(math.min(now, ends) - s.t, 0)
  local due = s.b + math.floor(elapsed * rate / 1000000)
  local admitted = math.min(s.m + s.l, math.max(s.a, due))
  local newly = admitted - s.a
  if newly > 0 then
    s.a = admitted
    redis.call('HSET', state_key, 'a', admitted)
  end
  return newly
end

-- A ticket's place: its position (-1 before the draw is sealed, 0 once admitted, else how many
-- not yet admitted are ahead of it, plus one), whether it is admitted (1/0), and the ms until
-- it is due (until the opening, before it; 0 once admitted).
local function queue_place(draw_key, s, ticket, late, now, start, rate)
  if not s.m then
    return -1, 0, math.max(start - now, 1)
  end
  local rank
  if late == 0 then
    rank = redis.call('ZRANK', draw_key, ticket) + 1
  else
    rank = s.m + late
  end
  if rank <= s.a then
    return 0, 1, 0
  end
  local due_at = s.t + math.ceil((rank - s.b) * 1000000 / rate)
  return rank - s.a, 0, math.max(due_at - now, 1)
end
