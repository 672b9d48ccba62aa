-- purchase_user.lua: the user's half of a purchase on a sharded sale, on the user's shard, run
-- before purchase.lua sells the item on its own shard. It applies the user's rate limit and
-- raises the item to bought (+inf) in the user's set first (over-count first: a crash before
-- the sale leaves the user counted, never a sale the limit does not count), and notes the code
-- in `raising` until the caller settles the token (set_token.lua); the sweeper settles what a
-- crashed caller left there.
-- requires: token_bucket item_state
local user_key    = KEYS[1]  -- zset: this user's items scored by expiry, "inf" once bought
local user_bucket = KEYS[2]  -- string: token bucket of this user_id
local ip_bucket   = KEYS[3]  -- string: token bucket of this client address (when on this shard)
local raising_key = KEYS[4]  -- zset: code -> ms its item was raised, while its purchase is open

local code      = ARGV[1]
local item_id   = ARGV[2]
local now       = tonumber(ARGV[3])     -- ms since the epoch
local user_rate = tonumber(ARGV[4])     -- requests per second per user, 0 = off
local ip_rate   = tonumber(ARGV[5])     -- requests per second per client address, 0 = off
local deadline  = ARGV[6]               -- ms: past it by Redis's clock the caller gave up

if deadline_passed(deadline) then
  return {'late', ''}
end
local wait = take_token(user_bucket, user_rate, now)
if wait == 0 then
  wait = take_token(ip_bucket, ip_rate, now)
end
if wait > 0 then
  return {'rate_limited', wait}
end
local before = redis.call('ZSCORE', user_key, item_id) or ''
redis.call('ZADD', user_key, 'inf', item_id)
redis.call('ZADD', raising_key, now, code)
return {'raised', before}
