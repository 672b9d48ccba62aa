"""A purchase that commits while Redis is being restored: PostgreSQL's word wins everywhere."""

from __future__ import annotations

import pytest

from flashsale.domain import Purchase, SaleError
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory.keys import keys_for
from tests.support.service import assert_sweeps_clean
from tests.support.stores import no_deadline, redis_client, sql


def test_purchase_committed_during_restore_is_adopted_by_redis(
    service: SaleService, keeper: SaleKeeper
) -> None:
    sale, _ = keeper.open_sale()
    keys = keys_for(sale.sale_id)
    first = service.checkout("early", "1")
    keeper.sweep()  # its attempt row is in PostgreSQL

    # The purchase request of "early" is in flight: Redis marked the item sold...
    kind, item, user, at_ms, *_ = service.inventory.purchase(
        sale.sale_id,
        first.code,
        now_ms=service.now_ms(),
        user_rate=0,
        ip_rate=0,
        client_ip="",
        deadline_ms=no_deadline(),
    )
    assert kind == "sold"
    # ...then Redis loses everything and is restored before the INSERT commits.
    client = redis_client(service.settings.redis_url)
    client.flushdb()
    assert keeper.restore() == [sale.sale_id]
    in_flight = Purchase(sale.sale_id, item, user, first.code, int(at_ms))
    assert service.database.save_purchase(in_flight) == in_flight  # "early" hears 200

    # Redis thinks item 1 is free: "late" reserves it, but cannot buy what PostgreSQL sold.
    second = service.checkout("late", "1")
    try:
        service.purchase(second.code)
    except SaleError as error:
        assert error.code == "code_expired"
    else:
        raise AssertionError("the item was sold twice")

    assert client.hget(keys.items, "1") == f"S {at_ms} early {first.code}"
    assert client.zscore(keys.user("early"), "1") == float("inf")
    assert client.zscore(keys.user("late"), "1") is None
    assert client.hget(keys.meta, "sold") == "1"
    assert [p.code for p in service.database.purchases_of(sale.sale_id)] == [first.code]
    # The purchase of "early" answers the same on a retry, and the two stores agree.
    assert service.purchase(first.code) == in_flight
    assert_sweeps_clean(keeper, sale)


def test_a_sale_lost_by_redis_answers_unavailable_until_restored(
    service: SaleService, keeper: SaleKeeper, settings
) -> None:
    sale, _ = keeper.open_sale()
    held = service.checkout("u1", "1")  # this worker saw the sale open
    keeper.sweep()  # the attempt is in PostgreSQL; then Redis loses everything
    redis_client(service.settings.redis_url).flushdb()

    for user in ("u2", "u3"):  # a checkout must not go through while the sale is lost
        with pytest.raises(SaleError) as lost:
            service.checkout(user, "2")
        assert (lost.value.code, lost.value.status) == ("unavailable", 503)
    # A worker that never saw the sale open cannot tell: for it, no sale is open.
    fresh = SaleService(settings, service.inventory, service.database, clock=service.clock)
    with pytest.raises(SaleError) as unseen:
        fresh.checkout("u4", "2")
    assert unseen.value.code == "no_active_sale"

    assert keeper.restore() == [sale.sale_id]
    assert service.checkout("u2", "2").item_id == "2"
    keeper.sweep()
    rows = service.database.issued_claims(sale.sale_id)
    assert {user for _, user in rows.values()} == {"u1", "u2"}
    # u1's reservation lived only in Redis: its item is free again, its code expired.
    with pytest.raises(SaleError) as expired:
        service.purchase(held.code)
    assert expired.value.code == "code_expired"
    attempts = sql(
        settings.database_url,
        "SELECT outcome, sale_id FROM checkout_attempts WHERE user_id IN ('u2', 'u3')"
        " ORDER BY created_at, id",
    )
    # Filed under the sale, which was open all along: Redis had lost it, not closed it.
    assert attempts == [(outcome, sale.sale_id) for outcome in ("unavailable", "unavailable", "ok")]
