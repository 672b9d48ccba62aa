"""Sentinel-managed failover mid-sale: the service follows the new primary by itself, answers
503 `unavailable` meanwhile, and the sale still sells exactly its items."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests

from tests.support.processes import flashsale, serving
from tests.support.servers import RedisSentinelServers, start_redis_sentinel


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[RedisSentinelServers]:
    with start_redis_sentinel(tmp_path / "redis") as servers:
        yield servers


def buy(http: requests.Session, base: str, user: str, item: int) -> tuple[int, int]:
    """(checkout status, purchase status or 0)."""
    checkout = http.post(f"{base}/checkout", params={"user_id": user, "id": item}, timeout=10)
    if checkout.status_code != 200:
        return checkout.status_code, 0
    purchase = http.post(f"{base}/purchase", params={"code": checkout.json()["code"]}, timeout=10)
    return 200, purchase.status_code


def test_failover_mid_sale_sells_exactly_the_items(
    sentinel: RedisSentinelServers, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **service_env,
        "REDIS_URL": sentinel.url,
        "FLASHSALE_ITEMS": "40",
        "FLASHSALE_USER_LIMIT": "40",
        "FLASHSALE_REDIS_TIMEOUT": "0.5",
    }
    flashsale("open-sale", env=env)
    statuses: list[int] = []
    with serving(env, tmp_path) as (base, _), requests.Session() as http:
        for item in range(1, 21):
            assert buy(http, base, "before", item) == (200, 200)

        old = sentinel.primary.port
        sentinel.primary.stop()  # a clean SHUTDOWN waits for the replica to catch up
        deadline = time.monotonic() + 60
        while sentinel.primary_port() == old:
            assert time.monotonic() < deadline, "the sentinel did not fail over"
            statuses.append(http.get(f"{base}/sale/status", timeout=10).status_code)
            time.sleep(0.2)
        assert sentinel.primary_port() == sentinel.replica.port

        item, bought = 21, 20
        while item <= 40 and time.monotonic() < deadline:
            checkout, purchase = buy(http, base, "after", item)
            if purchase == 200:
                bought, item = bought + 1, item + 1
            else:
                assert 503 in (checkout, purchase), (checkout, purchase)
                time.sleep(0.2)
        status = http.get(f"{base}/sale/status", timeout=10).json()

    # While the primary was away, answers were 503 `unavailable` or figures, never a hang.
    assert set(statuses) <= {200, 503}
    assert bought == 40 and status["items_sold"] == 40 and status["remaining_items"] == 0
    with psycopg2.connect(env["DATABASE_URL"]) as db, db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT item_id) FROM purchases")
        assert cur.fetchone() == (40, 40)
    flashsale("sweep", env=env)
    audit = flashsale("audit", "--sale", status["sale_id"], env=env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
