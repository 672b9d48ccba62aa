-- seeded.lua: load/checkout.lua with its random users and items drawn from a fixed seed
-- (FS_SEED, default 1), so that runs compared with each other (load/sharding.py) send the same
-- sequence of checkouts. FS_ITEMS and FS_USERS as in checkout.lua; the same FSRESULT line.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "checkout.lua")

local seed = tonumber(os.getenv("FS_SEED") or "1")

function init(args)
  -- Each wrk thread has its own Lua state: a sequence of its own, the same in every run.
  math.randomseed(seed * 1000 + (tid or 0) * 7919)
end
