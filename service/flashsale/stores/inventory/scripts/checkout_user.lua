-- checkout_user.lua: the user's half of a checkout on a sharded sale, on the user's shard, when
-- the item lives on another (checkout_item.lua is the other half, run next).
-- requires: token_bucket item_state raises
--
-- It applies what the user's shard can decide, in the error table's order (the user's rate
-- limit, the address's being spent by the caller on its own shard first; sale open, item id,
-- sold out as the caller knows it, the user's limit) and records a refusal in its outbox.
-- Otherwise it takes a limit token first: the item goes into the user's set scored by the expiry
-- the reservation will have, so the limit counts it before the item step can reserve it
-- (over-count first: a crash between the steps leaves a token that expires, never a reservation
-- the limit does not see). The caller releases the token only on a definite refusal of the item
-- step, never on a timeout.
local meta_key    = KEYS[1]  -- hash: this shard's meta (sale_id, starts_ms, ends_ms, limit, ...)
local user_key    = KEYS[2]  -- zset: this user's items scored by expiry, "inf" once bought
local outbox_key  = KEYS[3]  -- stream: checkout attempts waiting to be drained into PostgreSQL
local user_bucket = KEYS[4]  -- string: token bucket of this user_id
local raises_key  = KEYS[5]  -- hash: "<user_id> <item_id>" -> open raises, score (raises.lua)

local user_id     = ARGV[1]
local item_id     = ARGV[2]
local now_text    = ARGV[3]              -- ms since the epoch
local now         = tonumber(now_text)
local ttl         = tonumber(ARGV[4])    -- ms a reservation lasts
local user_rate   = tonumber(ARGV[5])    -- requests per second per user, 0 = off
local seen_open   = ARGV[6]              -- this sale's id if the caller saw it open, else ''
local key         = ARGV[7]              -- the attempt's name, chosen by the pod
local deadline    = ARGV[8]              -- ms: past it by Redis's clock the caller gave up
local item_exists = ARGV[9] == '1'       -- the item id names an item of the sale
local sold_out    = ARGV[10] == '1'      -- every shard is sold out, as far as the caller knows

if deadline_passed(deadline) then
  return {'late', 0, 0, ''}
end

local meta = redis.call('HMGET', meta_key, 'sale_id', 'starts_ms', 'ends_ms', 'limit', 'expire_ms')
local sale_id = meta[1] or ''

local function refuse(outcome, retry_ms)
  redis.call('XADD', outbox_key, '*', 'k', key, 's', sale_id, 'u', user_id, 'i', item_id,
             'o', outcome, 'c', '', 't', now_text)
  return {outcome, 0, retry_ms or 0, sale_id}
end

local wait = take_token(user_bucket, user_rate, now)
if wait > 0 then
  return refuse('rate_limited', wait)
end
if sale_id == '' then
  if seen_open ~= '' then
    sale_id = seen_open  -- lost by this shard's node, being restored: a store is away
    return refuse('unavailable')
  end
  return refuse('no_active_sale')
end
local starts, ends = tonumber(meta[2]), tonumber(meta[3])
if now < starts or now >= ends then
  local opens_in = now < starts and (starts - now) or 0
  sale_id = ''
  return refuse('no_active_sale', opens_in)
end
if not item_exists then
  return refuse('item_not_found')
end
if sold_out then
  return refuse('sold_out')
end

local expires = math.min(now + ttl, ends)
local score = redis.call('ZSCORE', user_key, item_id)
if score and tonumber(score) > now then
  -- The user holds (or is buying) this item already: it counts once. Its token lasts at least
  -- as long as a reservation made now would, also once a purchase raising it ends.
  redis.call('ZADD', user_key, 'GT', expires, item_id)
  join_raises(raises_key, user_id .. ' ' .. item_id, string.format('%d', expires))
  return {'held', expires, 0, sale_id}
end
local held = redis.call('ZCOUNT', user_key, '(' .. now_text, '+inf')
if held >= tonumber(meta[4]) then
  return refuse('user_limit_reached')
end
redis.call('ZADD', user_key, expires, item_id)
if held == 0 then
  redis.call('PEXPIREAT', user_key, meta[5])
end
return {'token', expires, 0, sale_id}
