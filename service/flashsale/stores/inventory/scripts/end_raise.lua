-- end_raise.lua: a purchase's raise of the user's item (purchase_user.lua) ends, on the user's
-- shard, with what the item's shard made of the code: 'inf' sold, an expiry (the reservation
-- stands) or '' (nothing). The last open raise of the item writes the token: the highest of
-- that, what it was before the first raise, and what else asked for the item meanwhile.
-- Ending a raise twice (the caller and the sweeper) changes nothing the second time.
-- requires: raises
local user_key    = KEYS[1]  -- zset: this user's items scored by expiry, "inf" once bought
local raising_key = KEYS[2]  -- zset: "<code> <user_id> <item_id>" -> ms its raise opened
local raises_key  = KEYS[3]  -- hash: "<user_id> <item_id>" -> open raises, score (raises.lua)

local code    = ARGV[1]
local user_id = ARGV[2]
local item_id = ARGV[3]
local score   = ARGV[4]  -- 'inf', an expiry in ms, or ''

if redis.call('ZREM', raising_key, code .. ' ' .. user_id .. ' ' .. item_id) == 0 then
  return 0
end
local field = user_id .. ' ' .. item_id
local open, floor = open_raises(raises_key, field)
if not open then
  return 0  -- its count went with a node's data: the token stays raised (over-count)
end
floor = higher(floor, score)
if open > 1 then
  redis.call('HSET', raises_key, field, (open - 1) .. ' ' .. floor)
  return 1
end
redis.call('HDEL', raises_key, field)
if floor == '' then
  redis.call('ZREM', user_key, item_id)
else
  redis.call('ZADD', user_key, floor, item_id)
end
return 1
