-- set_token.lua: settles a user's token for one item on a sharded sale, on the user's shard:
-- the item's score in the user's set becomes `score` (or the item leaves the set when it is ''),
-- but only while the score is still `expected` ('' = whatever it is). While a purchase is
-- raising the item, the token stays raised and `score` joins what it falls back to.
-- requires: raises
local user_key   = KEYS[1]  -- zset: this user's items scored by expiry, "inf" once bought
local raises_key = KEYS[2]  -- hash: "<user_id> <item_id>" -> open raises, score (raises.lua)

local user_id  = ARGV[1]
local item_id  = ARGV[2]
local score    = ARGV[3]  -- the new score ('inf', an expiry in ms), or '' to remove the item
local expected = ARGV[4]  -- change it only from this score; '' for any

if join_raises(raises_key, user_id .. ' ' .. item_id, score) then
  return 0
end
local current = redis.call('ZSCORE', user_key, item_id)
if expected ~= '' and (not current or tonumber(current) ~= tonumber(expected)) then
  return 0
end
if score == '' then
  return redis.call('ZREM', user_key, item_id)
end
redis.call('ZADD', user_key, score, item_id)
return 1
