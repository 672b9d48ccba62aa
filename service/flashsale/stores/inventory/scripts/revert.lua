-- revert.lua: undoes a purchase that PostgreSQL did not record, back to the reservation it was.
-- requires: item_state
--
-- Only a purchase still pending is reverted, so a revert racing a confirmation or a second
-- revert changes nothing. If the reservation has expired meanwhile, the item is simply free.
local meta_key     = KEYS[1]  -- hash: sold counter
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local pending_key  = KEYS[5]  -- zset: code scored by the ms it was sold

local code        = ARGV[1]
local user_prefix = ARGV[2]  -- "<sale prefix>user:" + user_id -> zset of the user (same slot)

if not redis.call('ZSCORE', pending_key, code) then
  return 0
end
redis.call('ZREM', pending_key, code)
local item_id, user_id, expires = parse_claim(redis.call('HGET', codes_key, code))
local kind, _, _, held_code = parse_state(redis.call('HGET', items_key, item_id))
if kind ~= 'S' or held_code ~= code then
  return 0
end
redis.call('HSET', items_key, item_id, format_state('R', expires, user_id, code))
redis.call('ZADD', reserved_key, expires, item_id)
redis.call('ZADD', user_prefix .. user_id, expires, item_id)
redis.call('HINCRBY', meta_key, 'sold', -1)
return 1
