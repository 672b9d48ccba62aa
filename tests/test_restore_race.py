"""A purchase that commits while Redis is being restored: PostgreSQL's word wins everywhere."""

from __future__ import annotations

from flashsale.audit import audit_sale
from flashsale.domain import Purchase, SaleError
from flashsale.engine import SaleService
from flashsale.inventory import keys_for
from flashsale.lifecycle import SaleKeeper


def test_purchase_committed_during_restore_is_adopted_by_redis(
    service: SaleService, keeper: SaleKeeper
) -> None:
    sale, _ = keeper.open_sale()
    keys = keys_for(sale.sale_id)
    first = service.checkout("early", "1")
    keeper.sweep()  # its attempt row is in PostgreSQL

    # The purchase request of "early" is in flight: Redis marked the item sold...
    kind, item, user, at_ms, _ = service.inventory.purchase(
        keys, first.code, now_ms=service.now_ms(), user_rate=0, ip_rate=0, client_ip=""
    )
    assert kind == "sold"
    # ...then Redis loses everything and is restored before the INSERT commits.
    service.inventory.client.flushdb()
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

    client = service.inventory.client
    assert client.hget(keys.items, "1") == f"S {at_ms} early {first.code}"
    assert client.zscore(keys.user("early"), "1") == float("inf")
    assert client.zscore(keys.user("late"), "1") is None
    assert client.hget(keys.meta, "sold") == "1"
    assert [p.code for p in service.database.purchases_of(sale.sale_id)] == [first.code]
    # The purchase of "early" answers the same on a retry, and the two stores agree.
    assert service.purchase(first.code) == in_flight
    keeper.sweep()
    report = audit_sale(
        service.inventory, service.database, sale, now_ms=service.now_ms(), window_ms=5000
    )
    assert report.clean, report.render()
