"""A whole sale sold out by many real HTTP clients against the real `flashsale serve`
(gunicorn, several gevent workers, its sweeper), then checked by counting rows in PostgreSQL.

Run with `pytest -s` to see the figures.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.metrics import counted
from tests.support.processes import flashsale, serving
from tests.support.stores import sql

ITEMS = 200
LIMIT = 3
CLIENTS = 120  # concurrent HTTP clients, one user each: 360 slots for 200 items
TTL = 2  # seconds; abandoned checkouts come back to stock within the test
ABANDON = 0.05  # share of successful checkouts the client never purchases
DEADLINE = 120.0  # seconds the race may take at most (it takes a few)


@dataclass(frozen=True)
class Served:
    base: str
    sale_id: str
    db: str
    env: dict[str, str]


@pytest.fixture
def served(service_env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """A sale of ITEMS opened by the CLI, served by 2 gunicorn workers."""
    env = {
        **service_env,
        "FLASHSALE_ITEMS": str(ITEMS),
        "FLASHSALE_USER_LIMIT": str(LIMIT),
        "FLASHSALE_CHECKOUT_TTL": str(TTL),
        "FLASHSALE_RATE_PER_USER": "0",
        "FLASHSALE_SWEEP_INTERVAL": "0.2",
    }
    opened = json.loads(flashsale("open-sale", env=env).stdout.strip().splitlines()[-1])
    assert opened["total_items"] == ITEMS
    with serving(env, tmp_path, workers=2) as (base, _proc):
        yield Served(base, opened["sale_id"], env["DATABASE_URL"], env)


@dataclass
class Tally:
    """What one client sent and heard."""

    checkouts: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    purchases: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> 200 body
    abandoned: list[str] = field(default_factory=list)
    purchase_outcomes: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


def outcome_of(response: requests.Response) -> str:
    return "ok" if response.status_code == 200 else response.json()["error"]["code"]


def shopper(
    base: str, user: str, start: threading.Barrier, stop_at: float, rng: random.Random
) -> Tally:
    """Checks out random items and buys them until the sale is sold out or the user is full;
    now and then abandons a checkout, as real shoppers do."""
    tally = Tally()
    with requests.Session() as http:
        http.get(f"{base}/healthz", timeout=30)  # connected before the start signal
        start.wait()
        while time.monotonic() < stop_at:
            item = str(rng.randint(1, ITEMS))
            response = http.post(
                f"{base}/checkout", params={"user_id": user, "id": item}, timeout=30
            )
            outcome = outcome_of(response)
            code = response.json()["code"] if outcome == "ok" else None
            tally.checkouts.append((user, item, outcome, code))
            if outcome == "ok":
                if code in tally.purchases:
                    tally.unexpected.append(f"bought {item} yet checkout handed out its code")
                    continue
                if rng.random() < ABANDON:
                    tally.abandoned.append(code)
                    continue
                bought = http.post(f"{base}/purchase", params={"code": code}, timeout=30)
                while outcome_of(bought) == "overloaded":  # shed at once: try again shortly
                    tally.purchase_outcomes["overloaded"] += 1
                    time.sleep(0.05)
                    bought = http.post(f"{base}/purchase", params={"code": code}, timeout=30)
                tally.purchase_outcomes[outcome_of(bought)] += 1
                if bought.status_code == 200:
                    tally.purchases[code] = bought.json()
                    if code in tally.abandoned:
                        tally.abandoned.remove(code)  # held again and bought after all
                    if len(tally.purchases) == LIMIT:
                        break
                elif outcome_of(bought) == "code_expired":
                    tally.abandoned.append(code)  # too slow under load: a legitimate answer
                else:
                    tally.unexpected.append(f"purchase: {bought.status_code} {bought.text}")
            elif outcome == "sold_out":
                break
            elif outcome == "user_limit_reached":
                time.sleep(0.2)  # an abandoned checkout of ours has to expire first
            elif outcome == "item_unavailable":
                time.sleep(0.02)
            elif outcome == "overloaded":
                time.sleep(0.05)  # more in flight than a worker answers in time: shed at once
            else:
                tally.unexpected.append(f"checkout: {response.status_code} {response.text}")
    return tally


def run_clients(count: int, target: Any, *args: Any) -> list[Any]:
    """`count` threads calling target(index, *args); returns their results, re-raising errors."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = target(index, *args)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE + 60)
    assert not any(t.is_alive() for t in threads), "a client never finished"
    if errors:
        raise errors[0]
    return results


def wait_for_rows(url: str, sale_id: str, expected: int, timeout: float = 30) -> int:
    """The sweeper moves attempts within about a second; give it a bounded while."""
    deadline = time.monotonic() + timeout
    while True:
        ((count,),) = sql(url, "SELECT count(*) FROM checkout_attempts WHERE sale_id = %s", sale_id)
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def test_many_clients_sell_out_exactly_n(served: Served) -> None:
    base, sale_id, db = served.base, served.sale_id, served.db
    start = threading.Barrier(CLIENTS + 1)
    seeds = random.Random(20260601)
    rngs = [random.Random(seeds.random()) for _ in range(CLIENTS)]

    def client(index: int) -> Tally:
        return shopper(
            base, f"shopper-{index:03d}", start, time.monotonic() + DEADLINE, rngs[index]
        )

    started = 0.0

    def go() -> None:
        nonlocal started
        start.wait()
        started = time.monotonic()

    signal = threading.Thread(target=go)
    signal.start()
    tallies = run_clients(CLIENTS, client)
    signal.join()
    seconds = time.monotonic() - started

    unexpected = [u for t in tallies for u in t.unexpected]
    assert not unexpected, unexpected[:5]
    checkouts = [c for t in tallies for c in t.checkouts]
    purchases = {code: body for t in tallies for code, body in t.purchases.items()}
    abandoned = {code for t in tallies for code in t.abandoned} - set(purchases)
    outcomes = Counter(o for _, _, o, _ in checkouts)
    purchase_requests = sum(sum(t.purchase_outcomes.values()) for t in tallies)

    # The sale sold out, exactly: N purchases acknowledged, N rows, every item once.
    assert len(purchases) == ITEMS
    status = requests.get(f"{base}/sale/status", timeout=10).json()
    assert (status["items_sold"], status["remaining_items"]) == (ITEMS, 0)
    assert sql(
        db, "SELECT count(*), count(DISTINCT item_id) FROM purchases WHERE sale_id = %s", sale_id
    ) == [(ITEMS, ITEMS)]
    assert (
        sql(
            db,
            "SELECT item_id FROM purchases WHERE sale_id = %s GROUP BY item_id HAVING count(*) > 1",
            sale_id,
        )
        == []
    )
    assert {
        row[0] for row in sql(db, "SELECT item_id FROM purchases WHERE sale_id = %s", sale_id)
    } == {str(n) for n in range(1, ITEMS + 1)}
    # Nobody over the limit.
    assert (
        sql(
            db,
            "SELECT user_id, count(*) FROM purchases WHERE sale_id = %s"
            " GROUP BY user_id HAVING count(*) > %s",
            sale_id,
            LIMIT,
        )
        == []
    )
    # What the clients were told is what PostgreSQL holds.
    rows = sql(db, "SELECT code, user_id, item_id FROM purchases WHERE sale_id = %s", sale_id)
    assert {code: (user, item) for code, user, item in rows} == {
        code: (body["user_id"], body["item_id"]) for code, body in purchases.items()
    }

    # Every checkout request has its attempt row, with its outcome and code.
    attempt_rows = wait_for_rows(db, sale_id, len(checkouts))
    assert attempt_rows == len(checkouts)
    stored = Counter(
        sql(
            db,
            "SELECT user_id, item_id, outcome, code FROM checkout_attempts WHERE sale_id = %s",
            sale_id,
        )
    )
    assert stored == Counter(checkouts)
    # Each purchase was made with a code handed to that same user for that same item.
    assert sql(
        db,
        "SELECT count(*) FROM purchases p WHERE sale_id = %s AND NOT EXISTS ("
        " SELECT 1 FROM checkout_attempts a WHERE a.code = p.code"
        " AND a.outcome = 'ok' AND a.user_id = p.user_id AND a.item_id = p.item_id)",
        sale_id,
    ) == [(0,)]

    # Every code works exactly once: a second purchase is the same purchase; a code whose
    # checkout was abandoned cannot take the item someone else bought.
    with requests.Session() as http:
        for code, body in purchases.items():
            again = http.post(f"{base}/purchase", params={"code": code}, timeout=10)
            assert again.status_code == 200 and again.json() == body
        for code in abandoned:
            late = http.post(f"{base}/purchase", params={"code": code}, timeout=10)
            assert late.status_code == 410, late.text
            assert late.json()["error"]["code"] == "code_expired"
    assert sql(db, "SELECT count(*) FROM purchases WHERE sale_id = %s", sale_id) == [(ITEMS,)]

    # The counters of both workers add up to exactly what was sent.
    metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert counted(metrics, "flashsale_checkouts_total") == len(checkouts)
    for outcome, count in outcomes.items():
        assert counted(metrics, "flashsale_checkouts_total", outcome=outcome) == count, outcome
    assert counted(metrics, "flashsale_purchases_total", outcome="ok") == (
        sum(t.purchase_outcomes["ok"] for t in tallies) + len(purchases)
    )
    assert counted(metrics, "flashsale_purchases_total") == (
        purchase_requests + len(purchases) + len(abandoned)
    )

    # And the operators' audit finds Redis and PostgreSQL in agreement.
    audit = flashsale("audit", "--sale", sale_id, env=served.env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    print(
        f"\nsellout: {CLIENTS} clients, {ITEMS} items, limit {LIMIT}, TTL {TTL}s, 2 workers:"
        f" sold out in {seconds:.2f}s;"
        f" {len(checkouts)} checkout requests ({dict(outcomes)}),"
        f" {purchase_requests} purchase requests, {len(purchases)} purchases,"
        f" {len(abandoned)} codes abandoned, {attempt_rows} attempt rows;"
        f" {(len(checkouts) + purchase_requests) / seconds:.0f} requests/s"
    )


def test_one_user_racing_gets_at_most_the_limit(served: Served) -> None:
    base, sale_id, db = served.base, served.sale_id, served.db
    racers = 30
    start = threading.Barrier(racers)

    def checkout(index: int, user: str, items: list[int]) -> tuple[str, str, str | None]:
        with requests.Session() as http:
            http.get(f"{base}/healthz", timeout=30)
            start.wait()
            response = http.post(
                f"{base}/checkout", params={"user_id": user, "id": str(items[index])}, timeout=30
            )
        outcome = outcome_of(response)
        return str(items[index]), outcome, response.json()["code"] if outcome == "ok" else None

    results = run_clients(racers, checkout, "greedy", list(range(1, racers + 1)))
    outcomes = Counter(o for _, o, _ in results)
    assert outcomes == {"ok": LIMIT, "user_limit_reached": racers - LIMIT}
    codes = [code for _, _, code in results if code]

    # Each of those codes purchased by 10 requests at once: one purchase per code, all told
    # the same.
    start = threading.Barrier(10 * LIMIT)

    def purchase(index: int, codes: list[str]) -> tuple[int, str]:
        with requests.Session() as http:
            http.get(f"{base}/healthz", timeout=30)
            start.wait()
            response = http.post(
                f"{base}/purchase", params={"code": codes[index % LIMIT]}, timeout=30
            )
        return response.status_code, response.text

    answers = run_clients(10 * LIMIT, purchase, codes)
    assert {status for status, _ in answers} == {200}
    assert len({text for _, text in answers}) == LIMIT
    assert sql(db, "SELECT count(*) FROM purchases WHERE user_id = 'greedy'") == [(LIMIT,)]

    rows = wait_for_rows(db, sale_id, racers)
    assert rows == racers
    assert dict(
        sql(
            db,
            "SELECT outcome, count(*) FROM checkout_attempts"
            " WHERE user_id = 'greedy' GROUP BY outcome",
        )
    ) == {"ok": LIMIT, "user_limit_reached": racers - LIMIT}
    print(
        f"\none user racing: {racers} concurrent checkouts -> {dict(outcomes)};"
        f" {10 * LIMIT} concurrent purchases of {LIMIT} codes -> {LIMIT} purchases"
    )
