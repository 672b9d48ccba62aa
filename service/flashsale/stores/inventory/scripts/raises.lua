-- raises.lua: a library, prepended by the loader to the scripts that name it. On a sharded sale
-- a purchase whose item lives on another shard raises the user's token for the item to bought
-- (+inf) before it sells the item there (purchase_user.lua), and ends the raise once the item's
-- shard answered (end_raise.lua). While raises of an item are open, the raises hash keeps, per
-- "<user_id> <item_id>", how many are open and the lowest score the token may fall back to
-- when the last one ends: what it was before, and whatever else asked for the item since ('' =
-- none). Nothing lowers a raised token but the end of its last raise.

-- The higher of two token scores as text: '' below all, 'inf' above all.
local function higher(a, b)
  if a == '' then
    return b
  end
  if b == '' or tonumber(a) >= tonumber(b) then
    return a
  end
  return b
end

-- How many raises of the field are open and the score it falls back to; nil when none is.
local function open_raises(raises_key, field)
  local record = redis.call('HGET', raises_key, field)
  if not record then
    return nil
  end
  local open, floor = string.match(record, '^(%d+) (.*)$')
  return tonumber(open), floor
end

-- While raises of the field are open, `score` joins what it falls back to; returns whether
-- they were (then the token itself stays as it is).
local function join_raises(raises_key, field, score)
  local open, floor = open_raises(raises_key, field)
  if not open then
    return false
  end
  redis.call('HSET', raises_key, field, open .. ' ' .. higher(floor, score))
  return true
end
