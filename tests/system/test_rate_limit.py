"""Rate limits against a running `flashsale serve` with two workers: a token bucket per user
and per client address, kept in Redis and spent inside the checkout/purchase script, so every
worker and every pod shares one bucket and concurrent requests cannot overspend it.

The buckets here refill slowly (one token per 10 s, a bucket of one), so the bound on what may
pass is computed from the time the burst really took, never assumed. What the limiter does
without Redis, and that made-up sales and codes spend the address's bucket before PostgreSQL
is asked, are in tests/app/test_rate_limit.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.crowd import query, wait_settled
from tests.support.processes import served_stack
from tests.support.service import SLOW_RATE, allowed_at_most


@pytest.fixture
def serve(tmp_path: Path, redis_server: Any, postgres_server: Any):
    """serve(**settings) -> (base, env) of a server with those settings, stopped after."""
    stacks = []

    def start(**settings: str) -> tuple[str, dict[str, str]]:
        stack = served_stack(
            redis_server.url, postgres_server.url, tmp_path, redis_db=11, workers=2, **settings
        )
        stacks.append(stack)
        base, env, _ = stack.__enter__()
        return base, env

    yield start
    for stack in stacks:
        stack.__exit__(None, None, None)


def checkout(base: str, user: str, item: int, **headers: str) -> requests.Response:
    return requests.post(
        f"{base}/checkout", params={"user_id": user, "id": str(item)}, headers=headers, timeout=10
    )


def assert_limited(answer: requests.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "rate_limited"
    assert answer.json()["error"]["message"]
    assert int(answer.headers["Retry-After"]) >= 1


def burst(requests_: list[Any], threads: int = 20) -> tuple[list[requests.Response], float]:
    """Send the calls from many threads at once; returns the answers and the time it took."""
    answers: list[requests.Response] = []
    lock = threading.Lock()
    queue = list(requests_)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                call = queue.pop()
            answer = call()
            with lock:
                answers.append(answer)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    return answers, time.monotonic() - started


def drained_outcomes(env: dict[str, str]) -> Counter:
    """Outcomes of every checkout attempt, once the sweeper has moved them all."""
    wait_settled(env, query(env, "SELECT sale_id FROM sales")[0][0])
    return Counter(outcome for (outcome,) in query(env, "SELECT outcome FROM checkout_attempts"))


def test_one_user_cannot_overspend_the_bucket_across_workers(serve):
    """40 concurrent checkouts of one user, spread over both workers: only what the bucket
    holds passes; every refused one is a 429 with Retry-After, and is recorded as an attempt."""
    base, env = serve(FLASHSALE_RATE_PER_USER=SLOW_RATE)
    answers, elapsed = burst([lambda n=n: checkout(base, "greedy", n % 20 + 1) for n in range(40)])
    passed = [a for a in answers if a.status_code != 429]
    assert 1 <= len(passed) <= allowed_at_most(float(SLOW_RATE), elapsed)
    for answer in answers:
        if answer.status_code == 429:
            assert_limited(answer)
    # Another user is not slowed down by the greedy one.
    assert checkout(base, "patient", 1).status_code in (200, 409)
    # Rate-limited checkouts are still checkout attempts: one row each.
    outcomes = drained_outcomes(env)
    assert outcomes["rate_limited"] == len(answers) - len(passed)
    assert sum(outcomes.values()) == len(answers) + 1


def test_purchases_spend_the_same_users_bucket(serve):
    base, env = serve(FLASHSALE_RATE_PER_USER=SLOW_RATE)
    reserved = checkout(base, "buyer", 1)
    assert reserved.status_code == 200
    code = reserved.json()["code"]
    assert_limited(requests.post(f"{base}/purchase", params={"code": code}, timeout=10))
    assert query(env, "SELECT count(*) FROM purchases") == [(0,)]


def test_per_address_limit_ignores_proxy_headers_unless_trusted(serve):
    """Without FLASHSALE_CLIENT_IP_HEADER the address is the TCP peer: a client cannot dodge
    the limit by inventing X-Forwarded-For values."""
    base, _ = serve(FLASHSALE_RATE_PER_IP=SLOW_RATE)
    answers, elapsed = burst(
        [
            lambda n=n: checkout(
                base, f"user-{n}", n % 20 + 1, **{"X-Forwarded-For": f"10.0.0.{n}"}
            )
            for n in range(30)
        ]
    )
    passed = [a for a in answers if a.status_code != 429]
    assert 1 <= len(passed) <= allowed_at_most(float(SLOW_RATE), elapsed)
    for answer in answers:
        if answer.status_code == 429:
            assert_limited(answer)


def test_per_address_limit_behind_a_trusted_proxy(serve):
    """With FLASHSALE_CLIENT_IP_HEADER set (behind an ingress), the right-most address of that
    header is the client: the one the ingress appended. What the client put in front of it is
    not trusted."""
    base, _ = serve(FLASHSALE_RATE_PER_IP=SLOW_RATE, FLASHSALE_CLIENT_IP_HEADER="X-Forwarded-For")
    # Different clients behind the ingress: each has its own bucket.
    for n in range(10):
        answer = checkout(base, f"user-{n}", n + 1, **{"X-Forwarded-For": f"192.0.2.{n}"})
        assert answer.status_code == 200, answer.text
    # One client forging different left-most hops: still one client.
    answers, elapsed = burst(
        [
            lambda n=n: checkout(
                base,
                f"forger-{n}",
                n % 10 + 11,
                **{"X-Forwarded-For": f"203.0.113.{n}, 198.51.100.7"},
            )
            for n in range(20)
        ]
    )
    passed = [a for a in answers if a.status_code != 429]
    assert 1 <= len(passed) <= allowed_at_most(float(SLOW_RATE), elapsed)


def test_limits_are_off_when_configured_off(serve):
    base, _ = serve(FLASHSALE_RATE_PER_USER="0", FLASHSALE_RATE_PER_IP="0")
    answers, _ = burst([lambda n=n: checkout(base, "anyone", n % 20 + 1) for n in range(30)])
    assert not [a for a in answers if a.status_code == 429]


def test_per_address_limit_covers_reads_with_one_budget(serve):
    """FLASHSALE_RATE_PER_IP is requests per second per client address: the reads that do work
    (the status, the item pages) spend from the bucket checkouts spend from, so one address can
    hammer neither. A malformed read is still `invalid_request` first. Other addresses are not
    held back; the probes, the metrics scrape and the cacheable files (the status page, its
    script, images, the OpenAPI document) are never limited."""
    rate = 0.01  # a token per 100 s: nothing refills during the test, however slow the host
    base, _ = serve(FLASHSALE_RATE_PER_IP=str(rate), FLASHSALE_CLIENT_IP_HEADER="X-Forwarded-For")
    hammering = {"X-Forwarded-For": "192.0.2.1"}

    def get(path: str, **headers: str) -> requests.Response:
        return requests.get(f"{base}{path}", headers=headers, timeout=10)

    answers, elapsed = burst([lambda: get("/sale/status", **hammering) for _ in range(20)])
    passed = [a for a in answers if a.status_code != 429]
    assert 1 <= len(passed) <= allowed_at_most(rate, elapsed)
    for answer in answers:
        if answer.status_code == 429:
            assert_limited(answer)
    # The address's budget is spent, for the item pages and checkouts too.
    assert_limited(get("/sale/items", **hammering))
    assert_limited(checkout(base, "reader", 1, **hammering))
    malformed = get("/sale/items?limit=abc", **hammering)
    assert malformed.status_code == 400, malformed.text
    assert malformed.json()["error"]["code"] == "invalid_request"
    # Another address has its own.
    assert get("/sale/status", **{"X-Forwarded-For": "192.0.2.2"}).status_code == 200
    image = get("/sale/items?limit=1", **{"X-Forwarded-For": "192.0.2.3"}).json()["items"][0]
    never_limited = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/status.js"]
    never_limited.append(urlsplit(image["image_url"]).path)
    for path in never_limited:
        for _ in range(3):
            assert get(path, **hammering).status_code == 200, path
