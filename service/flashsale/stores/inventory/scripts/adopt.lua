-- adopt.lua: PostgreSQL already holds another purchase of this item, so Redis takes its word.
-- Returns the user Redis had sold it to (0 when nothing of ours was there to correct).
-- requires: item_state
--
-- This happens when a purchase committed while Redis was being restored from PostgreSQL (the
-- restore could not see it yet) and the item was then sold again in Redis: the unique
-- constraint stopped the second sale, and here Redis is made to say what PostgreSQL says.
local items_key   = KEYS[1]  -- hash: item_id -> state (item_state.lua)
local codes_key   = KEYS[2]  -- hash: code -> claim (item_state.lua)
local pending_key = KEYS[3]  -- zset: codes sold in Redis, not yet confirmed in PostgreSQL

local code        = ARGV[1]  -- the purchase that lost
local stored_code = ARGV[2]  -- the purchase PostgreSQL holds for the item
local item_id     = ARGV[3]
local stored_user = ARGV[4]
local stored_at   = ARGV[5]  -- its purchased_at, ms
local user_prefix = ARGV[6]  -- "<sale prefix>user:" + user_id -> zset of the user (same slot);
                             -- '' when users live on other shards (the caller moves them)

redis.call('ZREM', pending_key, code)
local kind, _, holder, held_code = parse_state(redis.call('HGET', items_key, item_id))
if kind ~= 'S' or held_code ~= code then
  return 0  -- Redis no longer says our purchase sold it: nothing of ours to correct
end
-- The sold counter stays: the item is sold either way, only to someone else.
redis.call('HSET', items_key, item_id, format_state('S', stored_at, stored_user, stored_code))
redis.call('HSET', codes_key, stored_code, format_claim(item_id, stored_user, stored_at))
if user_prefix ~= '' then
  redis.call('ZREM', user_prefix .. holder, item_id)
  redis.call('ZADD', user_prefix .. stored_user, 'inf', item_id)
end
return holder
