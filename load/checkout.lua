-- checkout.lua: the wrk script of load/bench.py.
--
-- Every request is POST /checkout?user_id=<random user>&id=<random item>, users drawn from a
-- large pool (so no user meets the per-user limit) and items from 1..N. Settings come from the
-- environment: FS_ITEMS (N, default 100000), FS_USERS (pool size, default 1000000).
-- At the end it prints one line "FSRESULT <json>" with counts by status, errors and latency
-- percentiles in microseconds, which bench.py parses (wrk's own text report is printed too).

local items = tonumber(os.getenv("FS_ITEMS") or "100000")
local users = tonumber(os.getenv("FS_USERS") or "1000000")
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

statuses = {}

function init(args)
  -- Each wrk thread has its own Lua state: seed each differently.
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  local path = "/checkout?user_id=u" .. math.random(1, users) .. "&id=" .. math.random(1, items)
  return wrk.format("POST", path)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    for status, n in pairs(counts) do
      by_status[tostring(status)] = (by_status[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(by_status) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local pct = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    table.insert(pct, string.format('"%s": %d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'FSRESULT {"requests": %d, "duration_us": %d, "bytes": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, ' ..
    '"latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, "percentiles": {%s}}}\n',
    summary.requests, summary.duration, summary.bytes, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency.stdev, latency.max, table.concat(pct, ", ")))
end
