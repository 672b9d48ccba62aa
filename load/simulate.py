"""How many Redis shards and web pods a burst of checkouts needs, from the measured costs.

    python load/simulate.py [--from load/results/sharding-*.json ...] [--rate 500000]
                            [--p99-ms 50] [--redis-util 0.7] [--pod-util 0.75] [--workers 2]
                            [--plot docs/perf/sharding-model.png]

A calibrated queueing model (standard library and matplotlib only). Its inputs are what
load/sharding.py measures on one Redis Cluster (by default the figures written below, from the
runs of load/README.md; --from recomputes them from the JSON of one or more runs, medians):

- per Redis call, the node's CPU for the script itself (load/step_costs.py: checkout.lua, and
  the two steps of a checkout whose user lives on another shard than its item), plus one
  round-trip each (load/roundtrip.py: the node's CPU per round-trip): at many shards a worker's
  calls to one node come one at a time, so the Batcher shares no round-trip (see `batch_size`);
- per checkout, the worker's CPU: the HTTP side measured end to end (K=1), plus the store calls
  (load/step_costs.py's worker side) with one round-trip per call (load/roundtrip.py);
- the share of two-step checkouts, (K-1)/K, and of those refused by the item's shard (which
  then release the user's token: a third call), measured in the runs.

A second calibration, `end-to-end`, takes instead the per-K costs of the HTTP runs themselves
(Redis CPU per checkout of all nodes, workers' CPU per checkout at K = 1, 3, 6), fitted as
a + b (K-1)/K and corrected to one call a round-trip. On the 2-core machine those runs share two
cores between six Redis servers, two workers and wrk; the same scripts cost there about 1.4x
(K=1) to 2.5x (K=6) what they cost priced alone, so this calibration is the pessimistic one.

The model:
- a Redis primary is one single-server queue (M/D/1 with one service time per kind of
  call: a script does the same few O(1) / O(log n) commands every time, so its service time is
  nearly constant; arrivals are the sum of hundreds of workers' independent calls, so Poisson).
  Its waiting-time tail is the Cramér-Lundberg exponential of M/G/1. A node runs at most at
  --redis-util of one core (headroom for a failover's catch-up, skew, the drain), and its p99
  wait must fit the budget;
- a pod is one M/M/c queue: c = --workers gevent workers, one core each, the service time the
  worker CPU per checkout (exponential: a conservative spread, for GC pauses and the mix of one-
  and two-step checkouts); at most --pod-util;
- a checkout's p99 is the sum of the p99s of its parts: the network to the pod (--network-ms),
  the pod, and each Redis call in sequence (1 at K=1, 2 for a two-step checkout, 3 when its
  item step refuses and the token is released): the pod-to-Redis round-trip (--rtt-ms), a wait
  for the Batcher's flush in flight (one more round-trip), the node's p99 wait, the service.

Not modelled: PostgreSQL (the drain writes one row per attempt), replicas, a hot item (all the
crowd on one item, so on one shard), the waiting room. Prints a table and writes the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DOCS_PERF = Path(__file__).resolve().parent.parent / "docs" / "perf"


@dataclass(frozen=True)
class Costs:
    """Microseconds of CPU. `*_call`: the node's, per call, without its round-trip."""

    single_call: float  # checkout.lua, the whole checkout on one shard
    user_call: float  # checkout_user.lua
    item_call: float  # checkout_item.lua
    release_call: float  # set_token.lua after a refused item step (not priced: = user step)
    node_roundtrip: float  # a node's CPU for one round-trip received, beyond the script
    node_rest: float  # a node's CPU per second at rest (cluster bus, timers)
    http: float  # a worker's CPU per checkout outside the store calls
    worker_single: float  # a worker's CPU for a one-script checkout's store call
    worker_two: float  # ... for a two-step checkout's store calls
    worker_roundtrip: float  # a worker's CPU for one round-trip (send, wait, receive)
    refused: float  # share of item steps refused (then the token is released: a third call)
    source: str = "isolated"
    note: dict[str, Any] = field(default_factory=dict)

    def calls(self, k: int) -> float:
        """Redis calls (= round-trips, one call a round-trip) per checkout over K shards."""
        two = (k - 1) / k
        return (1 - two) + two * (2 + self.refused)

    def node_cpu_per_checkout(self, k: int) -> float:
        """All nodes' CPU per checkout, round-trips included (rest not included)."""
        rt = self.node_roundtrip
        two = (k - 1) / k
        steps = self.user_call + self.item_call + 2 * rt
        steps += self.refused * (self.release_call + rt)
        return (1 - two) * (self.single_call + rt) + two * steps

    def service_times(self, k: int) -> list[tuple[float, float]]:
        """(share, us) of the calls a node serves."""
        rt = self.node_roundtrip
        two = (k - 1) / k
        mix = [(1 - two, self.single_call + rt)]
        if k > 1:
            mix += [
                (two, self.user_call + rt),
                (two, self.item_call + rt),
                (two * self.refused, self.release_call + rt),
            ]
        total = sum(share for share, _ in mix)
        return [(share / total, us) for share, us in mix]

    def worker_cpu(self, k: int) -> float:
        """A worker's CPU per checkout, one call a round-trip."""
        two = (k - 1) / k
        store = (1 - two) * self.worker_single + two * self.worker_two
        return self.http + store + self.calls(k) * self.worker_roundtrip


# What `--from` computes from the two runs of load/README.md (`python load/sharding.py --rounds 5`,
# twice), so that the script alone reproduces the figures there.
MEASURED = Costs(
    single_call=33.6,
    user_call=24.1,
    item_call=31.7,
    release_call=24.1,
    node_roundtrip=27.6,
    node_rest=2220.0,
    http=293.0,
    worker_single=31.5,
    worker_two=55.3,
    worker_roundtrip=77.5,
    refused=0.0366,
)
MEASURED_END_TO_END = replace(
    MEASURED,
    single_call=48.7,
    user_call=58.0,
    item_call=76.3,
    release_call=58.0,
    http=310.1,
    worker_two=134.4,
    source="end-to-end",
)


# --- calibration from load/sharding.py's JSON -------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def calibrate(paths: list[Path]) -> tuple[Costs, Costs]:
    """(isolated, end-to-end) costs from one or more sharding-*.json, medians over runs."""
    results = [json.loads(path.read_text()) for path in paths]
    rt_node = _median([r["roundtrip"]["node_us_per_roundtrip"] for r in results])
    rt_worker = _median([r["roundtrip"]["worker_us_per_roundtrip"] for r in results])
    rest = _median([x for r in results for x in r["idle_us_per_second"]])
    steps = [r["steps"] for r in results]

    def own(node_us: float, reads: float) -> float:
        """A call's node CPU less its share of a round-trip."""
        return node_us - reads * rt_node

    single = _median(
        [own(s["single_k1"]["node_us_per_call"], s["single_k1"]["reads_per_call"]) for s in steps]
    )
    two = [s["two_steps"] for s in steps]
    user = _median([own(t["user_node_us_per_call"], t["user_reads_per_call"]) for t in two])
    item = _median([own(t["item_node_us_per_call"], t["item_reads_per_call"]) for t in two])
    # The worker's side of the store calls, less the round-trips they shared.
    worker_single = _median(
        [
            s["single_k1"]["worker_us_per_checkout"] - s["single_k1"]["reads_per_call"] * rt_worker
            for s in steps
        ]
    )
    worker_two = _median(
        [
            t["worker_us_per_checkout"]
            - (t["user_reads_per_call"] + t["item_reads_per_call"]) * rt_worker
            for t in two
        ]
    )
    runs = [run for r in results for run in r["runs"]]
    by_k: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_k.setdefault(run["k"], []).append(run)
    # Refused item steps: scripts beyond 1 + (K-1)/K per checkout, per two-step checkout.
    refused = _median(
        [
            (run["scripts_per_checkout"] - 1) / ((k - 1) / k) - 1
            for k, mine in by_k.items()
            if k > 1
            for run in mine
        ]
    )
    # The HTTP side: the K=1 runs' worker CPU less the store call (and its shared round-trips).
    http = _median(
        [
            run["worker_cpu_us_per_checkout"]
            - worker_single
            - run["roundtrips_per_checkout"] * rt_worker
            for run in by_k[1]
            if run["worker_cpu_us_per_checkout"] is not None
        ]
    )
    isolated = Costs(
        single_call=round(single, 1),
        user_call=round(user, 1),
        item_call=round(item, 1),
        release_call=round(user, 1),
        node_roundtrip=round(rt_node, 1),
        node_rest=round(rest, 0),
        http=round(http, 1),
        worker_single=round(worker_single, 1),
        worker_two=round(worker_two, 1),
        worker_roundtrip=round(rt_worker, 1),
        refused=round(max(refused, 0.0), 4),
        source="isolated",
    )
    return isolated, end_to_end(isolated, by_k, rest, paths)


def end_to_end(
    isolated: Costs, by_k: dict[int, list[dict[str, Any]]], rest: float, paths: list[Path]
) -> Costs:
    """The same model with the HTTP runs' own per-K costs: the scripts' Redis CPU (all nodes,
    less rest and round-trips) fitted as single + (K-1)/K (two - single), and the same for the
    workers (less their shared round-trips)."""
    rt_node, rt_worker = isolated.node_roundtrip, isolated.worker_roundtrip
    xs, redis_ys, worker_ys = [], [], []
    for k, mine in sorted(by_k.items()):
        for run in mine:
            seconds_per_checkout = run["seconds"] / max(1, run["checkouts"])
            nodes = len(run["nodes"])
            scripts_cpu = (
                run["redis_cpu_us_per_checkout"]
                - nodes * rest * seconds_per_checkout
                - run["roundtrips_per_checkout"] * rt_node
            )
            xs.append((k - 1) / k)
            redis_ys.append(scripts_cpu)
            if run["worker_cpu_us_per_checkout"] is not None:
                shared = run["roundtrips_per_checkout"] * rt_worker
                worker_ys.append(((k - 1) / k, run["worker_cpu_us_per_checkout"] - shared))
    slope, intercept = statistics.linear_regression(xs, redis_ys)
    single = intercept
    two_steps = intercept + slope  # a two-step checkout's scripts, refusals' releases included
    w_slope, w_intercept = statistics.linear_regression(
        [x for x, _ in worker_ys], [y for _, y in worker_ys]
    )
    share_user = isolated.user_call / (isolated.user_call + isolated.item_call)
    per_pair = two_steps / (1 + isolated.refused * share_user)  # a release priced as a user step
    return replace(
        isolated,
        single_call=round(single, 1),
        user_call=round(per_pair * share_user, 1),
        item_call=round(per_pair * (1 - share_user), 1),
        release_call=round(per_pair * share_user, 1),
        http=round(w_intercept - isolated.worker_single, 1),
        worker_two=round(isolated.worker_single + w_slope, 1),
        source="end-to-end",
        note={"from": [str(p) for p in paths]},
    )


# --- queues ------------------------------------------------------------------------------------


def mg1_wait_p(rate: float, mix: list[tuple[float, float]], p: float = 0.99) -> float:
    """p-quantile of the waiting time (s) of an M/G/1 queue whose service is a mixture of
    constant times (share, seconds), from the Cramér-Lundberg tail P(W > t) ~ C exp(-g t)."""
    mean = sum(share * s for share, s in mix)
    rho = rate * mean
    if rho >= 1:
        return math.inf

    def mgf(g: float) -> float:
        return sum(share * math.exp(g * s) for share, s in mix)

    def f(g: float) -> float:
        return rate * (mgf(g) - 1) - g

    hi = 1.0 / max(s for _, s in mix)
    while f(hi) <= 0:
        hi *= 2
    lo = 1e-12 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            hi = mid
        else:
            lo = mid
    g = (lo + hi) / 2
    slope = rate * sum(share * s * math.exp(g * s) for share, s in mix) - 1
    c = (1 - rho) / slope
    return max(0.0, math.log(c / (1 - p)) / g)


def mm1_wait_p(rate: float, mean: float, p: float = 0.99) -> float:
    """The same quantile for M/M/1 of the same mean (exponential service: a heavier tail)."""
    rho = rate * mean
    if rho >= 1:
        return math.inf
    return max(0.0, math.log(rho / (1 - p)) / (1 / mean - rate))


def mmc_sojourn_p(rate: float, mean: float, c: int, p: float = 0.99) -> float:
    """p-quantile of the time in an M/M/c queue (wait + service), seconds."""
    mu = 1 / mean
    a = rate / mu
    rho = a / c
    if rho >= 1:
        return math.inf
    term = a**c / math.factorial(c) / (1 - rho)
    erlang_c = term / (sum(a**n / math.factorial(n) for n in range(c)) + term)
    theta = c * mu - rate

    def tail(t: float) -> float:
        if abs(theta - mu) < 1e-9 * mu:
            both = (1 + mu * t) * math.exp(-mu * t)
        else:
            both = (mu * math.exp(-theta * t) - theta * math.exp(-mu * t)) / (mu - theta)
        return (1 - erlang_c) * math.exp(-mu * t) + erlang_c * both

    lo, hi = 0.0, mean
    while tail(hi) > 1 - p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if tail(mid) > 1 - p:
            lo = mid
        else:
            hi = mid
    return hi


# --- sizing ------------------------------------------------------------------------------------


@dataclass
class Plan:
    rate: float
    shards: int
    node_util: float
    node_wait_p99_ms: float
    node_wait_p99_mm1_ms: float
    pods: int
    pod_util: float
    worker_us: float
    pod_p99_ms: float
    calls_in_sequence: int
    redis_p99_ms: float
    network_ms: float
    total_p99_ms: float
    batch_size: float

    def row(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


def node_load(costs: Costs, rate: float, k: int) -> tuple[float, float, list[tuple[float, float]]]:
    """(utilisation of one core, calls per second, service mix in seconds) of one primary."""
    calls = rate * costs.calls(k) / k
    work = rate * costs.node_cpu_per_checkout(k) / k + costs.node_rest
    mix = [(share, us / 1e6) for share, us in costs.service_times(k)]
    return work / 1e6, calls, mix


def redis_part(
    costs: Costs, rate: float, k: int, args: argparse.Namespace
) -> tuple[int, float, float, float]:
    """(calls in sequence at the p99, their p99 in ms, node p99 wait ms, M/M/1's) at K shards."""
    util, _, mix = node_load(costs, rate, k)
    # Calls in sequence of the slowest 1 %: 3 when more than 1 % of checkouts are refused
    # two-step ones (item step, then the token released), else 2 (1 with one shard).
    refused_two = (k - 1) / k * costs.refused
    sequence = 1 if k == 1 else (3 if refused_two > 0.01 else 2)
    mean = sum(share * s for share, s in mix)
    # The node's rest (cluster bus, timers) is busy time too: the queue sees more arrivals of
    # the same mix, enough to reach the node's whole utilisation.
    arrivals = util / mean
    wait = mg1_wait_p(arrivals, mix)
    wait_mm1 = mm1_wait_p(arrivals, mean)
    service = max(s for _, s in mix)
    per_call = 2 * args.rtt_ms / 1e3 + wait + service  # own round-trip, the flush in flight
    return sequence, sequence * per_call * 1e3, wait * 1e3, wait_mm1 * 1e3


def plan(costs: Costs, rate: float, args: argparse.Namespace) -> Plan:
    """The fewest shards, then the fewest pods, that keep utilisations and the p99 in bounds."""
    k = 1
    while True:
        util, _, _ = node_load(costs, rate, k)
        if util <= args.redis_util:
            sequence, redis_ms, wait_ms, wait_mm1_ms = redis_part(costs, rate, k, args)
            if wait_ms <= args.node_wait_ms:
                break
        k += 1
        if k > 100_000:
            raise RuntimeError("no shard count fits")
    worker = costs.worker_cpu(k) / 1e6
    pods = max(1, math.ceil(rate * worker / (args.workers * args.pod_util)))
    while True:
        pod_p99 = mmc_sojourn_p(rate / pods, worker, args.workers) * 1e3
        total = args.network_ms + pod_p99 + redis_ms
        if total <= args.p99_ms:
            break
        pods += 1
    # What one worker's Batcher would carry to one node: its calls to that node in one rtt.
    worker_rate = rate / (pods * args.workers)
    batch = 1 + worker_rate * costs.calls(k) / k * args.rtt_ms / 1e3
    return Plan(
        rate=rate,
        shards=k,
        node_util=util,
        node_wait_p99_ms=wait_ms,
        node_wait_p99_mm1_ms=wait_mm1_ms,
        pods=pods,
        pod_util=rate * worker / (pods * args.workers),
        worker_us=worker * 1e6,
        pod_p99_ms=pod_p99,
        calls_in_sequence=sequence,
        redis_p99_ms=redis_ms,
        network_ms=args.network_ms,
        total_p99_ms=total,
        batch_size=batch,
    )


# --- output ------------------------------------------------------------------------------------


def table(plans: list[Plan], costs: Costs) -> str:
    head = (
        f"{'checkouts/s':>12}{'shards':>8}{'node util':>10}{'node p99 wait':>14}"
        f"{'pods':>7}{'pod util':>9}{'worker us':>10}{'pod p99':>9}{'Redis p99':>10}"
        f"{'total p99':>10}{'batch':>7}"
    )
    rows = [f"calibration: {costs.source}", head]
    for p in plans:
        rows.append(
            f"{p.rate:>12,.0f}{p.shards:>8}{p.node_util:>10.2f}{p.node_wait_p99_ms:>11.2f} ms"
            f"{p.pods:>7}{p.pod_util:>9.2f}{p.worker_us:>10.0f}{p.pod_p99_ms:>6.1f} ms"
            f"{p.redis_p99_ms:>7.1f} ms{p.total_p99_ms:>7.1f} ms{p.batch_size:>7.2f}"
        )
    return "\n".join(rows)


def plot(curves: dict[str, list[Plan]], marked: dict[str, Plan], path: Path, args: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (shards_ax, pods_ax, budget_ax) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [3, 3, 2]}
    )
    styles = {"isolated": ("#2f6fb0", "-", (8, -14)), "end-to-end": ("#c0392b", "--", (-30, 8))}
    for name, plans in curves.items():
        color, line, offset = styles[name]
        rates = [p.rate / 1000 for p in plans]
        shards_ax.plot(rates, [p.shards for p in plans], line, color=color, label=name)
        pods_ax.plot(rates, [p.pods for p in plans], line, color=color, label=name)
        at = marked[name]
        for ax, value in ((shards_ax, at.shards), (pods_ax, at.pods)):
            ax.plot([at.rate / 1000], [value], "o", color=color)
            ax.annotate(
                f"{value}",
                (at.rate / 1000, value),
                textcoords="offset points",
                xytext=offset,
                color=color,
            )
    for ax, title, label in (
        (shards_ax, "Redis shards (primaries) needed", "shards"),
        (pods_ax, f"web pods needed ({args.workers} workers each)", "pods"),
    ):
        ax.axvline(args.rate / 1000, color="#555", linewidth=0.8, linestyle=":")
        ax.set_xlabel("target rate, thousand checkouts / s")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    # What the p99 budget is spent on at the marked rate.
    names = list(marked)
    parts = [
        ("network to the pod", "network_ms", "#9aa5b1"),
        ("pod: CPU queue + service", "pod_p99_ms", "#2f6fb0"),
        ("Redis calls in sequence", "redis_p99_ms", "#c0392b"),
    ]
    bottoms = [0.0] * len(names)
    for label, key, color in parts:
        heights = [getattr(marked[n], key) for n in names]
        budget_ax.bar(names, heights, bottom=bottoms, color=color, label=label)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        budget_ax.text(x, total, f"{total:.1f} ms", ha="center", va="bottom")
    budget_ax.axhline(args.p99_ms, color="#c0392b", linestyle="--", linewidth=1)
    budget_ax.set_ylabel("ms (sum of the parts' p99)")
    budget_ax.set_title(f"p99 at {args.rate / 1000:,.0f}k/s (budget {args.p99_ms:g} ms)")
    budget_ax.legend(fontsize=7)
    fig.suptitle(
        f"sizing one hot sale: Redis primaries at <= {args.redis_util:g} of a core, pods of "
        f"{args.workers} workers at <= {args.pod_util:g}, costs measured on a 2-core machine",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="sources", type=Path, nargs="*", default=[])
    parser.add_argument("--rate", type=float, default=500_000, help="checkouts per second")
    parser.add_argument("--p99-ms", type=float, default=50)
    parser.add_argument("--redis-util", type=float, default=0.7, help="of one core, at most")
    parser.add_argument("--node-wait-ms", type=float, default=2, help="a node's p99 wait, at most")
    parser.add_argument("--pod-util", type=float, default=0.75)
    parser.add_argument("--workers", type=int, default=2, help="gevent workers (cores) per pod")
    parser.add_argument("--network-ms", type=float, default=2, help="client to pod, p99")
    parser.add_argument("--rtt-ms", type=float, default=0.3, help="pod to Redis round-trip")
    parser.add_argument("--plot", type=Path, default=DOCS_PERF / "sharding-model.png")
    parser.add_argument("--json", type=Path, help="write the plans here too")
    args = parser.parse_args(argv)

    if args.sources:
        isolated, e2e = calibrate(args.sources)
    else:
        isolated, e2e = MEASURED, MEASURED_END_TO_END
    rates = [r * 1000 for r in (*range(10, 100, 10), *range(100, 1001, 25))]
    curves: dict[str, list[Plan]] = {}
    marked: dict[str, Plan] = {}
    for costs in (isolated, e2e):
        curves[costs.source] = [plan(costs, r, args) for r in rates]
        marked[costs.source] = plan(costs, args.rate, args)
        print(f"\ncosts ({costs.source}), us: {vars(costs)}")
        for k in (1, 3, 6, marked[costs.source].shards):
            per_node = costs.node_cpu_per_checkout(k) / k
            print(
                f"  K={k}: Redis CPU per checkout, all nodes {costs.node_cpu_per_checkout(k):.1f}"
                f", one node {per_node:.1f} ({per_node / costs.node_cpu_per_checkout(1):.2f}x"
                f" of K=1); worker {costs.worker_cpu(k):.0f} "
                f"({costs.worker_cpu(k) / costs.worker_cpu(1):.2f}x); calls {costs.calls(k):.2f}"
            )
        shown = [plan(costs, r * 1000, args) for r in (50, 100, 250, 500, 1000)]
        print(table(shown, costs))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, marked, args.plot, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "costs": {c.source: vars(c) for c in (isolated, e2e)},
                    "plans": {name: p.row() for name, p in marked.items()},
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                indent=2,
            )
        )
    print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
