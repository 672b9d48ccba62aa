-- rate_limit.lua: spends one token of a client address's bucket for a read that does work (the
-- sale's status, its item pages). checkout.lua and purchase.lua spend from the same bucket
-- inside their own decision: one budget per address.
-- requires: token_bucket
local bucket = KEYS[1]            -- string: token bucket of this client address (token_bucket.lua)

local rate = tonumber(ARGV[1])    -- requests per second per client address
local now  = tonumber(ARGV[2])    -- ms since the epoch

return take_token(bucket, rate, now)
