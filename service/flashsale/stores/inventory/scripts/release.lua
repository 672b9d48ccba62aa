-- release.lua: a code's hold on its item goes, and the item is free again; returns the user it
-- held it for (0 when there was nothing to release). Two callers:
-- * the drain, or the pod itself, found that the request which made a reservation was answered
--   `unavailable` (Redis ran the script, but its answer came too late): nobody was told the code.
--   Unless the same user heard it from a second checkout since (the claim says "again").
-- * the sweeper voided a purchase left pending past the grace that PostgreSQL does not hold:
--   no purchase of the code can commit any more, so it is undone here and the code expires.
-- requires: item_state
local meta_key     = KEYS[1]  -- hash: sold counter
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local pending_key  = KEYS[5]  -- zset: code -> stamp, until PostgreSQL has the purchase
local history_key  = KEYS[6]  -- hash: bucket -> items sold in it (item_state.lua)

local code        = ARGV[1]
local user_prefix = ARGV[2]  -- "<sale prefix>user:" + user_id -> zset of the user (same slot);
                             -- '' when the user lives on another shard (the caller frees it)

local item_id, user_id, _, again = parse_claim(redis.call('HGET', codes_key, code))
if not item_id then
  return 0
end
local kind, at, _, held_code = parse_state(redis.call('HGET', items_key, item_id))
if held_code ~= code then
  return 0  -- expired and taken by someone else, or already released
end
if kind == 'R' then
  if again then
    return 0
  end
  redis.call('HDEL', codes_key, code)
elseif kind == 'S' then
  if not redis.call('ZSCORE', pending_key, code) then
    return 0  -- confirmed: PostgreSQL holds the purchase
  end
  redis.call('ZREM', pending_key, code)
  redis.call('HINCRBY', meta_key, 'sold', -1)
  count_sold(history_key, meta_key, at, -1)
  redis.call('HSET', codes_key, code, format_claim(item_id, user_id, 0))
else
  return 0
end
redis.call('HSET', items_key, item_id, '-')
redis.call('ZREM', reserved_key, item_id)
if user_prefix ~= '' then
  redis.call('ZREM', user_prefix .. user_id, item_id)
end
return user_id
