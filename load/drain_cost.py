"""What moving one checkout attempt from the Redis outbox into PostgreSQL costs, in CPU.

    python load/drain_cost.py [--attempts 50000] [--rounds 3]

Starts Redis (AOF on) and PostgreSQL (or uses REDIS_URL / DATABASE_URL), opens a sale, and in
each round fills its outbox with --attempts entries shaped like checkout.lua's (two in three
successful, with a code), then drains them with `drain_sale`. It prints the CPU per drained
attempt of the drainer (this process), Redis and PostgreSQL: figures that, unlike wall-clock
time, barely move when other work shares the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import kit
import redis

from flashsale.config import Settings
from flashsale.sale.drain import drain_sale
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_keeper


def fill(client: redis.Redis, sale_id: str, count: int, first: int) -> None:
    """`count` outbox entries with the fields checkout.lua writes."""
    outbox_key = keys_for(sale_id).outbox
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        ok = n % 3 != 0
        pipe.xadd(
            outbox_key,
            {
                "s": sale_id,
                "u": f"user-{n % 2000}",
                "i": str(n % 10_000 + 1),
                "o": "ok" if ok else "item_unavailable",
                "c": f"{sale_id}.{n:022d}" if ok else "",
                "t": str(int(time.time() * 1000)),
            },
        )
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    results: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-drain-")))
        stores = stack.enter_context(kit.stores(state))
        keeper = build_keeper(
            Settings.from_env(kit.service_env(stores, FLASHSALE_PERIOD=kit.open_period()))
        )
        stack.callback(keeper.database.close)
        client = kit.redis_client(stores.redis_url)
        sale, _ = keeper.open_sale()
        pids = kit.store_pids(stores)
        for number in range(args.rounds):
            fill(client, sale.sale_id, args.attempts, number * args.attempts)
            before = {part: kit.cpu_seconds([pid]) for part, pid in pids.items()}
            started = time.process_time()
            moved = drain_sale(
                keeper.inventory, keeper.database, sale.sale_id, max_batches=1_000_000
            )
            used = {"drainer": time.process_time() - started}
            used |= {part: kit.cpu_seconds([pid]) - before[part] for part, pid in pids.items()}
            if moved != args.attempts:
                print(f"moved {moved} of {args.attempts}", file=sys.stderr)
                return 1
            for part, seconds in used.items():
                results.setdefault(part, []).append(round(seconds / moved * 1e6, 1))

    print(f"CPU us per drained attempt, median of {args.rounds} rounds (all rounds in brackets)")
    print("  " + "  ".join(f"{part} {median(runs):5.1f} {runs}" for part, runs in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
