-- reclaim.lua: returns reservations that expired to stock, a bounded batch per call.
-- requires: item_state
--
-- Checkout already treats an expired reservation as free; this only resets the item's state
-- so the items hash and the reserved set say what is true. Returns how many it returned.
local items_key    = KEYS[1]  -- hash: item_id -> state (item_state.lua)
local reserved_key = KEYS[2]  -- zset: item_id scored by reservation expiry
local codes_key    = KEYS[3]  -- hash: code -> claim (created by checkouts, without an expiry)
local meta_key     = KEYS[4]  -- hash: expire_ms, when the sale's keys may go

local now   = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])

local expired = redis.call('ZRANGEBYSCORE', reserved_key, '-inf', now, 'LIMIT', 0, batch)
local returned = 0
for _, item_id in ipairs(expired) do
  local kind, until_ms = parse_state(redis.call('HGET', items_key, item_id))
  if kind == 'R' and until_ms <= now then
    redis.call('HSET', items_key, item_id, '-')
    returned = returned + 1
  end
  redis.call('ZREM', reserved_key, item_id)
end
-- Checkout leaves setting these expiries to us, to keep its own path short.
local expire_ms = redis.call('HGET', meta_key, 'expire_ms')
if expire_ms then
  redis.call('PEXPIREAT', codes_key, expire_ms)
  redis.call('PEXPIREAT', reserved_key, expire_ms)
end
return returned
