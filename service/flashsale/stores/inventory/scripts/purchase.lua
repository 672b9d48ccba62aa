-- purchase.lua: turns an unexpired reservation into a sale, atomically.
-- requires: token_bucket item_state
--
-- The sold item is also put in the pending set until PostgreSQL holds the purchase: the web
-- request confirms it (ZREM) after its INSERT, or undoes it with revert.lua when the INSERT
-- fails; the sweeper settles what a crashed worker left behind.
local meta_key     = KEYS[1]  -- hash: sale_id, ends_ms, sold, ...
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local pending_key  = KEYS[5]  -- zset: code scored by the ms it was sold, until PostgreSQL has it
local ip_bucket    = KEYS[6]  -- string: token bucket of this client address

local code          = ARGV[1]
local now           = tonumber(ARGV[2])  -- ms since the epoch
local user_rate     = tonumber(ARGV[3])  -- requests per second per user, 0 = off
local ip_rate       = tonumber(ARGV[4])  -- requests per second per client address, 0 = off
-- The user's keys are only known once the code is read. They share this sale's hash tag, so
-- they live in the same slot as KEYS and Redis Cluster serves them from the same node.
local user_prefix   = ARGV[5]            -- "<sale prefix>user:"  + user_id -> zset of the user
local bucket_prefix = ARGV[6]            -- "<sale prefix>bucket:u:" + user_id -> token bucket
local requester     = ARGV[7]            -- the authenticated user; "" when identity is off

local sale_id = redis.call('HGET', meta_key, 'sale_id')
if not sale_id then
  return {'sale_missing'}  -- the caller consults PostgreSQL
end

local claim = redis.call('HGET', codes_key, code)
if not claim then
  local wait = take_token(ip_bucket, ip_rate, now)
  if wait > 0 then
    return {'rate_limited', wait}
  end
  return {'code_not_found'}
end
local item_id, user_id = parse_claim(claim)
if requester ~= '' and requester ~= user_id then
  -- Someone else's code, expired or not: forbidden comes before rate_limited in the table. The
  -- address's bucket is spent like any request's; the holder's own bucket is left alone.
  take_token(ip_bucket, ip_rate, now)
  return {'forbidden'}
end

local wait = take_token(bucket_prefix .. user_id, user_rate, now)
if wait == 0 then
  wait = take_token(ip_bucket, ip_rate, now)
end
if wait > 0 then
  return {'rate_limited', wait}
end

local kind, at_ms, _, held_code = parse_state(redis.call('HGET', items_key, item_id))
if kind == 'S' and held_code == code then
  -- A retry of a purchase that went through: the same purchase again.
  return {'repeat', item_id, user_id, at_ms, sale_id}
end
local ends = tonumber(redis.call('HGET', meta_key, 'ends_ms'))
if kind ~= 'R' or held_code ~= code or at_ms <= now or now >= ends then
  return {'code_expired'}
end

redis.call('HSET', items_key, item_id, format_state('S', now, user_id, code))
redis.call('ZREM', reserved_key, item_id)
redis.call('ZADD', user_prefix .. user_id, 'inf', item_id)
redis.call('HINCRBY', meta_key, 'sold', 1)
redis.call('ZADD', pending_key, now, code)
return {'sold', item_id, user_id, now, sale_id}
