-- purchase_user.lua: the user's half of a purchase on a sharded sale, on the user's shard, run
-- before purchase.lua sells the item on its own shard. It applies the user's rate limit and
-- raises the item to bought (+inf) in the user's set first (over-count first: a crash before
-- the sale leaves the user counted, never a sale the limit does not count). The raise stays
-- open, noted in `raising` and counted in `raises`, until the caller ends it with the item
-- shard's answer (end_raise.lua); the sweeper ends what a crashed caller left open.
-- requires: token_bucket item_state raises
local user_key    = KEYS[1]  -- zset: this user's items scored by expiry, "inf" once bought
local user_bucket = KEYS[2]  -- string: token bucket of this user_id
local raising_key = KEYS[3]  -- zset: "<code> <user_id> <item_id>" -> ms its raise opened
local raises_key  = KEYS[4]  -- hash: "<user_id> <item_id>" -> open raises, score (raises.lua)

local code      = ARGV[1]
local item_id   = ARGV[2]
local now       = tonumber(ARGV[3])     -- ms since the epoch
local user_rate = tonumber(ARGV[4])     -- requests per second per user, 0 = off
local deadline  = ARGV[5]               -- ms: past it by Redis's clock the caller gave up
local user_id   = ARGV[6]

if deadline_passed(deadline) then
  return 'late'
end
local wait = take_token(user_bucket, user_rate, now)
if wait > 0 then
  return {'rate_limited', wait}
end
-- A retry of a purchase whose raise is still open joins it rather than opening another.
if redis.call('ZADD', raising_key, 'NX', now, code .. ' ' .. user_id .. ' ' .. item_id) == 1 then
  local field = user_id .. ' ' .. item_id
  local open, floor = open_raises(raises_key, field)
  if not open then
    open, floor = 0, redis.call('ZSCORE', user_key, item_id) or ''
  end
  redis.call('HSET', raises_key, field, (open + 1) .. ' ' .. floor)
end
redis.call('ZADD', user_key, 'inf', item_id)
return 'raised'
