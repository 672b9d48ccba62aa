"""A whole sale sold out by a crowd, then audited: the claim "exactly N, no anomalies" under load.

    python load/sellout.py [--items 10000] [--users 2000] [--connections 200] [--ttl 5]
                           [--abandon 0.33] [--timeout 300]

Starts Redis and PostgreSQL (or uses REDIS_URL / DATABASE_URL), opens a sale of --items items
with a short checkout TTL, serves it with `flashsale serve` (2 gevent workers, the sweeper on,
the default per-user rate limit and user limit), reads the item ids from /sale/items, and lets
--users users (gevent greenlets sharing --connections keep-alive connections) each check out
random items they have not seen sold, buy most of them and abandon about a third (those come
back after the TTL), with a little think time, until the sale answers `sold_out`.

It prints the time to sell out, requests by outcome and client-side latency percentiles, then
checks the records: `flashsale audit` of the sale, purchases = items, no user over the limit,
and one checkout_attempts row per checkout answer by outcome. Exits 1 on any anomaly.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must see the patched socket module
import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
import kit
import orjson
import psycopg2
from gevent.event import Event
from geventhttpclient import HTTPClient


class Shop:
    """What the crowd shares: the catalogue minus what is known sold, counters, the end."""

    def __init__(self, item_ids: list[str]):
        self.available = list(item_ids)
        self._where = {item: i for i, item in enumerate(self.available)}
        self.sold_out = Event()
        self.sold_out_at: float | None = None
        self.checkouts: Counter[str] = Counter()
        self.purchases: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.bought: Counter[str] = Counter()

    def pick(self, rng: random.Random) -> str | None:
        return rng.choice(self.available) if self.available else None

    def mark_sold(self, item: str) -> None:
        """O(1) removal: swap with the last and pop."""
        index = self._where.pop(item, None)
        if index is None:
            return
        last = self.available.pop()
        if index < len(self.available):
            self.available[index] = last
            self._where[last] = index


def call(http: HTTPClient, shop: Shop, path: str) -> tuple[int, dict[str, Any], dict]:
    started = time.perf_counter()
    response = http.post(path, body=b"")
    body = response.read()
    shop.latencies.append(time.perf_counter() - started)
    headers = {k.lower(): v for k, v in response.items()}
    return response.status_code, orjson.loads(body) if body else {}, headers


def user(
    index: int, http: HTTPClient, shop: Shop, args: argparse.Namespace, deadline: float
) -> None:
    """One shopper: checkout a random item, then buy it or walk away; until sold out."""
    rng = random.Random(index)
    uid = f"shopper{index}"
    think = args.think / 1000
    gevent.sleep(rng.random() * think)  # do not all arrive in the same millisecond
    while not shop.sold_out.is_set() and time.monotonic() < deadline:
        if shop.bought[uid] >= args.limit:
            return
        item = shop.pick(rng)
        if item is None:
            return
        status, body, headers = call(http, shop, f"/checkout?user_id={uid}&id={item}")
        outcome = "ok" if status == 200 else body.get("error", {}).get("code", str(status))
        shop.checkouts[outcome] += 1
        if outcome == "sold_out":
            if shop.sold_out_at is None:
                shop.sold_out_at = time.monotonic()
            shop.sold_out.set()
            return
        if outcome == "ok":
            gevent.sleep(rng.random() * think)
            if rng.random() < args.abandon:
                shop.purchases["abandoned"] += 1
                continue
            status, body, headers = call(http, shop, f"/purchase?code={body['code']}")
            result = "ok" if status == 200 else body.get("error", {}).get("code", str(status))
            shop.purchases[result] += 1
            if result == "ok":
                shop.bought[uid] += 1
                shop.mark_sold(item)
        elif outcome == "rate_limited":
            gevent.sleep(float(headers.get("retry-after", "1")))
        elif outcome == "user_limit_reached":
            gevent.sleep(args.ttl / 2)  # own abandoned reservations expire, then try again
        elif outcome not in ("item_unavailable",):
            gevent.sleep(0.2)  # unexpected (503...): back off a little
        gevent.sleep(rng.random() * think)


def item_ids(http: HTTPClient) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        path = "/sale/items?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        response = http.get(path)
        page = orjson.loads(response.read())
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def check_records(
    database_url: str, sale_id: str, shop: Shop, items: int, limit: int
) -> tuple[list[str], dict[str, Any]]:
    """Counting rows: purchases, per-user limits, and one attempt row per checkout answer."""
    problems = []
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(DISTINCT item_id) FROM purchases WHERE sale_id = %s", (sale_id,)
        )
        purchases, distinct = cur.fetchone()
        cur.execute(
            "SELECT user_id, count(*) FROM purchases WHERE sale_id = %s GROUP BY user_id"
            " HAVING count(*) > %s",
            (sale_id, limit),
        )
        over = cur.fetchall()
        cur.execute(
            "SELECT outcome, count(*) FROM checkout_attempts WHERE sale_id = %s GROUP BY outcome",
            (sale_id,),
        )
        attempts = dict(cur.fetchall())
    if purchases != items or distinct != items:
        problems.append(f"purchases: {purchases} rows, {distinct} distinct items, expected {items}")
    if over:
        problems.append(f"users over the limit: {over}")
    if shop.purchases["ok"] != purchases:
        problems.append(
            f"clients heard 200 for {shop.purchases['ok']} purchases, PostgreSQL holds {purchases}"
        )
    if attempts != dict(shop.checkouts):
        problems.append(
            f"checkout attempts in PostgreSQL {attempts} != answers {dict(shop.checkouts)}"
        )
    return problems, {"purchases": purchases, "attempts_by_outcome": attempts}


def wait_drained(database_url: str, sale_id: str, expected: int, timeout: float = 30) -> None:
    """The sweeper moves attempts within about a second; wait until all have landed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM checkout_attempts WHERE sale_id = %s", (sale_id,))
            if cur.fetchone()[0] >= expected:
                return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=200, help="shared keep-alive pool")
    parser.add_argument("--limit", type=int, default=10, help="FLASHSALE_USER_LIMIT")
    parser.add_argument("--ttl", type=int, default=5, help="FLASHSALE_CHECKOUT_TTL, s")
    parser.add_argument("--abandon", type=float, default=0.33, help="share of checkouts abandoned")
    parser.add_argument("--think", type=float, default=50, help="max think time, ms")
    parser.add_argument("--timeout", type=float, default=300, help="give up after, s")
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-sell-")))
        stores = stack.enter_context(kit.stores(state))
        env = kit.service_env(
            stores,
            FLASHSALE_ITEMS=args.items,
            FLASHSALE_PERIOD=kit.open_period(),
            FLASHSALE_CHECKOUT_TTL=args.ttl,
            FLASHSALE_USER_LIMIT=args.limit,
            PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"),
        )
        sale = kit.open_sale(env)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stack.callback(kit.keep_logs, state, args.out, f"sellout-{stamp}")
        served = stack.enter_context(kit.serve_service(env, state / "service.log"))
        host, port = served.base_url.removeprefix("http://").split(":")
        http = HTTPClient(
            host, int(port), concurrency=args.connections, connection_timeout=10, network_timeout=30
        )
        ids = item_ids(http)
        print(
            f"sale {sale.sale_id}: {len(ids)} items; {args.users} users on "
            f"{args.connections} connections, TTL {args.ttl} s, abandon {args.abandon:.0%}",
            flush=True,
        )

        shop = Shop(ids)
        started = time.monotonic()
        deadline = started + args.timeout
        crowd = [gevent.spawn(user, i, http, shop, args, deadline) for i in range(args.users)]

        def progress() -> None:
            while not shop.sold_out.is_set():
                gevent.sleep(5)
                print(
                    f"  {time.monotonic() - started:6.1f} s  sold {shop.purchases['ok']:>6}  "
                    f"checkouts {sum(shop.checkouts.values()):>7}",
                    flush=True,
                )

        reporter = gevent.spawn(progress)
        gevent.joinall(crowd, timeout=args.timeout + 30)
        gevent.killall(crowd)
        reporter.kill()
        elapsed = (shop.sold_out_at or time.monotonic()) - started
        http.close()

        print("waiting for the sweeper ...", flush=True)
        wait_drained(stores.database_url, sale.sale_id, sum(shop.checkouts.values()))
        audit = subprocess.run(
            [sys.executable, "-m", "flashsale", "audit", "--sale", sale.sale_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        problems, records = check_records(
            stores.database_url, sale.sale_id, shop, args.items, args.limit
        )
        memory = kit.sale_keys_memory(kit.redis_client(stores.redis_url), sale.sale_id)

    requests = sum(shop.checkouts.values()) + sum(
        n for k, n in shop.purchases.items() if k != "abandoned"
    )
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "sale_id": sale.sale_id,
        "sold_out": shop.sold_out.is_set(),
        "seconds_to_sell_out": round(elapsed, 2),
        "requests": requests,
        "requests_per_second": round(requests / elapsed, 1) if elapsed else None,
        "checkouts": dict(shop.checkouts),
        "purchases": dict(shop.purchases),
        "latency": percentiles(shop.latencies),
        "records": records,
        "redis_memory_sold_out": memory,
        "audit_exit": audit.returncode,
        "audit": audit.stdout.strip(),
        "problems": problems,
    }
    path = args.out / f"sellout-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))

    print(
        f"\nsold out: {result['sold_out']} in {result['seconds_to_sell_out']} s "
        f"({requests} requests, {result['requests_per_second']} req/s)"
    )
    print(f"checkouts by outcome: {result['checkouts']}")
    print(f"purchases by outcome: {result['purchases']}")
    print(f"client latency: {result['latency']}")
    print(f"records: {records}")
    print(f"Redis memory of the sold-out sale (MEMORY USAGE, bytes): {memory}")
    print(audit.stdout.strip())
    if audit.returncode or audit.stderr.strip():
        print(audit.stderr.strip()[-2000:], file=sys.stderr)
    anomalies = problems + (
        [f"flashsale audit exited {audit.returncode}"] if audit.returncode else []
    )
    anomalies += [] if shop.sold_out.is_set() else ["the sale did not sell out in time"]
    print("anomalies: " + ("none" if not anomalies else "; ".join(anomalies)))
    print(f"wrote {path}")
    return 1 if anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
