-- queue_length.lua: how many wait in a sale's queue (joined, not yet admitted), for the gauge;
-- the admissions due are recorded first.
-- requires: queue
local state_key = KEYS[1]  -- hash: the queue's counters (queue.lua)
local draw_key  = KEYS[2]  -- zset: tickets of those who joined before the opening, by draw

local now   = queue_now(ARGV[1])  -- ms; '' = Redis's clock
local start = tonumber(ARGV[2])   -- the sale's opening, ms
local ends  = tonumber(ARGV[3])   -- the sale's end, ms
local rate  = tonumber(ARGV[4])   -- admissions per 1000 s (FLASHSALE_ADMIT_RATE x 1000)

-- {waiting, newly admitted by this call}
if redis.call('EXISTS', state_key) == 0 then
  return {0, 0}  -- nobody joined
end
local s = queue_state(state_key, draw_key, now, start)
local newly = queue_advance(state_key, s, now, ends, rate)
if not s.m then
  return {redis.call('ZCARD', draw_key), 0}
end
return {s.m + s.l - s.a, newly}
