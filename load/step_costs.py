"""What each step of a checkout costs the Redis node that runs it, and the worker that sends it.

    python load/step_costs.py [--calls 4000] [--concurrency 16] [--rounds 3]

Run by load/sharding.py on its cluster (the environment names the stores: REDIS_URL of a
cluster node, FLASHSALE_REDIS_CLUSTER=on, DATABASE_URL, the sale's settings). Runs as a gevent
worker does (sockets patched first), calling `Inventory.checkout` as the service does, through
its Batchers, from --concurrency greenlets at once: reserving checkouts (a free item, a fresh
user each), on a fresh sale over one shard and a fresh sale over three:

- `single_k1`: checkout.lua, K=1, the whole checkout on the sale's node;
- `single_k3`: checkout.lua on a sale over 3 shards, users of the items' shard (1 checkout in K);
- `user` / `item`: the two steps on a sale over 3 shards, users of shard 0 and items of shard 1:
  checkout_user.lua on shard 0's node, checkout_item.lua on shard 1's.

For each: the node's CPU per call (schedstat, ns; less the CPU at rest of the nodes that had
nothing to do, per second, for as long), its read events per call (round-trips), and this
process's CPU per checkout (the worker's side of the store calls, without HTTP). Prints one
JSON object.
"""

from __future__ import annotations

if __name__ == "__main__":  # patched before anything opens a socket, as gunicorn's worker does
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import os
import statistics
import sys
import time
import zlib
from typing import Any

import gevent
import kit
from cluster_nodes import forget_sale, node_client, primary_ports, tag_ports
from roundtrip import schedstat_ns

from flashsale import domain
from flashsale.config import Settings
from flashsale.stores.inventory import Inventory
from flashsale.wiring import build_inventory

TTL_MS = 2000


def users_of(shard: int, k: int, count: int, prefix: str) -> list[str]:
    """`count` fresh user ids whose shard (crc32 mod K, as keys.SaleLayout) is `shard`."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        user = f"{prefix}{n}"
        n += 1
        if k == 1 or zlib.crc32(user.encode()) % k == shard:
            found.append(user)
    return found


def items_of(shard: int, k: int, total: int) -> list[str]:
    """The item ids of one shard (items are dealt round the shards by number)."""
    return [str(n) for n in range(shard + 1, total + 1, k)]


def measure(
    inventory: Inventory, sale_id: str, pairs: list[tuple[str, str]], concurrency: int, nodes: dict
) -> dict[str, Any]:
    """Reserving checkouts of (user, item) pairs from `concurrency` greenlets; per node: CPU per
    call less rest, read events per call; this process's CPU per checkout."""
    todo = list(reversed(pairs))
    outcomes: dict[str, int] = {}

    def worker() -> None:
        while todo:
            user, item = todo.pop()
            now = int(time.time() * 1000)
            answer = inventory.checkout(
                sale_id,
                user,
                item,
                now_ms=now,
                ttl_ms=TTL_MS,
                fresh_code=domain.new_code(sale_id),
                user_rate=0,
                ip_rate=0,
                client_ip="",
                attempt_key=domain.new_attempt_key(),
                deadline_ms=now + 5000,
            )
            outcomes[answer.outcome] = outcomes.get(answer.outcome, 0) + 1

    reads = {port: int(node_client(port).info("stats")["total_reads_processed"]) for port in nodes}
    cpu = {port: schedstat_ns(pid) for port, pid in nodes.items()}
    mine, started = time.process_time(), time.monotonic()
    gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
    mine, seconds = time.process_time() - mine, time.monotonic() - started
    used = {port: (schedstat_ns(pid) - cpu[port]) / 1e3 for port, pid in nodes.items()}
    read = {
        port: int(node_client(port).info("stats")["total_reads_processed"]) - reads[port] - 1
        for port in nodes
    }
    if set(outcomes) != {"ok"}:
        raise RuntimeError(f"not the reserve path: {outcomes}")
    calls = len(pairs)
    resting = [used[p] / seconds for p in nodes if read[p] < 10]  # us per second
    rest = statistics.median(resting) if resting else 0.0
    return {
        "node_us_per_call": {p: (used[p] - rest * seconds) / calls for p in nodes},
        "reads_per_call": {p: read[p] / calls for p in nodes},
        "worker_us_per_checkout": mine / calls * 1e6,
        "rest_us_per_second": rest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000, help="checkouts per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="greenlets at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--salt", type=int, default=7, help="picks the sales' periods")
    args = parser.parse_args(argv)

    base = dict(os.environ)
    cluster_url = base["REDIS_URL"]
    ports = primary_ports(cluster_url)
    nodes = {port: int(node_client(port).info("server")["process_id"]) for port in ports}
    rows: dict[str, list[dict[str, float]]] = {"single_k1": [], "single_k3": [], "two_steps": []}
    salt, n = args.salt, args.calls
    for round_no in range(args.rounds):
        for k in (1, 3):
            salt += 1009
            env = {
                **base,
                "FLASHSALE_REDIS_SHARDS": str(k),
                "FLASHSALE_PERIOD": str(kit.open_period(salt=salt)),
            }
            sale = kit.open_sale(env)
            inventory = build_inventory(Settings.from_env(env))
            inventory.layout(sale.sale_id)  # known before the first call: no `sharded` detour
            shard_ports = tag_ports(cluster_url, sale.sale_id, sale.shard_tags)
            try:
                if k == 1:
                    users = users_of(0, 1, n, f"a{round_no}u")
                    pairs = list(zip(users, items_of(0, 1, sale.total_items)[:n], strict=True))
                    got = measure(inventory, sale.sale_id, pairs, args.concurrency, nodes)
                    rows["single_k1"].append(picked(got, shard_ports[0], shard_ports[0]))
                    continue
                shard_items = items_of(1, 3, sale.total_items)
                users = users_of(1, 3, n, f"b{round_no}u")
                pairs = list(zip(users, shard_items[:n], strict=True))
                got = measure(inventory, sale.sale_id, pairs, args.concurrency, nodes)
                rows["single_k3"].append(picked(got, shard_ports[1], shard_ports[1]))
                users = users_of(0, 3, n, f"c{round_no}u")
                pairs = list(zip(users, shard_items[n : 2 * n], strict=True))
                got = measure(inventory, sale.sale_id, pairs, args.concurrency, nodes)
                rows["two_steps"].append(picked(got, shard_ports[0], shard_ports[1]))
            finally:
                inventory.close()
                forget_sale(cluster_url, ports, sale.sale_id)
    result = {
        name: {key: round(statistics.median(r[key] for r in found), 2) for key in found[0]}
        for name, found in rows.items()
    }
    result["each"] = rows
    result["config"] = vars(args)
    print(json.dumps(result))
    return 0


def picked(got: dict[str, Any], user_port: int, item_port: int) -> dict[str, float]:
    """The figures of the node(s) a measurement was about."""
    out = {"worker_us_per_checkout": got["worker_us_per_checkout"]}
    if user_port == item_port:
        out["node_us_per_call"] = got["node_us_per_call"][item_port]
        out["reads_per_call"] = got["reads_per_call"][item_port]
    else:
        out["user_node_us_per_call"] = got["node_us_per_call"][user_port]
        out["user_reads_per_call"] = got["reads_per_call"][user_port]
        out["item_node_us_per_call"] = got["node_us_per_call"][item_port]
        out["item_reads_per_call"] = got["reads_per_call"][item_port]
    return {key: round(value, 3) for key, value in out.items()}


if __name__ == "__main__":
    sys.exit(main())
