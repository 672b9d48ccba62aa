"""PostgreSQL goes away for a while in the middle of a sale and comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
import requests

from flashsale.config import Settings
from flashsale.dev.servers import start_postgres
from flashsale.domain import SaleError
from flashsale.stores.inventory.keys import keys_for
from flashsale.stores.migrate import migrate
from flashsale.wiring import build_service
from tests.support.crowd import ITEMS, USER_LIMIT, Shoppers, check_sale, sale_id_of, sell_out
from tests.support.processes import serving

# The contract's scenario is ~30 s; 12 s shows the same behaviour and keeps CI short.
AWAY_SECONDS = 12


def test_postgres_away_checkouts_continue_purchases_wait(fault_env: dict[str, str], tmp_path: Path):
    """While PostgreSQL is away checkouts keep working (decided in Redis; their attempts wait
    in the outbox), purchases answer 503 `unavailable` and are undone in Redis, so no 200 is
    ever sent for a purchase PostgreSQL does not hold. When it is back, the outbox drains,
    purchases succeed again and the sale sells out exactly."""
    with start_postgres(tmp_path / "postgres") as store:
        migrate(store.url)
        env = {**fault_env, "DATABASE_URL": store.url}
        sale_id = sale_id_of(env)
        outbox = keys_for(sale_id).outbox
        watcher = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=5)
        with serving(env, tmp_path, workers=2) as (base, _):
            shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
            with shoppers.running(timeout=50):
                assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 4, 30)
                store.stop()
                away_since = time.monotonic()
                time.sleep(1)  # answers to purchases committed just before the stop arrive
                ok_before = shoppers.tally.seen("/checkout", "ok")
                sold_before = shoppers.purchased()
                backlog = 0
                while time.monotonic() - away_since < AWAY_SECONDS:
                    backlog = max(backlog, watcher.xlen(outbox))
                    time.sleep(0.2)
                # Checkouts went on; their attempts queued up in Redis; nothing was bought.
                assert shoppers.tally.seen("/checkout", "ok") > ok_before
                assert backlog > 0
                assert shoppers.tally.seen("/purchase", "unavailable") > 0
                assert shoppers.purchased() == sold_before
                assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
                store.start()
                back_at = time.monotonic()
            print("after PostgreSQL came back:", shoppers.tally.since(back_at))
            assert shoppers.sold_out.is_set(), shoppers.tally.statuses
            sell_out(shoppers, env, sale_id, ITEMS)
            check_sale(env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)
        watcher.close()


def test_a_purchase_postgresql_never_got_is_undone_at_once(
    fault_env: dict[str, str], tmp_path: Path
) -> None:
    """PostgreSQL stops while the pool holds a connection to it. The purchase's INSERT finds
    that connection dead before any COMMIT was sent, so nothing can have been written: Redis
    undoes the sale at once instead of leaving it pending for the grace period (an item held
    that long for nothing could go unsold at the end of a sale)."""
    with start_postgres(tmp_path / "postgres") as store:
        migrate(store.url)
        env = {**fault_env, "DATABASE_URL": store.url}
        keys = keys_for(sale_id_of(env))
        service = build_service(Settings.from_env(env))
        watcher = redis.Redis.from_url(env["REDIS_URL"], socket_timeout=5)
        try:
            bought = service.checkout("buyer", "1")
            service.purchase(bought.code)  # the pool now holds a live connection
            held = service.checkout("buyer", "2")
            store.stop()
            with pytest.raises(SaleError) as answer:
                service.purchase(held.code)
            assert answer.value.code == "unavailable"
            assert watcher.zcard(keys.pending) == 0, "left pending, not undone"
            assert service.status()["items_sold"] == 1
            # Back to the reservation it was: the buyer can try again once PostgreSQL is back.
            assert service.checkout("buyer", "2").code == held.code
        finally:
            service.database.close()
            watcher.close()


def test_double_clicked_purchases_across_a_postgresql_restart(
    fault_env: dict[str, str], tmp_path: Path
):
    """Every purchase is sent three times at once while PostgreSQL restarts under the sale:
    the pooled connections die with it, so some clicks fail on a dead connection while others
    commit on a fresh one. A purchase any click was answered 200 for stays sold (in Redis too),
    no user ends above the limit, and the audit is clean."""
    with start_postgres(tmp_path / "postgres") as store:
        migrate(store.url)
        env = {**fault_env, "DATABASE_URL": store.url}
        sale_id = sale_id_of(env)
        with serving(env, tmp_path, workers=2) as (base, _):
            shoppers = Shoppers(base, items=ITEMS, users=60, threads=6, clicks=3)
            with shoppers.running(timeout=60):
                for share in (4, 2):
                    assert shoppers.wait_until(
                        lambda s=share: shoppers.purchased() >= ITEMS // s, 30
                    )
                    store.stop()
                    store.start()
            sell_out(shoppers, env, sale_id, ITEMS)
            check_sale(env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)
            assert shoppers.tally.seen("/purchase", "ok") > ITEMS  # the clicks did race
