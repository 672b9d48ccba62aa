-- token_bucket.lua: a library, prepended by the loader to the scripts that name it.
--
-- take_token(key, rate, now) spends one token from the bucket stored at `key` (a string
-- "<tokens> <last refill ms>", two commands a call). The bucket holds one second's worth of
-- tokens (at least one) and refills continuously. Returns 0 when the request may pass,
-- otherwise the milliseconds until a token is available. A rate <= 0 turns the limit off.
local function take_token(key, rate, now)
  if rate <= 0 then
    return 0
  end
  local capacity = math.max(rate, 1)
  local tokens, last = capacity, now
  local saved = redis.call('GET', key)
  if saved then
    local saved_tokens, saved_last = string.match(saved, '^(%S+) (%S+)$')
    tokens, last = tonumber(saved_tokens) or capacity, tonumber(saved_last) or now
  end
  -- Clocks of different pods may disagree by a little: never refill backwards.
  local elapsed = math.max(now - last, 0)
  tokens = math.min(capacity, tokens + elapsed * rate / 1000)
  if tokens < 1 then
    return math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('SET', key, (tokens - 1) .. ' ' .. math.max(now, last),
             'PX', math.ceil(capacity * 1000 / rate) + 1000)
  return 0
end
