-- queue_join.lua: a user joins a sale's queue, or hears their ticket again.
-- requires: token_bucket queue
--
-- Before the opening a new ticket goes into the draw with the random score the pod drew; from
-- the opening on it queues behind everyone, by arrival.
local state_key   = KEYS[1]  -- hash: the queue's counters (queue.lua)
local users_key   = KEYS[2]  -- hash: user_id -> ticket
local tickets_key = KEYS[3]  -- hash: ticket -> record (queue.lua)
local draw_key    = KEYS[4]  -- zset: tickets of those who joined before the opening, by draw
local meta_key    = KEYS[5]  -- hash: the sale; from its opening on it must be loaded
local user_bucket = KEYS[6]  -- string: token bucket of this user_id (token_bucket.lua)
local ip_bucket   = KEYS[7]  -- string: token bucket of this client address

local user_id   = ARGV[1]
local fresh     = ARGV[2]             -- the ticket to hand out if this user has none
local draw      = ARGV[3]             -- its random score, an integer below 2^52
local now       = queue_now(ARGV[4])  -- ms; '' = Redis's clock
local start     = tonumber(ARGV[5])   -- the sale's opening, ms
local ends      = tonumber(ARGV[6])   -- the sale's end, ms
local rate      = tonumber(ARGV[7])   -- admissions per 1000 s (FLASHSALE_ADMIT_RATE x 1000)
local user_rate = tonumber(ARGV[8])   -- requests per second per user, 0 = off
local ip_rate   = tonumber(ARGV[9])   -- requests per second per client address, 0 = off
local expire_ms = ARGV[10]            -- when the queue's keys may go, well after the sale's end

-- {outcome, ticket, user_id, position, admitted, ms until due (or to wait), pass expiry, newly}
local wait = take_token(user_bucket, user_rate, now)
if wait == 0 then
  wait = take_token(ip_bucket, ip_rate, now)
end
if wait > 0 then
  return {'rate_limited', '', user_id, -1, 0, wait, 0, 0}
end
if now >= ends or (now >= start and redis.call('EXISTS', meta_key) == 0) then
  return {'no_active_sale', '', user_id, -1, 0, 0, 0, 0}
end

redis.call('HSETNX', state_key, 'l', 0)
local s = queue_state(state_key, draw_key, now, start)
local newly = queue_advance(state_key, s, now, ends, rate)
local ticket = redis.call('HGET', users_key, user_id)
local late
if ticket then
  late = tonumber(string.match(redis.call('HGET', tickets_key, ticket), '^%S+ (%S+)'))
else
  ticket = fresh
  if not s.m then
    late = 0
    redis.call('ZADD', draw_key, draw, ticket)
  else
    if s.a == s.m + s.l then
      -- Nobody waits: no budget piled up meanwhile; this one is due a full interval from now.
      s.b, s.t = s.a, now
      redis.call('HSET', state_key, 'b', s.b, 't', s.t)
    end
    s.l = s.l + 1
    late = s.l
    redis.call('HSET', state_key, 'l', late)
  end
  redis.call('HSET', users_key, user_id, ticket)
  redis.call('HSET', tickets_key, ticket, user_id .. ' ' .. late .. ' 0')
  for _, key in ipairs({state_key, users_key, tickets_key, draw_key}) do
    redis.call('PEXPIREAT', key, expire_ms)
  end
end
local position, admitted, due = queue_place(draw_key, s, ticket, late, now, start, rate)
return {'ok', ticket, user_id, position, admitted, due, 0, newly}
