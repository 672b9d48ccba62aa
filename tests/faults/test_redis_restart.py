"""Redis goes away in the middle of a sale and comes back: with its AOF, or empty."""

from __future__ import annotations

from pathlib import Path

import requests

from flashsale.dev.servers import start_redis
from tests.support.crowd import (
    ITEMS,
    USER_LIMIT,
    Shoppers,
    check_sale,
    sale_id_of,
    sell_out,
    wait_settled,
)
from tests.support.processes import serving


def _unavailable_seen(shoppers: Shoppers) -> bool:
    """Checkouts answer 503 `unavailable`, and so does a purchase of a code handed out before."""
    if not shoppers.tally.seen("/checkout", "unavailable"):
        return False
    code = next(c for *_, outcome, c in shoppers.tally.checkouts if outcome == "ok")
    with requests.Session() as session:
        answer = shoppers.buy(session, code)
    return (
        answer is not None
        and answer.status_code == 503
        and answer.json()["error"]["code"] == "unavailable"
    )


def test_redis_restart_with_aof(fault_env: dict[str, str], tmp_path: Path):
    """While Redis is away every request is answered at once with 503 `unavailable` (checkout
    attempts go straight into PostgreSQL); once it is back the workers reconnect by themselves,
    the AOF brings the sale back as it was, and the sale sells out exactly."""
    with start_redis(tmp_path / "redis", appendonly=True) as store:
        env = {**fault_env, "REDIS_URL": store.url}
        sale_id = sale_id_of(env)
        with serving(env, tmp_path, workers=2) as (base, _):
            shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
            with shoppers.running(timeout=50):
                assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 3, 30)
                store.stop()
                assert shoppers.wait_until(lambda: _unavailable_seen(shoppers), 15), (
                    shoppers.tally.statuses
                )
                sold_before = shoppers.purchased()
                assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
                store.start()
            assert shoppers.sold_out.is_set(), shoppers.tally.statuses
            assert shoppers.purchased() > sold_before  # it sold again after the restart
            sell_out(shoppers, env, sale_id, ITEMS)
            check_sale(env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)


def test_redis_restart_without_persistence(fault_env: dict[str, str], tmp_path: Path):
    """Redis comes back empty: the sweeper's sweep restores the sale from PostgreSQL (sold
    items stay sold, codes handed out but not bought answer `code_expired`, reservations only
    Redis knew go back to stock) and the sale still sells exactly N.

    The clients pause for the outbox to drain before Redis goes: attempts still in an outbox
    that Redis loses without persistence are lost (at most one drain interval's worth); see
    docs/reliability.md. Everything the clients send while Redis is away or restoring is
    answered and recorded."""
    with start_redis(tmp_path / "redis", appendonly=False) as store:
        env = {**fault_env, "REDIS_URL": store.url}
        sale_id = sale_id_of(env)
        with serving(env, tmp_path, workers=2) as (base, _):
            shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
            with shoppers.running(timeout=50):
                assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 3, 30)
                shoppers.pause()
                wait_settled(env, sale_id)
                store.stop()
                shoppers.resume()
                assert shoppers.wait_until(lambda: _unavailable_seen(shoppers), 15), (
                    shoppers.tally.statuses
                )
                sold_before = shoppers.purchased()
                store.restart(wipe=True)
            assert shoppers.sold_out.is_set(), shoppers.tally.statuses
            assert shoppers.purchased() > sold_before
            sell_out(shoppers, env, sale_id, ITEMS)
            check_sale(env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)
