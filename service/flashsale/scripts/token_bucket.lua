-- token_bucket.lua: a library, prepended by the loader to the scripts that rate-limit.
--
-- take_token(key, rate, now) spends one token from the bucket stored at `key` (a hash with
-- fields t = tokens, ts = last refill in ms). The bucket holds one second's worth of tokens
-- (at least one) and refills continuously. Returns 0 when the request may pass, otherwise
-- the milliseconds until a token is available. A rate <= 0 turns the limit off.
local function take_token(key, rate, now)
  if rate <= 0 then
    return 0
  end
  local capacity = math.max(rate, 1)
  local bucket = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(bucket[1]) or capacity
  local last = tonumber(bucket[2]) or now
  -- Clocks of different pods may disagree by a little: never refill backwards.
  local elapsed = math.max(now - last, 0)
  tokens = math.min(capacity, tokens + elapsed * rate / 1000)
  if tokens < 1 then
    return math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', key, 't', tostring(tokens - 1), 'ts', tostring(math.max(now, last)))
  redis.call('PEXPIRE', key, math.ceil(capacity * 1000 / rate) + 1000)
  return 0
end
