-- set_token.lua: settles a user's token for one item on a sharded sale, on the user's shard:
-- the item's score in the user's set becomes `score` (or the item leaves the set when it is ''),
-- but only while the score is still `expected` ('' = whatever it is), and a code's `raising`
-- note goes. Used when the other half of a checkout or purchase gave a definite answer.
local user_key    = KEYS[1]  -- zset: this user's items scored by expiry, "inf" once bought
local raising_key = KEYS[2]  -- zset: code -> ms its item was raised, while its purchase is open

local item_id  = ARGV[1]
local score    = ARGV[2]  -- the new score ('inf', an expiry in ms), or '' to remove the item
local expected = ARGV[3]  -- change it only from this score; '' for any
local code     = ARGV[4]  -- the purchase whose `raising` note goes, or ''

if code ~= '' then
  redis.call('ZREM', raising_key, code)
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
