"""The waiting room under a crowd: thousands join before a sale opens, then poll as told.

    python load/waiting_room.py [--users 3000] [--rate 200] [--lead 20] [--connections 200]
                                [--timeout 120] [--plot docs/perf/waiting-room.png]

Starts Redis and PostgreSQL (or uses REDIS_URL / DATABASE_URL) and `flashsale serve` (2 gevent
workers) on 127.0.0.1 with FLASHSALE_WAITING_ROOM=on and FLASHSALE_ADMIT_RATE=--rate, with a
sale that opens --lead seconds after the start (pre-loaded, as the opener does). --users users
(gevent greenlets on --connections shared keep-alive connections) each join the queue at a
random moment before the opening, then ask GET /queue/<ticket> again after exactly the
`retry_after` they were told, until admitted; then each checks out one item of its own with its
pass (every tenth also tries once without it, and must hear `not_admitted`). A sampler reads
/metrics every 0.2 s: flashsale_queue_length and flashsale_queue_admitted_total.

It reports and checks: admissions before the opening (must be 0), the admission rate while
anyone waits (least squares over the samples; must be within 5 % of --rate), the largest gap
between the admissions counted and rate x (time since the opening), the rank correlation of
join order and queue order among the pre-opening joiners (near 0 for a random draw), whether
any user was told it was admitted before its turn, whether flashsale_queue_admitted_total (summed
over the workers) ends at the number admitted, and the checkouts by outcome. It writes
JSON to load/results/ and a plot of queue length and admissions over time to --plot.
Exits 1 on any failed check.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must see the patched socket module
import argparse
import contextlib
import json
import math
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import kit
import orjson
from geventhttpclient import HTTPClient
from prometheus_client.parser import text_string_to_metric_families

from flashsale.stores.inventory.keys import keys_for


@dataclass
class Visitor:
    """What one user saw."""

    user_id: str
    joined_at: float = 0.0
    ticket: str = ""
    admitted_at: float | None = None  # when it first heard `admitted`
    polls: int = 0
    positions: list[int] = field(default_factory=list)


@dataclass
class Crowd:
    opening: float
    visitors: list[Visitor]
    answers: Counter[str] = field(default_factory=Counter)
    checkouts: Counter[str] = field(default_factory=Counter)
    # (time, queue length, admitted, seconds the scrape took): the time is the scrape's middle
    samples: list[tuple[float, float, float, float]] = field(default_factory=list)
    early_admissions: int = 0  # users told `admitted` before the opening (must stay 0)
    increases: int = 0  # positions that went up (must stay 0)
    done: int = 0


def request(
    http: HTTPClient, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    response = http.request(method, path, body=b"", headers=headers)
    body = response.read()
    return response.status_code, orjson.loads(body) if body else {}


def outcome(status: int, body: dict[str, Any]) -> str:
    return "ok" if status == 200 else body.get("error", {}).get("code", str(status))


def visit(index: int, http: HTTPClient, crowd: Crowd, window: float, deadline: float) -> None:
    """Join at a random moment before the opening, poll as told, check out once admitted."""
    visitor = crowd.visitors[index]
    rng = random.Random(index)
    gevent.sleep(rng.random() * window)
    while True:
        status, body = request(http, "POST", f"/queue?user_id={visitor.user_id}")
        crowd.answers["join " + outcome(status, body)] += 1
        if status == 200:
            break
        gevent.sleep(1)
    visitor.joined_at = time.time()
    visitor.ticket = body["ticket"]
    while not body["admitted"] and time.monotonic() < deadline:
        gevent.sleep(body["retry_after"])
        status, body = request(http, "GET", f"/queue/{visitor.ticket}")
        crowd.answers["look " + outcome(status, body)] += 1
        visitor.polls += 1
        if status != 200:
            body = {"admitted": False, "retry_after": 1}
            continue
        if body["position"] is not None:
            if visitor.positions and body["position"] > visitor.positions[-1]:
                crowd.increases += 1
            visitor.positions.append(body["position"])
    if not body["admitted"]:
        return
    visitor.admitted_at = time.time()
    if visitor.admitted_at < crowd.opening:
        crowd.early_admissions += 1
    item = index + 1
    if index % 10 == 0:
        status, answer = request(http, "POST", f"/checkout?user_id={visitor.user_id}&id={item}")
        crowd.checkouts["without pass: " + outcome(status, answer)] += 1
    status, answer = request(
        http,
        "POST",
        f"/checkout?user_id={visitor.user_id}&id={item}",
        headers={"X-Flashsale-Pass": body["pass"]},
    )
    crowd.checkouts["with pass: " + outcome(status, answer)] += 1
    crowd.done += 1


def sample(http: HTTPClient, crowd: Crowd, stop: float) -> None:
    """flashsale_queue_length and flashsale_queue_admitted_total every 0.2 s."""
    while time.monotonic() < stop and crowd.done < len(crowd.visitors):
        before = time.time()
        response = http.get("/metrics")
        text = response.read().decode()
        after = time.time()
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in ("flashsale_queue_length", "flashsale_queue_admitted_total"):
                    values[s.name] = values.get(s.name, 0.0) + s.value
        crowd.samples.append(
            (
                (before + after) / 2,
                values.get("flashsale_queue_length", math.nan),
                values.get("flashsale_queue_admitted_total", 0.0),
                after - before,
            )
        )
        gevent.sleep(0.2)


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation (Pearson's r of the ranks; both without ties here)."""

    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0] * len(values)
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    rx, ry = ranks(xs), ranks(ys)
    n = len(rx)
    d2 = sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def slope(points: list[tuple[float, float]]) -> float:
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def plot(crowd: Crowd, rate: float, path: Path) -> None:
    plt = kit.pyplot()
    t = [s[0] - crowd.opening for s in crowd.samples]  # the middle of each scrape
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, [s[1] for s in crowd.samples], label="flashsale_queue_length", color="#d62728")
    ax.plot(t, [s[2] for s in crowd.samples], label="flashsale_queue_admitted_total")
    ideal = [max(0.0, min(len(crowd.visitors), x * rate)) for x in t]
    ax.plot(t, ideal, "--", color="grey", linewidth=1, label=f"{rate:g}/s from the opening")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("seconds since the sale opened")
    ax.set_ylabel("users")
    ax.set_title(
        f"Waiting room: {len(crowd.visitors)} users join before the opening, "
        f"FLASHSALE_ADMIT_RATE={rate:g}"
    )
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    kit.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200, help="FLASHSALE_ADMIT_RATE")
    parser.add_argument("--lead", type=int, default=20, help="seconds until the sale opens")
    parser.add_argument("--connections", type=int, default=200, help="shared keep-alive pool")
    parser.add_argument("--timeout", type=float, default=120, help="give up after, s")
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    parser.add_argument("--plot", type=Path, default=kit.DOCS_PERF / "waiting-room.png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # A period that ends --lead seconds from now: the sale opening then is the next one.
    opening = int(time.time()) + args.lead
    opening += opening % 2
    period = opening // 2
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-room-")))
        stores = stack.enter_context(kit.stores(state))
        env = kit.service_env(
            stores,
            FLASHSALE_ITEMS=max(args.users, 1000),
            FLASHSALE_PERIOD=period,
            FLASHSALE_WAITING_ROOM="on",
            FLASHSALE_PASS_KEY=secrets.token_hex(32),
            FLASHSALE_ADMIT_RATE=args.rate,
            FLASHSALE_QUEUE_OPENS_BEFORE=args.lead + 60,
            PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"),
        )
        sale = kit.open_sale(env, opening)  # pre-loaded, as the opener does; it opens then
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stack.callback(kit.keep_logs, state, args.out, f"waiting-room-{stamp}")
        served = stack.enter_context(kit.serve_service(env, state / "service.log"))
        host, port = served.base_url.removeprefix("http://").split(":")
        http = HTTPClient(
            host, int(port), concurrency=args.connections, connection_timeout=10, network_timeout=30
        )
        window = opening - time.time() - 3  # everyone has joined 3 s before the opening
        if window < 1:
            print("the sale opens too soon: raise --lead", file=sys.stderr)
            return 1
        print(
            f"sale {sale.sale_id} opens in {opening - time.time():.1f} s; {args.users} users "
            f"join within {window:.1f} s; admit rate {args.rate:g}/s",
            flush=True,
        )
        crowd = Crowd(opening, [Visitor(f"visitor{i}") for i in range(args.users)])
        deadline = time.monotonic() + args.timeout
        # The sampler's own connection: its scrapes never wait behind the crowd's requests.
        scraper = HTTPClient(host, int(port), concurrency=1, network_timeout=30)
        sampler = gevent.spawn(sample, scraper, crowd, deadline)
        visits = [gevent.spawn(visit, i, http, crowd, window, deadline) for i in range(args.users)]
        gevent.joinall(visits, timeout=args.timeout + 10)
        gevent.killall(visits)
        sampler.join(timeout=5)
        sampler.kill()
        http.close()
        scraper.close()
        client = kit.redis_client(stores.redis_url)
        keys = keys_for(sale.sale_id)
        draw_order = client.zrange(keys.queue_draw, 0, -1)
        queue_keys = (keys.queue, keys.queue_users, keys.queue_tickets, keys.queue_draw)
        memory = sum(client.memory_usage(key, samples=0) or 0 for key in queue_keys)

    result = analyse(crowd, args.rate, draw_order)
    result.update(
        redis_memory_queue_bytes=memory,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config={k: str(v) for k, v in vars(args).items()},
        sale_id=sale.sale_id,
        answers=dict(crowd.answers),
        checkouts=dict(crowd.checkouts),
    )
    path = args.out / f"waiting-room-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    plot(crowd, args.rate, args.plot)
    for key in (
        "admitted",
        "admitted_total_metric",
        "admitted_before_opening",
        "measured_rate",
        "rate_error",
        "largest_gap_from_schedule",
        "rank_correlation_join_vs_queue",
        "told_admitted_before_turn",
        "position_increases",
        "polls_per_user",
        "redis_memory_queue_bytes",
    ):
        print(f"{key}: {result[key]}")
    print(f"answers: {dict(crowd.answers)}")
    print(f"checkouts: {dict(crowd.checkouts)}")
    print("anomalies: " + ("; ".join(result["anomalies"]) or "none"))
    print(f"wrote {path} and {args.plot}")
    return 1 if result["anomalies"] else 0


def analyse(crowd: Crowd, rate: float, draw_order: list[str]) -> dict[str, Any]:
    opening = crowd.opening
    total = len(crowd.visitors)
    before = [s for s in crowd.samples if s[0] + s[3] / 2 < opening]
    backlog = [
        (t - opening, a) for t, length, a, _ in crowd.samples if t > opening + 0.5 and length > 0
    ]
    backlog = backlog[:-2]  # the last samples straddle the queue running dry
    measured = slope(backlog) if len(backlog) > 5 else math.nan
    # The schedule says rate x (time since the opening); a scrape that took d seconds may differ
    # from it by rate x d / 2 for its timing alone, so only the quick ones are compared.
    quick = [(t, a) for t, _, a, took in crowd.samples if t > opening and took < 0.02]
    gap = max((abs(a - min(total, (t - opening) * rate)) for t, a in quick), default=math.nan)
    visitors = {v.ticket: v for v in crowd.visitors}
    early = [visitors[t] for t in draw_order if t in visitors]
    rho = spearman([v.joined_at for v in early], list(range(len(early))))
    # The n-th in the queue is due n / rate s after the opening; it may hear so a little later
    # (it asks when told), never before.
    out_of_turn = sum(
        1
        for n, v in enumerate(early, start=1)
        if v.admitted_at is not None and v.admitted_at < opening + n / rate - 0.05
    )
    admitted = sum(v.admitted_at is not None for v in crowd.visitors)
    counted = crowd.samples[-1][2] if crowd.samples else math.nan
    result = {
        "admitted": admitted,
        "admitted_total_metric": counted,
        "admitted_before_opening": max((s[2] for s in before), default=0) + crowd.early_admissions,
        "measured_rate": round(measured, 2),
        "rate_error": round(measured / rate - 1, 4),
        "largest_gap_from_schedule": round(gap, 1),
        "rank_correlation_join_vs_queue": round(rho, 4),
        "pre_opening_joiners": len(early),
        "told_admitted_before_turn": out_of_turn,
        "position_increases": crowd.increases,
        "polls_per_user": round(sum(v.polls for v in crowd.visitors) / total, 2),
        "quick_samples_compared": len(quick),
        "samples": [
            [round(t - opening, 3), length, a, round(took, 4)]
            for t, length, a, took in crowd.samples
        ],
    }
    anomalies = []
    if admitted != total:
        anomalies.append(f"{total - admitted} users never admitted")
    if counted != admitted:
        anomalies.append(f"flashsale_queue_admitted_total ends at {counted}, not {admitted}")
    if result["admitted_before_opening"]:
        anomalies.append("admissions before the opening")
    if not abs(result["rate_error"]) <= 0.05:
        anomalies.append(f"rate {measured:.1f}/s is not within 5 % of {rate:g}/s")
    if abs(rho) > 0.1:
        anomalies.append(f"join order and queue order correlate: {rho:.3f}")
    if out_of_turn or crowd.increases:
        anomalies.append("admitted out of turn, or a position went up")
    unexpected = {
        k: n
        for k, n in crowd.checkouts.items()
        if k not in ("with pass: ok", "without pass: not_admitted")
    }
    if unexpected:
        anomalies.append(f"unexpected checkout answers {unexpected}")
    result["anomalies"] = anomalies
    return result


if __name__ == "__main__":
    sys.exit(main())
