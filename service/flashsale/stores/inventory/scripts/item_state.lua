-- item_state.lua: a library, prepended by the loader to the scripts that name it. The one
-- encoding of an item's state and of a code's claim in Lua (codec.py is the one in Python).
--
-- Item states (the items hash, item_id -> state):
--   "-"                                  free
--   "R <expires_ms> <user_id> <code>"    reserved until expires_ms (free again once it passed)
--   "S <purchased_ms> <user_id> <code>"  sold
-- Claims (the codes hash, code -> claim): "<item_id> <user_id> <expires_ms>".

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

-- item_id, user_id and expires_ms (a number) of a claim; nil when there is none.
local function parse_claim(claim)
  if not claim then
    return nil
  end
  local item_id, user_id, expires = string.match(claim, '^(%S+) (%S+) (%d+)$')
  return item_id, user_id, tonumber(expires)
end

local function format_claim(item_id, user_id, expires)
  return item_id .. ' ' .. user_id .. ' ' .. expires
end
