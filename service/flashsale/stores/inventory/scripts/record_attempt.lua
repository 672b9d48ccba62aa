-- record_attempt.lua: records a checkout attempt decided before checkout.lua could run
-- (a malformed request, or one refused before the stores), attributed to the sale open at that
-- moment, if any. It carries no deadline, unlike the scripts that decide: its outcome is fixed
-- already, so when Redis runs it after its caller gave up and wrote the row straight into
-- PostgreSQL, the drain finds that row under the same name and time and adds nothing.
local meta_key   = KEYS[1]  -- hash: sale_id, starts_ms, ends_ms of this period's sale
local outbox_key = KEYS[2]  -- stream: checkout attempts waiting to be drained into PostgreSQL

local outcome  = ARGV[1]
local now      = tonumber(ARGV[2])
-- ARGV[3], ARGV[4]: user_id and item_id as received; '\0' stands for a missing parameter.
local key      = ARGV[5]  -- the attempt's name, chosen by the pod (its row's key)

local meta = redis.call('HMGET', meta_key, 'sale_id', 'starts_ms', 'ends_ms')
local sale_id = ''
if meta[1] and now >= tonumber(meta[2]) and now < tonumber(meta[3]) then
  sale_id = meta[1]
end
local fields = {'k', key, 's', sale_id, 'o', outcome, 'c', '', 't', tostring(now)}
if ARGV[3] ~= '\0' then
  table.insert(fields, 'u'); table.insert(fields, ARGV[3])
end
if ARGV[4] ~= '\0' then
  table.insert(fields, 'i'); table.insert(fields, ARGV[4])
end
return redis.call('XADD', outbox_key, '*', unpack(fields))
