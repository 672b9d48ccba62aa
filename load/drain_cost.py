"""What moving one checkout attempt from the Redis outbox into PostgreSQL costs, in CPU.

    python load/drain_cost.py [--attempts 50000] [--rounds 3]

Starts Redis (AOF on) and PostgreSQL (or uses REDIS_URL / DATABASE_URL), opens a sale, and in
each round fills its outbox with --attempts entries shaped like checkout.lua's (two in three
successful, with a code), then drains them with `outbox.drain_sale`. It prints the CPU per
drained attempt of the drainer (this process), Redis and PostgreSQL: figures that, unlike
wall-clock time, barely move when other work shares the machine.

Each round also drains the same amount the way the drainer did before it trimmed the stream
(XDEL of each batch's ids), so the two are compared side by side in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import kit

from flashsale import outbox
from flashsale.config import Settings
from flashsale.inventory import Inventory, keys_for
from flashsale.records import Database
from flashsale.wiring import build_keeper

Drain = Callable[[Inventory, Database, str], int]


def fill(inventory: Inventory, sale_id: str, count: int, first: int) -> None:
    """`count` outbox entries with the fields checkout.lua writes."""
    client = inventory.client
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


def drain_trimming(inventory: Inventory, database: Database, sale_id: str) -> int:
    return outbox.drain_sale(inventory, database, sale_id, max_batches=1_000_000)


def drain_deleting_ids(inventory: Inventory, database: Database, sale_id: str) -> int:
    """The drain before the trim: the same batches, deleted by their ids."""
    client = inventory.client
    outbox_key = keys_for(sale_id).outbox
    moved = 0
    while entries := client.xrange(outbox_key, count=outbox.BATCH):
        database.insert_attempts([outbox._row(sale_id, eid, fields) for eid, fields in entries])
        client.xdel(outbox_key, *(eid for eid, _ in entries))
        moved += len(entries)
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    drains: dict[str, Drain] = {
        "trim (shipped)": drain_trimming,
        "XDEL of the ids": drain_deleting_ids,
    }
    results: dict[str, dict[str, list[float]]] = {name: {} for name in drains}
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-drain-")))
        stores = stack.enter_context(kit.stores(state))
        keeper = build_keeper(
            Settings.from_env(kit.service_env(stores, FLASHSALE_PERIOD=kit.open_period()))
        )
        stack.callback(keeper.database.close)
        sale, _ = keeper.open_sale()
        pids = kit.store_pids(stores)
        first = 0
        for _ in range(args.rounds):
            for name, drain in drains.items():
                fill(keeper.inventory, sale.sale_id, args.attempts, first)
                first += args.attempts
                before = {part: kit.cpu_seconds([pid]) for part, pid in pids.items()}
                started = time.process_time()
                moved = drain(keeper.inventory, keeper.database, sale.sale_id)
                used = {"drainer": time.process_time() - started}
                used |= {part: kit.cpu_seconds([pid]) - before[part] for part, pid in pids.items()}
                if moved != args.attempts:
                    print(f"{name}: moved {moved} of {args.attempts}", file=sys.stderr)
                    return 1
                for part, seconds in used.items():
                    results[name].setdefault(part, []).append(round(seconds / moved * 1e6, 1))

    print(f"CPU us per drained attempt, median of {args.rounds} rounds (all rounds in brackets)")
    for name, parts in results.items():
        shown = "  ".join(f"{part} {median(runs):5.1f} {runs}" for part, runs in parts.items())
        print(f"  {name:16} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
