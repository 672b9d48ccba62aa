"""Where checkout.lua's time goes in Redis: the reserve path built up command by command, and
variants of the shipped script.

    python load/script_anatomy.py [--calls 3000] [--rounds 3]

On a throwaway Redis (the newest redis-server on PATH, AOF on as in production), every line is
--calls checkouts on the reserve path (a free item, a fresh user), sent in pipelines of 25 as
the workers' Batcher sends them, and its figure is EVALSHA usec_per_call (INFO commandstats),
median of --rounds (all rounds in brackets; the machine being shared, read the lowest too):

- build-up: a script with checkout's keys and arguments that does nothing, then checkout.lua's
  reserve-path commands added one at a time with their real arguments (the rate limit off, as
  in bench.py), so each line's increase is what that command costs where it stands; last, the
  shipped script with the rate limit off, whose difference is its Lua beyond the calls;
- variants of the real checkout.lua (the user rate limit on, as by default): the script as
  shipped, then with one change after another (a one-field XADD, no PEXPIREAT of the user set,
  no ZADD to the reserved set, no HSET to the codes hash).

Variants are text replacements of the shipped script; one that no longer matches is skipped and
said so (the script changed: update the replacement).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kit

from flashsale.dev.servers import start_redis
from flashsale.stores.inventory.base import script_text

ITEMS = 10_000
PIPELINE = 25  # calls per round-trip, about what the Batcher carries under load
PREFIX = "fs:{sale:20260101T000000Z-3600}:"
# The reserve path of checkout.lua, one command a line, with the script's own arguments.
BUILD_UP = [
    (
        "nothing (8 keys, 9 arguments)",
        "local user_id, item_id, now_text = ARGV[1], ARGV[2], ARGV[3]\n"
        "local now, ttl, fresh = tonumber(now_text), tonumber(ARGV[4]), ARGV[5]\n",
    ),
    (
        "+ HMGET of 7 meta fields",
        "local meta = redis.call('HMGET', KEYS[1], 'sale_id', 'starts_ms', 'ends_ms', 'total',"
        " 'limit', 'sold', 'expire_ms')\n",
    ),
    ("+ HGET of the item", "local state = redis.call('HGET', KEYS[2], item_id)\n"),
    ("+ ZCOUNT of the user set", "redis.call('ZCOUNT', KEYS[5], '(' .. now_text, '+inf')\n"),
    (
        "+ HSET of the item",
        "local expires_text = tostring(math.min(now + ttl, tonumber(meta[3])))\n"
        "redis.call('HSET', KEYS[2], item_id, 'R ' .. expires_text .. ' ' .. user_id .. ' ' .."
        " fresh)\n",
    ),
    (
        "+ HSET to the codes hash",
        "redis.call('HSET', KEYS[3], fresh, item_id .. ' ' .. user_id .. ' ' .. expires_text)\n",
    ),
    ("+ ZADD to the reserved set", "redis.call('ZADD', KEYS[4], expires_text, item_id)\n"),
    ("+ ZADD to the (new) user set", "redis.call('ZADD', KEYS[5], expires_text, item_id)\n"),
    ("+ PEXPIREAT of the user set", "redis.call('PEXPIREAT', KEYS[5], meta[7])\n"),
    (
        "+ XADD of the attempt (6 fields)",
        "redis.call('XADD', KEYS[6], '*', 's', meta[1], 'u', user_id, 'i', item_id, 'o', 'ok',"
        " 'c', fresh, 't', now_text)\n",
    ),
    ("+ return the 5-value answer", "return {'ok', fresh, expires_text, 0, meta[1]}"),
]


def shipped_checkout() -> str:
    """checkout.lua as the service loads it: after the libraries it requires."""
    return script_text("checkout")


def build_up() -> dict[str, str]:
    """Each script adds the next line to the one before."""
    scripts, body = {}, ""
    for name, line in BUILD_UP:
        body += line
        scripts[name] = body if line.startswith("return") else body + "return 1"
    return scripts


# Each variant applies one more change to the previous one: (old text, new text).
CHANGES = [
    (
        "one-field XADD",
        "redis.call('XADD', outbox_key, '*', 'k', key, 's', sale_id, 'u', user_id, 'i', item_id,\n"
        "             'o', outcome, 'c', code or '', 't', now_text)",
        "redis.call('XADD', outbox_key, '*', 'a', key .. outcome .. ' ' .. (code or ''))",
    ),
    ("- PEXPIREAT of the user set", "redis.call('PEXPIREAT', user_key, meta[7])\n", ""),
    ("- ZADD to the reserved set", "redis.call('ZADD', reserved_key, expires_text, item_id)\n", ""),
    (
        "- HSET to the codes hash",
        "redis.call('HSET', codes_key, fresh, format_claim(item_id, user_id, expires_text))\n",
        "",
    ),
]


def variants(checkout: str) -> tuple[dict[str, str], list[str]]:
    found = {"checkout.lua as shipped": checkout}
    skipped = []
    current = checkout
    for name, old, new in CHANGES:
        if old not in current:
            skipped.append(name)
            continue
        current = current.replace(old, new)
        found[f"+ {name}"] = current
    return found, skipped


def load_sale(client: Any, now: int) -> None:
    client.delete(*[PREFIX + k for k in ("meta", "items", "codes", "reserved", "outbox")])
    client.hset(
        PREFIX + "meta",
        mapping={
            "sale_id": "S",
            "starts_ms": now - 1000,
            "ends_ms": now + 10**9,
            "total": ITEMS,
            "limit": 10,
            "sold": 0,
            "expire_ms": now + 10**10,
        },
    )
    pipe = client.pipeline(transaction=False)
    for start in range(1, ITEMS + 1, 1000):
        pipe.hset(PREFIX + "items", mapping={str(i): "-" for i in range(start, start + 1000)})
    pipe.execute()
    for key in client.scan_iter(match=PREFIX + "user:*", count=1000):
        client.unlink(key)


def reserve_usec(
    client: Any, source: str, calls: int, rounds: int, user_rate: float, rng: random.Random
) -> list[float]:
    """EVALSHA usec_per_call of `calls` reserving checkouts, per round, each on a fresh sale."""
    script = client.register_script(source)
    values = []
    for _ in range(rounds):
        now = int(time.time() * 1000)
        load_sale(client, now)
        batch = []
        for item in rng.sample(range(1, ITEMS + 1), calls):
            user = f"u{rng.randrange(100_000)}"
            keys = [PREFIX + k for k in ("meta", "items", "codes", "reserved")]
            keys += [PREFIX + f"user:{user}", PREFIX + "outbox", PREFIX + f"bucket:u:{user}"]
            keys.append(PREFIX + "bucket:ip:")
            code = "S." + secrets.token_urlsafe(16)
            key = f"S {user} {item} {now} "  # the one-field XADD variant's pre-joined row
            args = [user, str(item), now, 120_000, code, user_rate, 0, "", key, now + 10**9]
            batch.append((keys, args))
        client.config_resetstat()
        outcomes = set()
        for start in range(0, len(batch), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for keys, call_args in batch[start : start + PIPELINE]:
                script(keys=keys, args=call_args, client=pipe)
            outcomes.update(
                str(answer[0] if isinstance(answer, list) else answer) for answer in pipe.execute()
            )
        values.append(kit.evalsha_stats(client)["usec_per_call"])
        if outcomes - {"ok", "1"}:
            raise SystemExit(f"not the reserve path: {outcomes}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--user-rate", type=float, default=50.0, help="FLASHSALE_RATE_PER_USER of the variants"
    )
    args = parser.parse_args(argv)
    calls = min(args.calls, ITEMS // 2)

    checkout = shipped_checkout()
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-lua-")))
        server = stack.enter_context(
            start_redis(state, appendonly=True, executable=kit.newest_redis_server())
        )
        client = kit.redis_client(server.url)
        print(
            f"Redis {client.info('server')['redis_version']}; EVALSHA usec_per_call, "
            f"median of {args.rounds} x {calls} calls (all rounds in brackets)"
        )
        rng = random.Random(7)

        def show(name: str, values: list[float], before: float | None) -> float:
            median = sorted(values)[len(values) // 2]
            step = f"{median - before:+6.2f}" if before is not None else " " * 6
            print(f"  {name:40} {median:7.2f} {step}  {values}")
            return median

        print("\nthe reserve path built up (each line adds to the one above; its increase):")
        before = None
        for name, source in build_up().items():
            before = show(name, reserve_usec(client, source, calls, args.rounds, 0, rng), before)
        # The same commands with the script's decisions around them (its Lua beyond the calls).
        values = reserve_usec(client, checkout, calls, args.rounds, 0, rng)
        show("checkout.lua as shipped, rate limit off", values, before)

        found, skipped = variants(checkout)
        print("\ncheckout.lua on the reserve path (each line adds a change to the one above):")
        before = None
        for name, source in found.items():
            values = reserve_usec(client, source, calls, args.rounds, args.user_rate, rng)
            before = show(name, values, before)
        for name in skipped:
            print(f"  (skipped: {name!r}: the shipped script no longer has that text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
