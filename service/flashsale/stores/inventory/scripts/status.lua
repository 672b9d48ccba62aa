-- status.lua: one consistent snapshot of a sale's figures.
local meta_key     = KEYS[1]  -- hash: sale_id, starts_ms, ends_ms, total, sold
local reserved_key = KEYS[2]  -- zset: item_id scored by reservation expiry
local outbox_key   = KEYS[3]  -- stream: attempts not yet in PostgreSQL

local now = ARGV[1]

local meta = redis.call('HMGET', meta_key, 'sale_id', 'starts_ms', 'ends_ms', 'total', 'sold')
if not meta[1] then
  return false
end
-- Only unexpired reservations count as reserved.
local reserved = redis.call('ZCOUNT', reserved_key, '(' .. now, '+inf')
return {meta[1], meta[2], meta[3], meta[4], meta[5], reserved, redis.call('XLEN', outbox_key)}
