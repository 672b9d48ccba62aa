-- purchase.lua: turns an unexpired reservation into a sale, atomically. On a sharded sale whose
-- buyer lives on another shard than the item, the user's part (rate limit, the item raised to
-- bought in the user's set) is purchase_user.lua's, done first; here the two prefixes are ''.
-- requires: token_bucket item_state
--
-- The sold item is also put in the pending set until PostgreSQL holds the purchase: the web
-- request confirms it (ZREM) after its INSERT, or undoes it with revert.lua when the INSERT
-- fails; the sweeper settles what a crashed worker left behind.
local meta_key     = KEYS[1]  -- hash: sale_id, ends_ms, sold, ...
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local pending_key  = KEYS[5]  -- zset: code -> stamp (ms sold, moved on by retries) until confirmed
local ip_bucket    = KEYS[6]  -- string: token bucket of this client address
local history_key  = KEYS[7]  -- hash: bucket -> items sold in it (item_state.lua)

local code          = ARGV[1]
local now           = tonumber(ARGV[2])  -- ms since the epoch
local user_rate     = tonumber(ARGV[3])  -- requests per second per user, 0 = off
local ip_rate       = tonumber(ARGV[4])  -- requests per second per client address, 0 = off
-- The user's keys are only known once the code is read. They share this sale's hash tag, so
-- they live in the same slot as KEYS and Redis Cluster serves them from the same node.
local user_prefix   = ARGV[5]            -- "<sale prefix>user:"  + user_id -> zset of the user
local bucket_prefix = ARGV[6]            -- "<sale prefix>bucket:u:" + user_id -> token bucket
local deadline      = ARGV[7]            -- ms: past it by Redis's clock the caller gave up
local requester     = ARGV[8]            -- the authenticated user; "" when identity is off

if deadline_passed(deadline) then
  return {'late'}
end

local meta = redis.call('HMGET', meta_key, 'sale_id', 'shards')
local sale_id = meta[1]
if not sale_id then
  return {'sale_missing'}  -- the caller consults PostgreSQL
end
if meta[2] then
  return {'sharded'}  -- a sharded sale's home: the caller learns its layout
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

local wait = 0
if bucket_prefix ~= '' then
  wait = take_token(bucket_prefix .. user_id, user_rate, now)
end
if wait == 0 then
  wait = take_token(ip_bucket, ip_rate, now)
end
if wait > 0 then
  return {'rate_limited', wait}
end

local kind, at_ms, _, held_code = parse_state(redis.call('HGET', items_key, item_id))
if kind == 'S' and held_code == code then
  -- A retry of a purchase: the same purchase again. While it is pending, this request may
  -- commit it too, so its stamp moves on: the request that sold it may no longer revert it
  -- (revert.lua), and the sweeper's grace starts again.
  local stamp = redis.call('ZSCORE', pending_key, code)
  if stamp then
    redis.call('ZADD', pending_key, math.max(now, tonumber(stamp) + 1), code)
  end
  return {'repeat', item_id, user_id, at_ms, sale_id}
end
local ends = tonumber(redis.call('HGET', meta_key, 'ends_ms'))
if kind ~= 'R' or held_code ~= code or at_ms <= now or now >= ends then
  return {'code_expired'}
end

redis.call('HSET', items_key, item_id, format_state('S', now, user_id, code))
redis.call('ZREM', reserved_key, item_id)
if user_prefix ~= '' then
  redis.call('ZADD', user_prefix .. user_id, 'inf', item_id)
end
local sold = redis.call('HINCRBY', meta_key, 'sold', 1)
redis.call('ZADD', pending_key, now, code)
count_sold(history_key, meta_key, now, 1)
-- Whether this tag's items are now all sold: a sharded sale's pods keep that in mind.
local sold_out = sold >= tonumber(redis.call('HGET', meta_key, 'total')) and 1 or 0
return {'sold', item_id, user_id, now, sale_id, sold_out}
