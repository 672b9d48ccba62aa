-- checkout.lua: decides one checkout and records the attempt, atomically, when the item and the
-- user live on one hash tag: always for a sale on one tag, and on a sharded sale (K > 1) when
-- the user's shard is the item's (else checkout_user.lua then checkout_item.lua).
-- requires: token_bucket item_state
--
-- A reservation whose expiry has passed is free: correctness never waits for the sweeper.
local meta_key     = KEYS[1]  -- hash: sale_id, starts_ms, ends_ms, total, limit, sold, expire_ms
                              -- (of this shard); `shards` on the home meta of a sharded sale
local items_key    = KEYS[2]  -- hash: item_id -> state (item_state.lua); no field: not in the sale
local codes_key    = KEYS[3]  -- hash: code -> claim (item_state.lua)
local reserved_key = KEYS[4]  -- zset: item_id scored by reservation expiry (for items_reserved)
local user_key     = KEYS[5]  -- zset: this user's items scored by expiry, "inf" once bought
local outbox_key   = KEYS[6]  -- stream: checkout attempts waiting to be drained into PostgreSQL
local user_bucket  = KEYS[7]  -- string: token bucket of this user_id
local ip_bucket    = KEYS[8]  -- string: token bucket of this client address

local user_id   = ARGV[1]
local item_id   = ARGV[2]
local now_text  = ARGV[3]            -- ms since the epoch (kept as text: formatting costs)
local now       = tonumber(now_text)
local ttl       = tonumber(ARGV[4])  -- ms a reservation lasts
local fresh     = ARGV[5]            -- the code to hand out if this checkout reserves
local user_rate = tonumber(ARGV[6])  -- requests per second per user, 0 = off
local ip_rate   = tonumber(ARGV[7])  -- requests per second per client address, 0 = off
local seen_open = ARGV[8]            -- this sale's id if the caller saw it open, else ''
local key       = ARGV[9]            -- the attempt's name, chosen by the pod (its row's key)
local deadline  = ARGV[10]           -- ms: past it by Redis's clock the caller gave up
-- '1' when every other shard of the sale is sold out as far as the caller knows (always for a
-- sale on one tag): `sold_out` is global, one shard's own items running out is not enough.
local others_sold_out = ARGV[11] == '1'

if deadline_passed(deadline) then
  return {'late', '', 0, 0, '', 0}
end

local meta = redis.call('HMGET', meta_key, 'sale_id', 'starts_ms', 'ends_ms', 'total', 'limit',
                        'sold', 'expire_ms', 'shards')
if meta[8] then
  return {'sharded', '', 0, 0, '', 0}  -- a sharded sale's home: the caller learns its layout
end
local sale_id = meta[1] or ''
local sold_out_here = meta[1] and tonumber(meta[6]) >= tonumber(meta[4]) and 1 or 0

-- Every outcome is recorded in the same atomic step that decides it: no answer without a record.
local function answer(outcome, code, expires, retry_ms)
  redis.call('XADD', outbox_key, '*', 'k', key, 's', sale_id, 'u', user_id, 'i', item_id,
             'o', outcome, 'c', code or '', 't', now_text)
  return {outcome, code or '', expires or 0, retry_ms or 0, sale_id, sold_out_here}
end

local wait = take_token(user_bucket, user_rate, now)
if wait == 0 then
  wait = take_token(ip_bucket, ip_rate, now)
end
if wait > 0 then
  return answer('rate_limited', nil, nil, wait)
end

if sale_id == '' then
  if seen_open ~= '' then
    -- A sale Redis lost mid-period is being restored from PostgreSQL: a store is away, not the
    -- sale, and the attempt belongs to it.
    sale_id = seen_open
    return answer('unavailable')
  end
  return answer('no_active_sale')
end
local starts, ends = tonumber(meta[2]), tonumber(meta[3])
if now < starts or now >= ends then
  local opens_in = now < starts and (starts - now) or 0
  sale_id = ''  -- the attempt belongs to no open sale
  return answer('no_active_sale', nil, nil, opens_in)
end

local state = redis.call('HGET', items_key, item_id)
if not state then
  return answer('item_not_found')
end
if sold_out_here == 1 and others_sold_out then
  return answer('sold_out')
end

local kind, until_ms, holder, held_code = parse_state(state)
local live = kind == 'R' and until_ms > now
if live and holder == user_id then
  -- The same user asking again for an item they hold gets the same code; it counts once. The
  -- claim says the code was told again: release.lua never frees a reservation told twice.
  redis.call('HSET', codes_key, held_code, format_claim(item_id, user_id, until_ms, true))
  return answer('ok', held_code, until_ms)
end

-- Bought items score +inf, unexpired reservations score their expiry: both count.
local held = redis.call('ZCOUNT', user_key, '(' .. now_text, '+inf')
if held >= tonumber(meta[5]) then
  return answer('user_limit_reached')
end
if kind == 'S' or live then
  return answer('item_unavailable')
end

local expires = math.min(now + ttl, ends)
local expires_text = tostring(expires)
redis.call('HSET', items_key, item_id, format_state('R', expires_text, user_id, fresh))
redis.call('HSET', codes_key, fresh, format_claim(item_id, user_id, expires_text))
redis.call('ZADD', reserved_key, expires_text, item_id)
redis.call('ZADD', user_key, expires_text, item_id)
if held == 0 then
  -- A user's key goes when the sale's keys go, well after the sale ends; set once, when it is
  -- (re)made. (The codes hash and the reserved set get theirs from the sweeper.)
  redis.call('PEXPIREAT', user_key, meta[7])
end
return answer('ok', fresh, expires)
