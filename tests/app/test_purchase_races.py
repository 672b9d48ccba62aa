"""A purchase answered 200 stays sold, whatever concurrent retries of its code, a PostgreSQL
that lost its connections, or the sweeper do. Each test forces one interleaving of two real
requests (or a request and the sweeper) on real Redis and PostgreSQL: the hooks only decide
when the second one runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flashsale.config import Settings
from flashsale.domain import SaleError
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.wiring import build_database, build_inventory
from tests.support.service import Clock, assert_sweeps_clean
from tests.support.stores import redis_client, sql


@pytest.fixture
def other(settings: Settings, clock: Clock) -> Iterator[SaleService]:
    """A second worker (or pod): its own Redis client and PostgreSQL pool."""
    service = SaleService(
        settings, build_inventory(settings), build_database(settings), clock=clock
    )
    yield service
    service.database.close()


def before(obj: Any, method: str, first: Callable[[], None]) -> None:
    """Run `first` just before obj.method runs next (once)."""
    original = getattr(obj, method)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        setattr(obj, method, original)
        first()
        return original(*args, **kwargs)

    setattr(obj, method, hooked)


def kill_pooled_connections(service: SaleService) -> None:
    """PostgreSQL restarted, as far as this worker's pool can tell: its idle connections are
    dead (their server processes are terminated; the pool finds out when it uses them)."""
    service.database.ping()  # the pool holds a connection
    for connection in service.database._idle:
        sql(
            service.settings.database_url,
            "SELECT pg_terminate_backend(%s)",
            connection.get_backend_pid(),
        )


def item_state(settings: Settings, sale_id: str, item: str) -> str:
    return redis_client(settings.redis_url).hget(f"fs:{{sale:{sale_id}}}:items", item)


def test_a_retry_that_commits_while_the_seller_reverts_keeps_the_item_sold(
    service: SaleService, other: SaleService, keeper: SaleKeeper, settings: Settings
) -> None:
    """A double-click after PostgreSQL restarted: request A sells the item in Redis and its
    INSERT finds its pooled connection dead; meanwhile request B of the same code sees the sale,
    inserts on a fresh connection, commits and will answer 200. A's revert comes after B's
    commit and before B's confirmation: it must not undo what B answers 200 for."""
    sale, _ = keeper.open_sale()
    code = service.checkout("buyer", "1").code
    kill_pooled_connections(service)

    heard: dict[str, Any] = {}
    b_committed, a_reverted = threading.Event(), threading.Event()

    def b_buys() -> None:
        def confirm_after_a_reverted() -> None:
            b_committed.set()
            a_reverted.wait(10)

        before(other.inventory, "confirm", confirm_after_a_reverted)
        try:
            heard["B"] = other.purchase(code).as_json()
        except SaleError as error:
            heard["B"] = error.code

    revert = service.inventory.revert

    def b_commits_then_a_reverts(*args: Any) -> bool:
        b = threading.Thread(target=b_buys)
        b.start()
        assert b_committed.wait(10), "B did not commit"
        try:
            return revert(*args)
        finally:
            a_reverted.set()
            b.join(10)

    service.inventory.revert = b_commits_then_a_reverts  # type: ignore[method-assign]
    with pytest.raises(SaleError) as a_heard:
        service.purchase(code)
    assert a_heard.value.code == "unavailable"
    assert isinstance(heard["B"], dict), heard  # B answered 200 ...
    # ... so the item stays sold, in Redis as in PostgreSQL, and counts toward the limit.
    assert item_state(settings, sale.sale_id, "1").startswith("S ")
    assert sql(settings.database_url, "SELECT code FROM purchases") == [(code,)]
    bought = redis_client(settings.redis_url).zscore(f"fs:{{sale:{sale.sale_id}}}:user:buyer", "1")
    assert bought == float("inf")
    assert_sweeps_clean(keeper, sale)


def test_the_seller_reverts_when_nobody_else_touched_the_purchase(
    service: SaleService, keeper: SaleKeeper, settings: Settings
) -> None:
    """The same fault without a second request: PostgreSQL surely did not write it, so the
    item is back to its reservation at once, and the same code buys it afterwards."""
    sale, _ = keeper.open_sale()
    code = service.checkout("buyer", "2").code
    kill_pooled_connections(service)
    with pytest.raises(SaleError) as heard:
        service.purchase(code)
    assert heard.value.code == "unavailable"
    assert item_state(settings, sale.sale_id, "2").startswith("R ")
    assert service.purchase(code).item_id == "2"
    assert_sweeps_clean(keeper, sale)


def test_the_sweeper_never_undoes_a_purchase_a_retry_committed(
    service: SaleService, other: SaleService, keeper: SaleKeeper, clock: Clock
) -> None:
    """A purchase left pending (its worker died after selling it in Redis) is settled by the
    sweeper after the grace. A retry of the code that commits just before the sweeper decides
    is confirmed, never undone."""
    sale, _ = keeper.open_sale()
    code = service.checkout("buyer", "3").code
    stranded = service.inventory.purchase(
        sale.sale_id,
        code,
        now_ms=service.now_ms(),
        user_rate=0,
        ip_rate=0,
        client_ip="",
        deadline_ms=2**62,
    )
    assert stranded.kind == "sold"  # ... and its worker died here
    clock.advance(keeper.settings.pending_grace + 1)
    heard = {}
    before(keeper.database, "settle_codes", lambda: heard.update(B=other.purchase(code)))
    assert keeper.sweep().settled == 1
    assert heard["B"].code == code
    assert service.purchase(code) == heard["B"]  # still the same purchase
    assert_sweeps_clean(keeper, sale)


def test_a_retry_after_the_sweeper_voided_the_purchase_is_not_answered_200(
    service: SaleService, other: SaleService, keeper: SaleKeeper, clock: Clock, settings: Settings
) -> None:
    """The other order: the sweeper voids the stranded purchase in PostgreSQL first; a retry
    that reaches PostgreSQL afterwards (though Redis still showed it sold) is refused there,
    answered 410, and the item goes back to stock."""
    sale, _ = keeper.open_sale()
    code = service.checkout("buyer", "4").code
    service.inventory.purchase(
        sale.sale_id,
        code,
        now_ms=service.now_ms(),
        user_rate=0,
        ip_rate=0,
        client_ip="",
        deadline_ms=2**62,
    )
    clock.advance(keeper.settings.pending_grace + 1)
    heard = {}

    def b_buys() -> None:
        try:
            other.purchase(code)
        except SaleError as error:
            heard["B"] = error.code

    before(keeper.inventory, "release", b_buys)  # after the void, before Redis is told
    assert keeper.sweep().voided == 1
    assert heard == {"B": "code_expired"}
    assert sql(settings.database_url, "SELECT count(*) FROM purchases") == [(0,)]
    assert item_state(settings, sale.sale_id, "4") == "-"
    assert other.checkout("someone", "4").item_id == "4"
    assert_sweeps_clean(keeper, sale)
