"""Where checkout.lua's time goes in Redis: probes of its parts and variants of the script.

    python load/script_anatomy.py [--calls 3000] [--rounds 3]

On a throwaway Redis (the newest redis-server on PATH, AOF on as in production), it measures
EVALSHA usec_per_call (INFO commandstats, median of --rounds) of:

- probes: the fixed cost of a call with checkout's keys and arguments, the token-bucket
  library at rate 0, the meta HMGET, returning a 5-value table, number-to-string conversions;
- variants of the real checkout.lua on the reserve path (a free item, a fresh user, the user
  rate limit on as by default): the script as shipped, then with one change after another (a
  one-field XADD, no PEXPIREAT of the user set, no ZADD to the reserved set, no HSET to the
  codes hash), to price each. The machine being shared, read the lowest of the rounds too.

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
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import kit

from flashsale import devservers

ITEMS = 10_000
PREFIX = "fs:{sale:20260101T000000Z-3600}:"
KEYS = [
    PREFIX + k
    for k in (
        "meta",
        "items",
        "codes",
        "reserved",
        "user:u1",
        "outbox",
        "bucket:u:u1",
        "bucket:ip:",
    )
]

PROLOGUE = """local meta_key = KEYS[1] local user_id = ARGV[1] local item_id = ARGV[2]
local now = tonumber(ARGV[3]) local ttl = tonumber(ARGV[4]) local fresh = ARGV[5]
local user_rate = tonumber(ARGV[6]) local ip_rate = tonumber(ARGV[7])
"""
HMGET = (
    "local m = redis.call('HMGET', meta_key, 'sale_id', 'starts_ms', 'ends_ms', 'total',"
    " 'limit', 'sold', 'expire_ms') "
)


def scripts() -> tuple[str, str]:
    folder = resources.files("flashsale") / "scripts"
    bucket = (folder / "token_bucket.lua").read_text()
    return bucket, bucket + "\n" + (folder / "checkout.lua").read_text()


def probes(bucket: str) -> dict[str, str]:
    take = (
        "local w = take_token(KEYS[7], user_rate, now) if w == 0 then "
        "w = take_token(KEYS[8], ip_rate, now) end "
    )
    return {
        "return 1 (8 keys, 7 args)": "return 1",
        "+ read the arguments": PROLOGUE + "return 1",
        "+ token buckets at rate 0": bucket + PROLOGUE + take + "return 1",
        "+ HMGET of 7 meta fields": bucket + PROLOGUE + take + HMGET + "return 1",
        "+ return a 5-value table": bucket
        + PROLOGUE
        + take
        + HMGET
        + "return {'ok', fresh, now + ttl, 0, m[1]}",
        "3 number-to-string conversions only": PROLOGUE
        + "local a = tostring(now) local b = '(' .. now "
        "local d = 'R ' .. (now + ttl) .. ' ' .. user_id .. ' ' .. fresh return 1",
    }


# Each variant applies one more change to the previous one: (old text, new text).
CHANGES = [
    (
        "one-field XADD",
        "redis.call('XADD', outbox_key, '*', 's', sale_id, 'u', user_id, 'i', item_id,\n"
        "             'o', outcome, 'c', code or '', 't', now_text)",
        "redis.call('XADD', outbox_key, '*', 'a', ARGV[9] .. outcome .. ' ' .. (code or ''))",
    ),
    ("- PEXPIREAT of the user set", "redis.call('PEXPIREAT', user_key, meta[7])\n", ""),
    ("- ZADD to the reserved set", "redis.call('ZADD', reserved_key, expires_text, item_id)\n", ""),
    (
        "- HSET to the codes hash",
        "redis.call('HSET', codes_key, fresh, item_id .. ' ' .. user_id .. ' ' .. expires_text)\n",
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


def median_usec(client: Any, run: Callable[[], None], calls: int, rounds: int) -> list[float]:
    values = []
    for _ in range(rounds):
        client.config_resetstat()
        for _ in range(calls):
            run()
        values.append(kit.evalsha_stats(client)["usec_per_call"])
    return values


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--user-rate", type=float, default=50.0, help="FLASHSALE_RATE_PER_USER on the reserve path"
    )
    args = parser.parse_args(argv)
    calls = min(args.calls, ITEMS // 2)

    bucket, checkout = scripts()
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-lua-")))
        server = stack.enter_context(
            devservers.start_redis(state, appendonly=True, executable=kit.newest_redis_server())
        )
        client = kit.redis_client(server.url)
        print(
            f"Redis {client.info('server')['redis_version']}; EVALSHA usec_per_call, "
            f"median of {args.rounds} x {calls} calls (all rounds in brackets)"
        )

        now = int(time.time() * 1000)
        client.hset(KEYS[0], mapping={"sale_id": "S", "starts_ms": 1, "ends_ms": 10**13})
        probe_args = ["u1", "5", now, 120_000, "S." + secrets.token_urlsafe(16), 0, 0]
        print("\nprobes (each line adds to the one above, except the last):")
        for name, source in probes(bucket).items():
            script = client.register_script(source)
            values = median_usec(
                client, lambda s=script: s(keys=KEYS, args=probe_args), calls, args.rounds
            )
            print(f"  {name:38} {sorted(values)[len(values) // 2]:7.2f}  {values}")

        found, skipped = variants(checkout)
        print("\ncheckout.lua on the reserve path (each line adds a change to the one above):")
        rng = random.Random(7)
        for name, source in found.items():
            script = client.register_script(source)
            values = []
            for _ in range(args.rounds):
                load_sale(client, now)
                batch = []
                for item in rng.sample(range(1, ITEMS + 1), calls):
                    user = f"u{rng.randrange(100_000)}"
                    keys = [PREFIX + k for k in ("meta", "items", "codes", "reserved")]
                    keys += [
                        PREFIX + f"user:{user}",
                        PREFIX + "outbox",
                        PREFIX + f"bucket:u:{user}",
                        PREFIX + "bucket:ip:",
                    ]
                    batch.append(
                        (
                            keys,
                            [
                                user,
                                str(item),
                                now,
                                120_000,
                                "S." + secrets.token_urlsafe(16),
                                args.user_rate,
                                0,
                                0,
                                f"S {user} {item} {now} ",
                            ],
                        )
                    )
                client.config_resetstat()
                outcomes = set()
                for keys, call_args in batch:
                    outcomes.add(script(keys=keys, args=call_args)[0])
                values.append(kit.evalsha_stats(client)["usec_per_call"])
                assert outcomes == {"ok"}, outcomes
            print(f"  {name:38} {sorted(values)[len(values) // 2]:7.2f}  {values}")
        for name in skipped:
            print(f"  (skipped: {name!r}: the shipped script no longer has that text)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
