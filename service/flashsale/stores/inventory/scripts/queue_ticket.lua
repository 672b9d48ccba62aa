-- queue_ticket.lua: where a ticket stands and, once it is admitted, its pass's expiry: fixed the
-- first time it is asked (never earlier than the admission), the same on every later call.
-- requires: token_bucket queue
local state_key   = KEYS[1]  -- hash: the queue's counters (queue.lua)
local tickets_key = KEYS[2]  -- hash: ticket -> record (queue.lua)
local draw_key    = KEYS[3]  -- zset: tickets of those who joined before the opening, by draw
local ip_bucket   = KEYS[4]  -- string: token bucket of this client address (token_bucket.lua)

local ticket  = ARGV[1]
local now     = queue_now(ARGV[2])  -- ms; '' = Redis's clock
local start   = tonumber(ARGV[3])   -- the sale's opening, ms
local ends    = tonumber(ARGV[4])   -- the sale's end, ms
local rate    = tonumber(ARGV[5])   -- admissions per 1000 s (FLASHSALE_ADMIT_RATE x 1000)
local ip_rate = tonumber(ARGV[6])   -- requests per second per client address, 0 = off
local pass_ms = tonumber(ARGV[7])   -- how long a pass lasts from its issue (capped at the end)

-- {outcome, ticket, user_id, position, admitted, ms until due (or to wait), pass expiry, newly}
local wait = take_token(ip_bucket, ip_rate, now)
if wait > 0 then
  return {'rate_limited', ticket, '', -1, 0, wait, 0, 0}
end
local record = redis.call('HGET', tickets_key, ticket)
if not record then
  return {'ticket_not_found', ticket, '', -1, 0, 0, 0, 0}
end
local user_id, late, pass_until = string.match(record, '^(%S+) (%S+) (%S+)$')
late, pass_until = tonumber(late), tonumber(pass_until)

local s = queue_state(state_key, draw_key, now, start)
local newly = queue_advance(state_key, s, now, ends, rate)
local position, admitted, due = queue_place(draw_key, s, ticket, late, now, start, rate)
if admitted == 1 and pass_until == 0 then
  pass_until = math.min(now + pass_ms, ends)
  redis.call('HSET', tickets_key, ticket, user_id .. ' ' .. late .. ' ' .. pass_until)
end
return {'ok', ticket, user_id, position, admitted, due, pass_until, newly}
