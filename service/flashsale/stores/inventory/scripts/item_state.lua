-- item_state.lua: a library, prepended by the loader to the scripts that name it. The one
-- encoding of an item's state and of a code's claim in Lua (codec.py is the one in Python).
--
-- Item states (the items hash, item_id -> state):
--   "-"                                  free
--   "R <expires_ms> <user_id> <code>"    reserved until expires_ms (free again once it passed)
--   "S <purchased_ms> <user_id> <code>"  sold
-- Claims (the codes hash, code -> claim): "<item_id> <user_id> <expires_ms>", and " again" once
-- a second checkout of the same user answered with the code (so it was told at least once).
-- The sold history (a hash, bucket -> items sold in it): bucket = (ms since the opening) // size,
-- size = the period / 360 rounded up to whole seconds, at least 1 s.
--
-- deadline_passed(deadline_ms): whether Redis's own clock is past the caller's deadline. A
-- script that decides checks it first and writes nothing when it is: the caller has given up
-- and answered `unavailable` (and recorded that), so the call must not be decided after all.

-- kind ('R' or 'S', nil when free or missing), the time, the holder and the code of a state.
local function parse_state(state)
  if not state then
    return nil
  end
  local kind, at, holder, code = string.match(state, '^(%u) (%d+) (%S+) (%S+)$')
  return kind, tonumber(at), holder, code
end

local function format_state(kind, at, user_id, code)
  return kind .. ' ' .. at .. ' ' .. user_id .. ' ' .. code
end

-- item_id, user_id, expires_ms (a number) and whether it was told again; nil when none.
local function parse_claim(claim)
  if not claim then
    return nil
  end
  local item_id, user_id, expires, rest = string.match(claim, '^(%S+) (%S+) (%d+)(.*)$')
  return item_id, user_id, tonumber(expires), rest == ' again'
end

local function format_claim(item_id, user_id, expires, again)
  return item_id .. ' ' .. user_id .. ' ' .. expires .. (again and ' again' or '')
end

local function deadline_passed(deadline_ms)
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(deadline_ms)
end

-- One more item sold at `at` (delta 1), or one sold at `at` undone (delta -1), in the sale's sold
-- history. The hash expires with the sale (its meta's expire_ms), set when a bucket is started.
local function count_sold(history_key, meta_key, at, delta)
  local meta = redis.call('HMGET', meta_key, 'starts_ms', 'ends_ms', 'expire_ms')
  local starts, ends = tonumber(meta[1]), tonumber(meta[2])
  if not starts or not ends then
    return
  end
  local size = math.max(1, math.ceil((ends - starts) / 360000)) * 1000
  local bucket = math.floor(math.max(0, at - starts) / size)
  if redis.call('HINCRBY', history_key, bucket, delta) == 1 and meta[3] then
    redis.call('PEXPIREAT', history_key, meta[3])
  end
end
