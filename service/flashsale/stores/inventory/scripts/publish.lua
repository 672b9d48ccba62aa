-- publish.lua: makes a loaded sale visible in one step, only if it is not already there.
--
-- The loader fills the staging hashes first; checkout sees nothing until meta exists, so a
-- sale is never visible half-loaded. A second loader that lost the race just drops its copy.
local meta_key        = KEYS[1]  -- hash: the sale's meta; its existence is what makes the sale live
local items_key       = KEYS[2]  -- hash: item_id -> state
local codes_key       = KEYS[3]  -- hash: code -> claim
local items_staging   = KEYS[4]  -- hash: items as loaded
local codes_staging   = KEYS[5]  -- hash: codes as loaded (may not exist)
local reserved_key    = KEYS[6]  -- zset: reservations (none survive a reload)
local history_key     = KEYS[7]  -- hash: bucket -> items sold in it (item_state.lua)
local history_staging = KEYS[8]  -- hash: the sold history of the purchases loaded (may not exist)

local expire_ms = ARGV[1]  -- when the sale's keys may go, well after its end
-- ARGV[2..]: field/value pairs of meta

if redis.call('EXISTS', meta_key) == 1 then
  redis.call('DEL', items_staging, codes_staging, history_staging)
  return 0
end
redis.call('DEL', reserved_key, codes_key, history_key)
redis.call('RENAME', items_staging, items_key)
if redis.call('EXISTS', codes_staging) == 1 then
  redis.call('RENAME', codes_staging, codes_key)
  redis.call('PEXPIREAT', codes_key, expire_ms)
end
if redis.call('EXISTS', history_staging) == 1 then
  redis.call('RENAME', history_staging, history_key)
  redis.call('PEXPIREAT', history_key, expire_ms)
end
redis.call('HSET', meta_key, unpack(ARGV, 2))
redis.call('PEXPIREAT', meta_key, expire_ms)
redis.call('PEXPIREAT', items_key, expire_ms)
return 1
