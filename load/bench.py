"""Checkout throughput of the service against the bare Falcon ceiling, side by side.

    python load/bench.py [--duration 10] [--connections 100] [--items 100000] [--rounds 3]
                         [--out load/results] [--profile]

Starts Redis and PostgreSQL (or uses REDIS_URL / DATABASE_URL), migrates, opens a sale of
--items items (rate limit off, a short checkout TTL so stock lasts, the sweeper on as in
production), starts `flashsale serve` and load/bare_app.py under the same gunicorn config
(2 gevent workers each, loopback only), warms both up, then drives them with
`wrk -t2 -c<connections> -d<duration> --latency -s load/checkout.lua` alternately
(bare, service, bare, service, ...). Prints a table, writes bench-<timestamp>.json and
bench-<timestamp>.png into --out. With --profile, one extra service run is recorded by py-spy
(a speedscope file of one worker, collapsed stacks and a top-costs summary of the other); that
run is not counted in the figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kit
import redis

from flashsale.stores.inventory.keys import keys_for


def run_wrk(
    url: str, *, duration: float, connections: int, threads: int, items: int, users: int
) -> dict[str, Any]:
    """One bounded wrk run of load/checkout.lua against `url`/checkout (kit.run_wrk)."""
    return kit.run_wrk(
        url,
        "checkout.lua",
        {"FS_ITEMS": items, "FS_USERS": users},
        duration=duration,
        connections=connections,
        threads=threads,
    )


def measured_run(
    served: kit.Served,
    name: str,
    store_pids: dict[str, int],
    duration: float,
    wrk_kw: dict[str, Any],
) -> dict[str, Any] | None:
    """One wrk run plus the CPU each process group spent per request during it (None for a
    group whose processes changed meanwhile: a replaced worker makes the figure meaningless)."""
    groups = {"server": [served.master_pid]}
    if name == "service":
        groups["sweeper"] = served.sweepers()
        groups.update({k: [v] for k, v in store_pids.items()})
    workers_before = served.workers()
    before = {g: kit.cpu_seconds(p) for g, p in groups.items()}
    try:
        run = run_wrk(served.base_url, duration=duration, **wrk_kw)
    except subprocess.CalledProcessError:
        return None
    requests = max(1, run["requests"])
    cpu: dict[str, float | None] = {
        g: round((kit.cpu_seconds(p) - before[g]) / requests * 1e6, 1) for g, p in groups.items()
    }
    if served.workers() != workers_before or served.proc.poll() is not None:
        cpu = dict.fromkeys(cpu)
    elif "sweeper" in cpu:  # the sweeper is a child of the master: split it out
        cpu["server"] = round(cpu["server"] - cpu["sweeper"], 1)
    cpu["total"] = None if None in cpu.values() else round(sum(cpu.values()), 1)
    run["cpu_us_per_request"] = cpu
    return run


# --- profiling ---------------------------------------------------------------------------------


PROFILE_RATE = 200  # samples per second


def start_profilers(
    workers: list[int], plans: list[tuple[str, Path]], duration: float
) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy record on one worker per plan (format, output path), all at once."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    procs = []
    for pid, (fmt, path) in zip(workers, plans, strict=False):
        argv = [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(duration)),
            "--rate",
            str(PROFILE_RATE),
            "--nonblocking",
            "--format",
            fmt,
            "--output",
            str(path),
        ]
        procs.append(
            (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path)
        )
    return procs


def profile_target(
    served: kit.Served, name: str, out: Path, stamp: str, duration: float, wrk_kw: dict[str, Any]
) -> dict[str, Any]:
    """One more wrk run with py-spy on the workers: collapsed stacks of the first worker (and,
    for the service, a speedscope file of the second), summarized in us per request."""
    workers = served.workers()
    plans = [("raw", out / f"profile-{stamp}-{name}.collapsed.txt")]
    if name == "service":
        plans.append(("speedscope", out / f"profile-{stamp}-{name}.speedscope.json"))
    print(f"profiling {name} workers {workers[: len(plans)]} during one more run ...", flush=True)
    procs = start_profilers(workers, plans, duration)
    time.sleep(0.5)
    cpu_before = kit.cpu_seconds(workers)
    run = run_wrk(served.base_url, duration=duration, **wrk_kw)
    worker_cpu_us = (kit.cpu_seconds(workers) - cpu_before) / max(1, run["requests"]) * 1e6
    for proc, _ in procs:
        _, err = proc.communicate(timeout=duration + 60)
        if proc.returncode:
            print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
    result: dict[str, Any] = {
        "rps_while_profiled": round(run["rps"]),
        "worker_cpu_us_per_request": round(worker_cpu_us, 1),
        "files": [str(path) for _, path in procs if path.exists()],
    }
    collapsed = plans[0][1]
    if collapsed.exists():
        result["summary"] = summarize_collapsed(collapsed, worker_cpu_us)
    return result


# Where a request's worker time goes, by inclusive frames (a bucket takes the first of its marks
# found; marks of one bucket never nest in each other).
BUCKETS = {
    "gunicorn: read + parse the request": ("Parser.__next__ (gunicorn",),
    "gunicorn: write the response (send)": ("Response.write (gunicorn",),
    "falcon app, all of it": ("App.__call__ (falcon",),
    "  flashsale resource -> engine": ("Checkout.on_post (flashsale",),
    "  request metrics (middleware)": ("RequestTiming.process_response",),
    "redis pipeline flush (Batcher)": ("Batcher._flush (flashsale",),
    "gevent hub (switches, I/O wait)": ("Hub.run (gevent",),
}

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _where(frame: str) -> tuple[str, str]:
    """(function, short file) of a py-spy frame 'func (path/to/file.py:123)'."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    path = match["file"]
    for marker in ("site-packages/", "lib/python3", "service/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return match["func"], path


def _area(file: str) -> str:
    """A coarse owner of a frame, for the breakdown people read first."""
    for prefix, name in (
        ("flashsale/", "flashsale"),
        ("redis/", "redis-py"),
        ("falcon/", "falcon"),
        ("prometheus_client/", "prometheus_client"),
        ("gevent/", "gevent"),
        ("gunicorn/", "gunicorn"),
        ("orjson", "orjson"),
        ("secrets", "stdlib"),
        ("socket", "stdlib"),
    ):
        if file.startswith(prefix) or prefix in file:
            return name
    return "other" if file else "native"


def summarize_collapsed(path: Path, cpu_us_per_request: float, top: int = 20) -> dict[str, Any]:
    """Top self and inclusive costs from py-spy's collapsed stacks, as shares of the busy
    samples and as microseconds of worker CPU per request (the share times the workers' CPU
    per request measured in /proc: on a busy host py-spy also counts time spent runnable but
    not running, so its sample counts alone overstate CPU)."""
    self_cost: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    area_self: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_where(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        leaf_func, leaf_file = frames[-1]
        self_cost[f"{leaf_func} ({leaf_file})"] += n
        area_self[_area(leaf_file)] += n
        for func, file in {(func, file) for func, file in frames}:
            inclusive[f"{func} ({file})"] += n

    def cost(n: int) -> tuple[float, float]:
        """(share of busy samples in %, us of worker CPU per request)"""
        share = n / total if total else 0.0
        return round(100.0 * share, 1), round(share * cpu_us_per_request, 1)

    buckets = {
        name: sum(n for func, n in inclusive.items() if any(m in func for m in marks))
        for name, marks in BUCKETS.items()
    }
    return {
        "samples": total,
        "busy_us_per_request": round(cpu_us_per_request, 1),
        "buckets": [(name, *cost(n)) for name, n in buckets.items()],
        "self": [(name, *cost(n)) for name, n in self_cost.most_common(top)],
        "inclusive": [(name, *cost(n)) for name, n in inclusive.most_common(top + 25)],
        "self_by_area": [(name, *cost(n)) for name, n in area_self.most_common()],
    }


# --- Redis figures -----------------------------------------------------------------------------


def sale_memory(client: Any, sale_id: str) -> dict[str, Any]:
    """Bytes held by the sale's big keys (MEMORY USAGE, every element counted)."""
    keys = keys_for(sale_id)
    usage = {}
    for name in ("meta", "items", "codes", "reserved", "pending", "outbox"):
        usage[name] = client.memory_usage(getattr(keys, name), samples=0) or 0
    return usage


def latency_stats(client: Any) -> dict[str, Any]:
    """Server-side latency percentiles of EVALSHA, in microseconds (Redis 7's latencystats)."""
    try:
        stats = client.info("latencystats")
    except redis.ResponseError:  # older Redis: no such section
        return {}
    return dict(stats.get("latency_percentiles_usec_evalsha", {}))


# --- output ------------------------------------------------------------------------------------


def ms(us: float) -> float:
    return round(us / 1000.0, 2)


def table(result: dict[str, Any]) -> str:
    rows = [
        f"{'run':<10}{'rps':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p99.9':>9}"
        f"{'non-2xx':>9}{'sockerr':>9}  statuses"
    ]
    for run in result["runs"]:
        pct = run["latency_us"]["percentiles"]
        rows.append(
            f"{run['target']:<10}{run['rps']:>9.0f}{ms(pct['50']):>9}{ms(pct['90']):>9}"
            f"{ms(pct['99']):>9}{ms(pct['99.9']):>9}{run['non_2xx']:>9}"
            f"{run['socket_errors']:>9}  {run['statuses']}"
        )
    s = result["summary"]
    rows.append(f"ratio service/bare per round: {s['ratios']}  (median {s['ratio_median']})")
    rows.append(
        f"CPU us per request (medians; server = gunicorn master + workers): "
        f"bare {s['bare_cpu_us_per_request']}, service "
        f"{s['service_cpu_us_per_request']}; CPU-based ratio: workers only "
        f"{s['cpu_ratio_workers']}, with Redis+PostgreSQL {s['cpu_ratio_all']}"
    )
    rows.append(
        f"redis {result['redis_version']} evalsha usec_per_call: "
        f"{s['redis_usec_per_call']}  "
        f"(calls {s['redis_calls']}); latency percentiles: {result['redis_latency']}"
    )
    mem = result["memory"]
    rows.append(
        f"redis memory of the {result['config']['items']}-item sale as loaded: "
        f"{mem['loaded_delta_bytes']} B ({mem['loaded_bytes_per_item']} B/item); "
        f"items hash {mem['at_open']['items']} B"
    )
    return "\n".join(rows)


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput per run (bare and service side by side) and latency percentiles."""
    plt = kit.pyplot()
    runs = result["runs"]
    fig, (left, right, cost) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [3, 3, 1.6]}
    )
    colors = {"bare": "#9aa5b1", "service": "#2f6fb0"}
    labels = [f"{r['target']}\n#{r['round']}" for r in runs]
    bars = left.bar(
        range(len(runs)), [r["rps"] for r in runs], color=[colors[r["target"]] for r in runs]
    )
    left.bar_label(bars, fmt="%.0f")
    left.set_xticks(range(len(runs)), labels)
    left.set_ylabel("requests / s")
    s = result["summary"]
    left.set_title(f"POST /checkout throughput (service/bare median {s['ratio_median']})")

    points = ["50", "75", "90", "99", "99.9"]
    for r in runs:
        pct = r["latency_us"]["percentiles"]
        right.plot(
            points,
            [pct[p] / 1000 for p in points],
            marker="o",
            color=colors[r["target"]],
            alpha=0.9,
            label=f"{r['target']} #{r['round']}",
        )
    right.axhline(50, color="#c0392b", linestyle="--", linewidth=1, label="p99 target 50 ms")
    right.set_yscale("log")
    right.set_xlabel("percentile")
    right.set_ylabel("latency, ms (log)")
    right.set_title("latency percentiles (wrk)")
    right.legend(fontsize=8)
    # CPU per request, medians, stacked by process: robust to a busy machine, unlike rps.
    bottoms = [0.0, 0.0]
    palette = {"server": "#2f6fb0", "sweeper": "#8e6bb8", "redis": "#c0392b", "postgres": "#27ae60"}
    per_target = [
        {"server": s["bare_cpu_us_per_request"] or 0},
        {k: v for k, v in (s["service_cpu_us_per_request"] or {}).items() if k != "total"},
    ]
    for part in ("server", "sweeper", "redis", "postgres"):
        heights = [t.get(part, 0) or 0 for t in per_target]
        cost.bar(
            [0, 1],
            heights,
            bottom=bottoms,
            color=palette[part],
            label="gunicorn workers" if part == "server" else part,
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        cost.text(x, total, f"{total:.0f}", ha="center", va="bottom")
    cost.set_xticks([0, 1], ["bare", "service"])
    cost.set_ylabel("CPU us per request (median)")
    cost.set_title(f"CPU per request\n(bare/service workers {s['cpu_ratio_workers']})", fontsize=10)
    cost.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(
        f"flashsale bench {result['started_at']}  wrk -t{cfg['threads']} "
        f"-c{cfg['connections']} -d{cfg['duration']:g}s, {cfg['workers']} gevent workers, "
        f"{cfg['items']} items",
        fontsize=10,
    )
    kit.save_figure(fig, path)


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000_000, help="user id pool")
    parser.add_argument(
        "--ttl",
        type=int,
        default=2,
        help="checkout TTL, s (short, so random checkouts keep finding stock)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="bare/service pairs")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of wrk per server first")
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    parser.add_argument(
        "--profile", action="store_true", help="one extra service run under py-spy (not counted)"
    )
    args = parser.parse_args(argv)
    args.duration = min(max(args.duration, 1), 120)  # bounded, whatever was asked

    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    wrk_kw = dict(
        connections=args.connections, threads=args.threads, items=args.items, users=args.users
    )

    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-bench-")))
        stores = stack.enter_context(kit.stores(state))
        env = kit.service_env(
            stores,
            FLASHSALE_ITEMS=args.items,
            FLASHSALE_PERIOD=kit.open_period(),
            FLASHSALE_CHECKOUT_TTL=args.ttl,
            FLASHSALE_RATE_PER_USER=0,
            FLASHSALE_USER_LIMIT=10,
            FLASHSALE_MAX_INFLIGHT=kit.NO_SHEDDING,
            PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"),
        )
        client = kit.redis_client(stores.redis_url)
        redis_version = client.info("server")["redis_version"]
        before = client.info("memory")["used_memory"]
        print(f"opening a sale of {args.items} items ...", flush=True)
        sale = kit.open_sale(env)
        loaded = client.info("memory")["used_memory"] - before
        memory: dict[str, Any] = {
            "loaded_delta_bytes": loaded,
            "loaded_bytes_per_item": round(loaded / args.items, 1),
            "at_open": sale_memory(client, sale.sale_id),
        }

        stack.callback(kit.keep_logs, state, args.out, f"bench-{stamp}")
        servers = {"bare": kit.serve_bare, "service": kit.serve_service}

        def start(name: str) -> kit.Served:
            return stack.enter_context(servers[name](env, state / f"{name}.log", args.workers))

        targets = {name: start(name) for name in servers}
        stores_pids = kit.store_pids(stores)
        print(
            f"sale {sale.sale_id}; bare at {targets['bare'].base_url}, service at "
            f"{targets['service'].base_url}",
            flush=True,
        )
        for name, served in targets.items():
            run_wrk(served.base_url, duration=args.warmup, **wrk_kw)
            print(f"warmed up {name}", flush=True)

        runs: list[dict[str, Any]] = []
        incidents: list[str] = []
        redis_calls = redis_usec = 0.0
        for round_no in range(1, args.rounds + 1):
            for name in ("bare", "service"):
                if targets[name].proc.poll() is not None:
                    # On a shared machine something may stop a server; say so and go on.
                    incidents.append(
                        f"round {round_no}: {name} had exited "
                        f"({targets[name].proc.returncode}); restarted"
                    )
                    print(f"  {incidents[-1]}", flush=True)
                    targets[name] = start(name)
                    run_wrk(targets[name].base_url, duration=args.warmup, **wrk_kw)
                if name == "service":
                    client.config_resetstat()
                run = measured_run(targets[name], name, stores_pids, args.duration, wrk_kw)
                if run is None:
                    incidents.append(f"round {round_no}: wrk failed against {name}")
                    print(f"  {incidents[-1]}", flush=True)
                    continue
                run.update(target=name, round=round_no)
                if name == "service":
                    run["redis_evalsha"] = kit.evalsha_stats(client)
                    redis_calls += run["redis_evalsha"]["calls"]
                    redis_usec += run["redis_evalsha"]["usec"]
                runs.append(run)
                pct = run["latency_us"]["percentiles"]
                print(
                    f"  round {round_no} {name:<8} {run['rps']:8.0f} rps  p50 {ms(pct['50'])} ms"
                    f"  p99 {ms(pct['99'])} ms  non-2xx {run['non_2xx']}  "
                    f"cpu us/req {run['cpu_us_per_request']}",
                    flush=True,
                )
        redis_latency = latency_stats(client)

        profile: dict[str, Any] = {}
        if args.profile:
            for name in ("bare", "service"):
                profile[name] = profile_target(
                    targets[name], name, args.out, stamp, args.duration, wrk_kw
                )

        memory["after_runs"] = sale_memory(client, sale.sale_id)
        memory["after_runs_used_memory"] = client.info("memory")["used_memory"]
        memory["dbsize_after_runs"] = client.dbsize()

    bare_rps = [r["rps"] for r in runs if r["target"] == "bare"]
    svc_rps = [r["rps"] for r in runs if r["target"] == "service"]
    # Pairs of one round (a failed run leaves its round out).
    by_round = {(r["round"], r["target"]): r["rps"] for r in runs}
    ratios = [
        round(by_round[(n, "service")] / by_round[(n, "bare")], 3)
        for n in range(1, args.rounds + 1)
        if (n, "service") in by_round and (n, "bare") in by_round
    ]
    svc_runs = [r for r in runs if r["target"] == "service"]
    bare_runs = [r for r in runs if r["target"] == "bare"]

    def median(values: list[float]) -> float | None:
        ordered = sorted(values)
        return ordered[len(ordered) // 2] if ordered else None

    def cpu_median(of: list[dict[str, Any]], group: str) -> float | None:
        return median([v for r in of if (v := r["cpu_us_per_request"].get(group)) is not None])

    bare_cpu = cpu_median(bare_runs, "server")
    svc_cpu = {
        g: cpu_median(svc_runs, g) for g in ("server", "sweeper", "redis", "postgres", "total")
    }
    svc_cpu = {g: v for g, v in svc_cpu.items() if v is not None}
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "out": str(args.out),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "sale_id": sale.sale_id,
        "redis_version": redis_version,
        "runs": [{k: v for k, v in r.items() if k != "wrk_text"} for r in runs],
        "summary": {
            "bare_rps": [round(x) for x in bare_rps],
            "service_rps": [round(x) for x in svc_rps],
            "ratios": ratios,
            "ratio_median": median(ratios),
            "ratio_min_max": [min(ratios), max(ratios)] if ratios else None,
            "bare_cpu_us_per_request": bare_cpu,
            "service_cpu_us_per_request": svc_cpu,
            # What the rps ratio would be on a machine of its own, if CPU is the limit: the
            # bare server's CPU per request over the service's (workers + Redis + PostgreSQL).
            "cpu_ratio_all": round(bare_cpu / svc_cpu["total"], 3)
            if bare_cpu and svc_cpu.get("total")
            else None,
            "cpu_ratio_workers": round(bare_cpu / svc_cpu["server"], 3)
            if bare_cpu and svc_cpu.get("server")
            else None,
            "service_p50_ms": [ms(r["latency_us"]["percentiles"]["50"]) for r in svc_runs],
            "service_p99_ms": [ms(r["latency_us"]["percentiles"]["99"]) for r in svc_runs],
            "service_non_2xx": [r["non_2xx"] for r in svc_runs],
            "redis_calls": int(redis_calls),
            "redis_usec_per_call": round(redis_usec / redis_calls, 2) if redis_calls else None,
        },
        "redis_latency": redis_latency,
        "incidents": incidents,
        "memory": memory,
        "profile": profile,
    }
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2, default=str))
    png_path = args.out / f"bench-{stamp}.png"
    plot(result, png_path)

    print()
    print(table(result))
    for name, prof in profile.items():
        summary = prof.get("summary")
        if not summary:
            continue
        print(
            f"\npy-spy, {name}: {summary['samples']} samples of one worker at "
            f"{prof['rps_while_profiled']} rps; workers' CPU {summary['busy_us_per_request']} "
            "us per request (columns: share %, us of CPU per request)"
        )
        print("  buckets: " + "; ".join(f"{b} {p}% {u}" for b, p, u in summary["buckets"]))
        print(
            "  self by area: " + ", ".join(f"{a} {p}% {u}" for a, p, u in summary["self_by_area"])
        )
        print("  top self:")
        for func, pct, us in summary["self"][:15]:
            print(f"    {pct:5.1f}% {us:7.1f}  {func}")
        print("  top inclusive:")
        for func, pct, us in summary["inclusive"][: 40 if name == "service" else 15]:
            print(f"    {pct:5.1f}% {us:7.1f}  {func}")
        print("  files: " + ", ".join(prof["files"]))
    print(f"\nwrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
