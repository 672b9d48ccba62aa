-- checkout_item.lua: the item's half of a checkout on a sharded sale, on the item's shard, after
-- checkout_user.lua took the user's limit token (or found the user already holds the item). It
-- reserves the item until the token's expiry, or refuses, and records the attempt either way.
-- requires: item_state
local meta_key     = KEYS[1]  -- hash: this shard's meta (sale_id, total, sold of its items)
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua)
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry
local outbox_key   = KEYS[5]  -- stream: checkout attempts waiting to be drained into PostgreSQL

local user_id  = ARGV[1]
local item_id  = ARGV[2]
local now_text = ARGV[3]                  -- ms since the epoch
local now      = tonumber(now_text)
local expires  = ARGV[4]                  -- ms: the reservation's expiry (the token's score)
local fresh    = ARGV[5]                  -- the code to hand out if this checkout reserves
local key      = ARGV[6]                  -- the attempt's name, chosen by the pod
local deadline = ARGV[7]                  -- ms: past it by Redis's clock the caller gave up
local others_sold_out = ARGV[8] == '1'    -- every other shard sold out, as far as it knows

if deadline_passed(deadline) then
  return {'late', '', 0, 0}
end

local meta = redis.call('HMGET', meta_key, 'sale_id', 'total', 'sold')
local sale_id = meta[1] or ''
local sold_out_here = meta[1] and tonumber(meta[3]) >= tonumber(meta[2]) and 1 or 0

local function answer(outcome, code, until_ms)
  redis.call('XADD', outbox_key, '*', 'k', key, 's', sale_id, 'u', user_id, 'i', item_id,
             'o', outcome, 'c', code or '', 't', now_text)
  return {outcome, code or '', until_ms or 0, sold_out_here}
end

if sale_id == '' then
  return answer('unavailable')  -- this shard's node lost the sale: it is being restored
end
local kind, until_ms, holder, held_code = parse_state(redis.call('HGET', items_key, item_id))
local live = kind == 'R' and until_ms > now
if live and holder == user_id then
  redis.call('HSET', codes_key, held_code, format_claim(item_id, user_id, until_ms, true))
  return answer('ok', held_code, until_ms)
end
if kind == 'S' or live then
  if sold_out_here == 1 and others_sold_out then
    return answer('sold_out')
  end
  return answer('item_unavailable')
end
redis.call('HSET', items_key, item_id, format_state('R', expires, user_id, fresh))
redis.call('HSET', codes_key, fresh, format_claim(item_id, user_id, expires))
redis.call('ZADD', reserved_key, expires, item_id)
return answer('ok', fresh, tonumber(expires))
