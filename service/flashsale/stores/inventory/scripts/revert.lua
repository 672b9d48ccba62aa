-- revert.lua: the request that sold a purchase undoes it, back to the reservation it was, because
-- PostgreSQL surely did not record it.
-- requires: item_state
--
-- Only while no other request has touched it: a retry of the same code that saw it sold may be
-- committing it right now (purchase.lua moves the stamp on), and then it stays pending for the
-- sweeper, which decides against PostgreSQL. So a purchase any request answered 200 (or may
-- still answer 200) is never reverted. If the reservation expired meanwhile, the item is free.
local meta_key     = KEYS[1]  -- hash: sold counter
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local pending_key  = KEYS[5]  -- zset: code -> stamp, until PostgreSQL has the purchase
local history_key  = KEYS[6]  -- hash: bucket -> items sold in it (item_state.lua)

local code        = ARGV[1]
local user_prefix = ARGV[2]  -- "<sale prefix>user:" + user_id -> zset of the user (same slot);
                             -- '' when the user lives on another shard (the caller lowers it)
local stamp       = ARGV[3]  -- the stamp purchase.lua gave the request that sold it

local held = redis.call('ZSCORE', pending_key, code)
if not held or tonumber(held) ~= tonumber(stamp) then
  return 0  -- confirmed, settled, or touched by a retry since
end
redis.call('ZREM', pending_key, code)
local item_id, user_id, expires = parse_claim(redis.call('HGET', codes_key, code))
local kind, sold_at, _, held_code = parse_state(redis.call('HGET', items_key, item_id))
if kind ~= 'S' or held_code ~= code then
  return 0
end
redis.call('HSET', items_key, item_id, format_state('R', expires, user_id, code))
redis.call('ZADD', reserved_key, expires, item_id)
if user_prefix ~= '' then
  redis.call('ZADD', user_prefix .. user_id, expires, item_id)
end
redis.call('HINCRBY', meta_key, 'sold', -1)
count_sold(history_key, meta_key, sold_at, -1)
return 1
