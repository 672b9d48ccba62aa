"""Rate limits in this process: the limiter lets reads through when it cannot reach Redis, and
made-up sales and codes spend the address's bucket before PostgreSQL is asked. The limits of a
running `flashsale serve` are in tests/system/test_rate_limit.py."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from flashsale.config import Settings
from flashsale.domain import Caller
from flashsale.wiring import build_service
from tests.support.service import SLOW_RATE, allowed_at_most


def test_reads_pass_when_the_limiter_cannot_reach_redis(service_env: dict[str, str]) -> None:
    """The per-address limit of reads lives in Redis; with Redis away it lets them through
    rather than failing reads that do not need Redis (the item pages)."""
    env = {**service_env, "REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1
    env.update(FLASHSALE_RATE_PER_IP="0.1", FLASHSALE_REDIS_TIMEOUT="0.5")
    service = build_service(Settings.from_env(env))
    try:
        for _ in range(3):
            # Raises SaleError("rate_limited") if it limited.
            service.admit(Caller(address="192.0.2.1"))
    finally:
        service.database.close()


def test_made_up_sales_and_codes_cannot_load_postgresql_past_the_address_limit(
    service_env: dict[str, str], clock: Any
) -> None:
    """Purchases of codes naming a sale Redis does not hold, and images of made-up sales, spend
    the address's bucket before they ask PostgreSQL: past the bucket, no query at all."""
    import falcon.testing

    from flashsale.sale.service import SaleService
    from flashsale.web.app import create_app
    from flashsale.wiring import build_database, build_inventory

    settings = Settings.from_env({**service_env, "FLASHSALE_RATE_PER_IP": SLOW_RATE})
    service = SaleService(
        settings, build_inventory(settings), build_database(settings), clock=clock
    )
    transactions = []
    cursor = service.database.cursor

    def counted():  # every PostgreSQL transaction of the service goes through here
        transactions.append(1)
        return cursor()

    service.database.cursor = counted  # type: ignore[method-assign]
    client = falcon.testing.TestClient(create_app(service))
    try:
        made_up = "20300101T000000Z-3600"
        started = time.monotonic()
        answers = Counter()
        for n in range(40):
            code = f"{made_up}.{'A' * 20}{n:02d}"
            answers[client.simulate_post("/purchase", params={"code": code}).status_code] += 1
            answers[client.simulate_get(f"/images/{made_up}/{n + 1}.svg").status_code] += 1
        allowed = allowed_at_most(float(SLOW_RATE), time.monotonic() - started)
    finally:
        service.database.close()
    assert answers[429] >= 80 - allowed, answers
    # At most three queries for each request the bucket let through (the purchase: the code,
    # the sale, whether the code was issued; an image: the sale).
    assert len(transactions) <= 3 * allowed, (len(transactions), answers)
