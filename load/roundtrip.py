"""What one round-trip to a Redis node costs, apart from the script it carries: on the node, and
in a gevent worker sending through the service's own Batcher (NodeBatchers on a cluster).

    python load/roundtrip.py --url redis://127.0.0.1:PORT [--cluster] [--calls 20000]

Runs as a gevent worker does (sockets patched first). An empty script, called as checkout.lua
is (8 keys of one hash tag, 11 arguments of the same sizes), is sent by C greenlets at once for
C = 1, 4, 16, 64, so that the Batcher carries about C calls a round-trip. For each C it measures
the CPU of this process (the worker side) and of the node's redis-server (from
/proc/<pid>/task/*/schedstat: the same CPU time as utime + stime, in nanoseconds, as these
windows are too short for the 10 ms ticks of utime + stime), and the node's read events
(INFO stats `total_reads_processed`: one per round-trip received). A least-squares line of CPU
per call against round-trips per call gives the cost of the call itself and of one round-trip,
for each side. Prints one JSON object; load/sharding.py runs it before its rounds.
"""

from __future__ import annotations

if __name__ == "__main__":  # patched before anything opens a socket, as gunicorn's worker does
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import redis

from flashsale.stores.inventory.batching import Batcher
from flashsale.stores.inventory.cluster import NodeBatchers
from flashsale.stores.inventory.connect import connect

# Shaped like checkout.lua's call (gateway.py): its 8 keys under one tag, its 11 arguments.
TAG = "fs:{sale:12345678/3}:"
KEYS = [
    *(TAG + name for name in ("meta", "items", "codes", "reserved")),
    TAG + "user:u123456",
    TAG + "outbox",
    TAG + "bucket:u:u123456",
    TAG + "bucket:ip:",
]
ARGS = [
    "u123456",
    "54321",
    "1766000000000",
    "2000",
    "12345678.3.3.abcdefghijklmnopqrstuv",
    "0",
    "0",
    "",
    "0123456789abcdef0123456789abcdef",
    "1766000002000",
    "1",
]
EMPTY = "return 1"


def schedstat_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line."""
    slope, intercept = statistics.linear_regression(xs, ys)
    return intercept, slope


def probe(url: str, cluster: bool, calls: int, concurrencies: list[int], rounds: int) -> dict:
    client: Any = connect(url, max_connections=128, timeout=10, cluster=cluster)
    if cluster:
        node = client.get_node_from_key(KEYS[0])
        direct = redis.Redis(host=node.host, port=node.port, decode_responses=True)
        execute = NodeBatchers(client).execute_command
    else:
        direct = client
        execute = Batcher(client).execute_command
    sha = direct.script_load(EMPTY)
    pid = int(direct.info("server")["process_id"])
    command = ("EVALSHA", sha, len(KEYS), *KEYS, *ARGS)

    def caller(n: int) -> None:
        for _ in range(n):
            execute(*command)

    rows = []
    for _ in range(rounds):
        for c in concurrencies:
            each = max(1, calls // c)
            gevent.joinall([gevent.spawn(caller, 50) for _ in range(c)])  # connections up
            reads = int(direct.info("stats")["total_reads_processed"])
            node_before, mine_before = schedstat_ns(pid), time.process_time()
            gevent.joinall([gevent.spawn(caller, each) for _ in range(c)])
            mine = time.process_time() - mine_before
            node = (schedstat_ns(pid) - node_before) / 1e9
            roundtrips = int(direct.info("stats")["total_reads_processed"]) - reads - 1
            done = each * c
            rows.append(
                {
                    "concurrency": c,
                    "calls": done,
                    "roundtrips_per_call": roundtrips / done,
                    "node_us_per_call": node / done * 1e6,
                    "worker_us_per_call": mine / done * 1e6,
                }
            )
    xs = [r["roundtrips_per_call"] for r in rows]
    node_call, node_rt = fit(xs, [r["node_us_per_call"] for r in rows])
    worker_call, worker_rt = fit(xs, [r["worker_us_per_call"] for r in rows])
    by_c = {}
    for c in concurrencies:
        mine = [r for r in rows if r["concurrency"] == c]
        by_c[str(c)] = {
            key: round(statistics.median(r[key] for r in mine), 3)
            for key in ("roundtrips_per_call", "node_us_per_call", "worker_us_per_call")
        }
    return {
        "by_concurrency": by_c,
        "node_us_per_call": round(node_call, 2),
        "node_us_per_roundtrip": round(node_rt, 2),
        "worker_us_per_call": round(worker_call, 2),
        "worker_us_per_roundtrip": round(worker_rt, 2),
        "calls": calls,
        "rounds": rounds,
        "cluster": cluster,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a Redis node (any node, with --cluster)")
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    result = probe(args.url, args.cluster, args.calls, args.concurrency, args.rounds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
