"""Redis cost per checkout and Redis memory per sale, at 10,000 and at 1,000,000 items.

    python load/scaling.py [--sizes 10000 1000000] [--checkouts 3000] [--rounds 3]
                           [--sellout-max 100000]

Opens one sale per size (PostgreSQL rows, then Redis, through the real SaleKeeper; the 1M-item
sale takes some seconds), then drives checkout.lua through `flashsale.stores.inventory.Inventory`
directly (no HTTP), so only Redis is measured:

- reserve:  --checkouts checkouts of distinct free items by users of a 100k pool (the write path);
- conflict: the same items again by other users (item_unavailable: the read-only path);
- repeat:   the holders asking again (the same code back).

The phases run in --rounds rounds that alternate between the sales (so a busy moment of a shared
machine hits both alike); medians are reported. Before each phase CONFIG RESETSTAT; after it
INFO commandstats gives EVALSHA usec_per_call and the commands the script ran per call (commands
run inside scripts are counted too, with their own time: the rest is the Lua interpreter's),
which shows that nothing scans: every command is O(1) or O(log n) in the sale's size.

Memory: used_memory before/after loading each sale, MEMORY USAGE of its keys, the bytes a live
reservation adds, and, for sizes up to --sellout-max, the sale once every item is sold (checkout
+ purchase + confirm of each item: the largest a sale gets, apart from codes of abandoned
checkouts, which are counted per code).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kit

from flashsale.config import Settings
from flashsale.domain import new_attempt_key, new_code
from flashsale.stores.inventory import CheckoutAnswer, Inventory
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_inventory

# The scripts' deadline: nothing here waits on Redis long enough to pass it.
FAR = 2**62

USERS = 100_000
# Commands whose cost grows with the size of what they touch; none may appear per checkout.
SCANS = {
    "hgetall",
    "hkeys",
    "hvals",
    "hscan",
    "scan",
    "keys",
    "smembers",
    "zrange",
    "zrangebyscore",
    "xrange",
    "lrange",
    "sort",
}


def command_counts(client: Any, calls: int) -> dict[str, list[float]]:
    """Per script call: [commands run, their us], from INFO commandstats (EVALSHA left out).
    What the commands do not account for of EVALSHA's time is the Lua interpreter's."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): [round(v["calls"] / calls, 2), round(v["usec"] / calls, 2)]
        for name, v in sorted(stats.items())
        if name != "cmdstat_evalsha" and v["calls"] >= calls / 2
    }


def phase(client: Any, name: str, run: Any, calls: list[tuple]) -> dict[str, Any]:
    """Run `calls` one by one after CONFIG RESETSTAT; EVALSHA cost and commands per call."""
    client.config_resetstat()
    started = time.perf_counter()
    outcomes: dict[str, int] = {}
    for args in calls:
        reply = run(*args)
        outcomes[reply[0]] = outcomes.get(reply[0], 0) + 1
    wall = time.perf_counter() - started
    ev = kit.evalsha_stats(client)
    commands = command_counts(client, int(ev["calls"]) or 1)
    inside = round(sum(us for _, us in commands.values()), 2)
    return {
        "phase": name,
        "calls": int(ev["calls"]),
        "usec_per_call": ev["usec_per_call"],
        "client_round_trip_us": round(wall / len(calls) * 1e6, 1),
        "outcomes": outcomes,
        "commands_per_call": commands,
        "usec_in_commands": inside,
        "usec_in_lua": round(ev["usec_per_call"] - inside, 2),
        "scans": sorted(set(commands) & SCANS),
    }


def baseline(client: Any, calls: int) -> dict[str, Any]:
    """The floor on this machine: an empty script, and one doing 8 reads of a tiny hash."""
    empty = client.register_script("return 1")
    reads = client.register_script(
        "local n = 0 for i = 1, 8 do if redis.call('HGET', KEYS[1], 'f') then n = n + 1 end end"
        " return n"
    )
    client.hset("fs:bench:baseline", "f", "1")
    result = {}
    for name, script, keys in (("empty", empty, []), ("8 HGET", reads, ["fs:bench:baseline"])):
        script(keys=keys)  # loaded
        client.config_resetstat()
        for _ in range(calls):
            script(keys=keys)
        result[name] = kit.evalsha_stats(client)["usec_per_call"]
    client.unlink("fs:bench:baseline")
    return result


class SaleUnderTest:
    """One loaded sale and the checkouts measured on it, round after round."""

    TTL_MS = 600_000

    def __init__(self, stores: kit.Stores, size: int, checkouts: int, rounds: int, salt: int):
        env = kit.service_env(
            stores,
            FLASHSALE_ITEMS=size,
            FLASHSALE_USER_LIMIT=10,
            FLASHSALE_PERIOD=kit.open_period(salt=salt),
            # The COPY of a million items outlasts the 5 s default when busy.
            FLASHSALE_PG_STATEMENT_TIMEOUT_MS=600_000,
        )
        self.size = size
        self.inventory: Inventory = build_inventory(Settings.from_env(env))
        self.client = kit.redis_client(stores.redis_url)
        before = self.client.info("memory")["used_memory"]
        started = time.perf_counter()
        self.sale = kit.open_sale(env)
        self.result: dict[str, Any] = {
            "items": size,
            "sale_id": self.sale.sale_id,
            "open_seconds": round(time.perf_counter() - started, 1),
            "memory_loaded_bytes": self.client.info("memory")["used_memory"] - before,
            "keys_at_open": kit.sale_keys_memory(self.client, self.sale.sale_id),
            "rounds": [],
        }
        self.result["memory_loaded_bytes_per_item"] = round(
            self.result["memory_loaded_bytes"] / size, 1
        )
        self.keys = keys_for(self.sale.sale_id)
        # Distinct items for every round's reserve phase, so each reserves free items.
        rng = random.Random(size)
        self.count = min(checkouts, size // rounds)
        picked = [str(i) for i in rng.sample(range(1, size + 1), self.count * rounds)]
        self.items = [picked[r * self.count : (r + 1) * self.count] for r in range(rounds)]
        self.rng = rng

    def checkout(self, user: str, item: str) -> CheckoutAnswer:
        return self.inventory.checkout(
            self.sale.sale_id,
            user,
            item,
            now_ms=int(time.time() * 1000),
            ttl_ms=self.TTL_MS,
            fresh_code=new_code(self.sale.sale_id),
            user_rate=0,
            ip_rate=0,
            client_ip="",
            attempt_key=new_attempt_key(),
            deadline_ms=FAR,
        )

    def measure_round(self, number: int) -> None:
        items = self.items[number]
        holders = [f"u{self.rng.randrange(USERS)}" for _ in items]
        others = [f"v{self.rng.randrange(USERS)}" for _ in items]
        used_before = self.client.info("memory")["used_memory"]
        phases = [
            phase(self.client, "reserve", self.checkout, list(zip(holders, items, strict=True)))
        ]
        reserved = self.client.info("memory")["used_memory"] - used_before
        phases.append(
            phase(self.client, "conflict", self.checkout, list(zip(others, items, strict=True)))
        )
        phases.append(
            phase(self.client, "repeat", self.checkout, list(zip(holders, items, strict=True)))
        )
        self.result["rounds"].append(
            {"bytes_per_live_reservation": round(reserved / len(items), 1), "phases": phases}
        )

    def summarize(self) -> None:
        """Medians over the rounds, per phase."""
        rounds = self.result["rounds"]
        self.result["bytes_per_live_reservation"] = sorted(
            r["bytes_per_live_reservation"] for r in rounds
        )[len(rounds) // 2]
        self.result["phases"] = []
        for index, name in enumerate(("reserve", "conflict", "repeat")):
            runs = sorted((r["phases"][index] for r in rounds), key=lambda p: p["usec_per_call"])
            median = dict(runs[len(runs) // 2])
            median["usec_per_call_all_rounds"] = [
                p["usec_per_call"] for p in (r["phases"][index] for r in rounds)
            ]
            self.result["phases"].append(median)
            assert median["phase"] == name

    def sell_out(self) -> None:
        """Sell every item (checkout + purchase + confirm, users of 10 items each, at a time
        when the reservations above have expired) and measure the sale's memory then."""
        inventory, keys, client = self.inventory, self.keys, self.client
        now = int(time.time() * 1000) + self.TTL_MS + 1000
        codes = {}
        for index, item in enumerate(str(i) for i in range(1, self.size + 1)):
            reply = inventory.checkout(
                self.sale.sale_id,
                f"b{index // 10}",
                item,
                now_ms=now,
                ttl_ms=self.TTL_MS,
                fresh_code=new_code(self.sale.sale_id),
                user_rate=0,
                ip_rate=0,
                client_ip="",
                attempt_key=new_attempt_key(),
                deadline_ms=FAR,
            )
            if reply.outcome == "ok":
                codes[item] = reply.code
        client.config_resetstat()
        for code in codes.values():
            kind = inventory.purchase(
                self.sale.sale_id,
                code,
                now_ms=now + 1,
                user_rate=0,
                ip_rate=0,
                client_ip="",
                deadline_ms=FAR,
            ).kind
            if kind == "sold":
                inventory.confirm(self.sale.sale_id, code)
        purchase_stats = kit.evalsha_stats(client)
        client.delete(keys.outbox)  # drained within a second in production
        sold_out = kit.sale_keys_memory(client, self.sale.sale_id)
        self.result["purchase_usec_per_call"] = purchase_stats["usec_per_call"]
        self.result["sold_out_keys"] = sold_out
        self.result["sold_out_bytes_per_item"] = round(sold_out["total"] / self.size, 1)
        self.result["sold_out_status"] = inventory.figures(self.sale.sale_id, now + 2)._asdict()

    def drop(self) -> None:
        for key in self.client.scan_iter(match=f"{self.keys.prefix}*", count=1000):
            self.client.unlink(key)  # this run's sale only


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--checkouts", type=int, default=3000, help="calls per phase")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of phases, alternating between the sales (medians reported)",
    )
    parser.add_argument(
        "--sellout-max",
        type=int,
        default=100_000,
        help="sell out sales up to this size to measure their full memory",
    )
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    results = []
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-scale-")))
        stores = stack.enter_context(kit.stores(state))
        probe = kit.redis_client(stores.redis_url)
        version = probe.info("server")["redis_version"]
        floor = baseline(probe, args.checkouts)
        print(f"baseline EVALSHA us/call on this machine: {floor}", flush=True)
        sales = []
        for offset, size in enumerate(args.sizes):
            print(f"opening a sale of {size} items ...", flush=True)
            sales.append(SaleUnderTest(stores, size, args.checkouts, args.rounds, offset * 7919))
        # Alternate between the sales, so a busy moment of the machine hits both alike.
        for number in range(args.rounds):
            for sale in sales:
                sale.measure_round(number)
                us = [p["usec_per_call"] for p in sale.result["rounds"][-1]["phases"]]
                print(
                    f"  round {number + 1}, {sale.size} items: reserve/conflict/repeat {us} us",
                    flush=True,
                )
        for sale in sales:
            sale.summarize()
            if sale.size <= args.sellout_max:
                sale.sell_out()
            sale.drop()
            results.append(sale.result)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.out / f"scaling-{stamp}.json"
    path.write_text(
        json.dumps(
            {"redis_version": version, "baseline_usec_per_call": floor, "sales": results}, indent=2
        )
    )

    print(
        f"\n{'items':>9} {'open s':>7} {'B/item':>7} {'B/resv':>7} "
        f"{'reserve us':>11} {'conflict us':>12} {'repeat us':>10}  scans"
    )
    for r in results:
        us = {p["phase"]: p["usec_per_call"] for p in r["phases"]}
        scans = sorted({s for p in r["phases"] for s in p["scans"]}) or "none"
        print(
            f"{r['items']:>9} {r['open_seconds']:>7} {r['memory_loaded_bytes_per_item']:>7} "
            f"{r['bytes_per_live_reservation']:>7} {us['reserve']:>11} {us['conflict']:>12} "
            f"{us['repeat']:>10}  {scans}"
        )
    for r in results:
        print(
            f"\n{r['items']} items: loaded {r['memory_loaded_bytes']} B "
            f"(items hash {r['keys_at_open']['items']} B)"
        )
        for p in r["phases"]:
            print(
                f"  {p['phase']:<8} {p['usec_per_call']} us/call = commands "
                f"{p['usec_in_commands']} + Lua {p['usec_in_lua']}; per call [count, us]: "
                f"{p['commands_per_call']}"
            )
        if "sold_out_keys" in r:
            print(
                f"  sold out: {r['sold_out_keys']['total']} B "
                f"({r['sold_out_bytes_per_item']} B/item) {r['sold_out_keys']}; "
                f"purchase.lua {r['purchase_usec_per_call']} us/call"
            )
    if len(results) > 1:
        first, last = results[0], results[-1]
        for name in ("reserve", "conflict", "repeat"):
            a = next(p for p in first["phases"] if p["phase"] == name)["usec_per_call"]
            b = next(p for p in last["phases"] if p["phase"] == name)["usec_per_call"]
            print(f"{name}: {last['items']} vs {first['items']} items: {b} / {a} us = {b / a:.2f}x")
    print(f"baseline EVALSHA us/call (same Redis {version}, same run): {floor}")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
