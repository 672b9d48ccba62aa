"""One checkout request is one row, with the outcome the client was answered, also when Redis
decided it but its answer never reached the service (the service answers `unavailable`), and
also when Redis runs it only after the service gave up. No reservation is left that nobody was
told of."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from flashsale.config import Settings
from flashsale.domain import SaleError
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_database, build_inventory
from tests.support.service import Clock, assert_sweeps_clean
from tests.support.stores import AnswerTrap, redis_client, sql


@pytest.fixture
def trap(settings: Settings) -> Iterator[AnswerTrap]:
    """Redis behind a proxy that, once armed, lets a script call through and loses its answer."""
    url = urlsplit(settings.redis_url)
    trap = AnswerTrap((url.hostname, url.port), lambda data, _: b"EVALSHA" in data)
    build_inventory(settings).load_scripts()  # the trapped call is the script, not a NOSCRIPT
    yield trap
    trap.close()


@pytest.fixture
def trapped(settings: Settings, trap: AnswerTrap, clock: Clock) -> Iterator[SaleService]:
    """A worker that reaches Redis through the trap, with a short Redis timeout."""
    tight = dataclasses.replace(settings, redis_url=trap.url(settings.redis_url), redis_timeout=0.3)
    service = SaleService(tight, build_inventory(tight), build_database(tight), clock=clock)
    yield service
    service.database.close()


def rows_of(settings: Settings, user: str) -> list[tuple]:
    return sql(
        settings.database_url,
        "SELECT outcome, code FROM checkout_attempts WHERE user_id = %s",
        user,
    )


def assert_nothing_held(settings: Settings, sale_id: str, item: str, user: str) -> None:
    client = redis_client(settings.redis_url)
    keys = keys_for(sale_id)
    assert client.hget(keys.items, item) == "-"
    assert client.zcard(keys.user(user)) == 0
    assert client.zcard(keys.reserved) == 0


def test_redis_decided_but_its_answer_was_lost_and_the_drain_comes_second(
    trapped: SaleService, trap: AnswerTrap, keeper: SaleKeeper, settings: Settings
) -> None:
    sale, _ = keeper.open_sale()
    trap.armed.set()
    with pytest.raises(SaleError) as heard:
        trapped.checkout("lost", "1")
    assert trap.fired.is_set() and heard.value.code == "unavailable"
    # Redis reserved the item and recorded `ok` in its outbox; the service wrote `unavailable`.
    assert redis_client(settings.redis_url).hget(keys_for(sale.sale_id).items, "1").startswith("R ")
    keeper.sweep()  # the drain meets the service's row: it wins, and the reservation goes
    assert rows_of(settings, "lost") == [("unavailable", None)]
    assert_nothing_held(settings, sale.sale_id, "1", "lost")
    assert_sweeps_clean(keeper, sale)


def test_redis_decided_but_its_answer_was_lost_and_the_drain_comes_first(
    trapped: SaleService, trap: AnswerTrap, keeper: SaleKeeper, settings: Settings
) -> None:
    sale, _ = keeper.open_sale()
    insert = trapped.database.insert_attempt

    def drain_first(row):  # the outbox's `ok` row lands before the service writes its own
        keeper.sweep()
        assert rows_of(settings, "lost") == [("ok", row_code())]
        return insert(row)

    def row_code() -> str:
        return rows_of(settings, "lost")[0][1]

    trapped.database.insert_attempt = drain_first  # type: ignore[method-assign]
    trap.armed.set()
    with pytest.raises(SaleError) as heard:
        trapped.checkout("lost", "1")
    assert heard.value.code == "unavailable"
    assert rows_of(settings, "lost") == [("unavailable", None)]
    assert_nothing_held(settings, sale.sale_id, "1", "lost")
    assert_sweeps_clean(keeper, sale)


def test_a_code_told_again_is_not_released(
    trapped: SaleService, trap: AnswerTrap, service: SaleService, keeper: SaleKeeper, settings
) -> None:
    """The user retried at once (through another worker) and heard the same code: that
    reservation was told after all, and stays."""
    sale, _ = keeper.open_sale()
    trap.armed.set()
    with pytest.raises(SaleError):
        trapped.checkout("quick", "2")
    again = service.checkout("quick", "2")  # the same user, the same item: the same code
    keeper.sweep()
    assert sorted(rows_of(settings, "quick")) == [("ok", again.code), ("unavailable", None)]
    client = redis_client(settings.redis_url)
    assert client.hget(keys_for(sale.sale_id).items, "2").endswith(again.code)
    assert service.purchase(again.code).item_id == "2"
    assert_sweeps_clean(keeper, sale)


@pytest.mark.parametrize("drain", ["second", "first"])
def test_a_refusal_recorded_by_redis_and_by_the_service_is_one_row(
    drain: str, trapped: SaleService, trap: AnswerTrap, keeper: SaleKeeper, settings: Settings
) -> None:
    """A refusal's record carries no deadline (its outcome is fixed): Redis recorded it, its
    answer was lost, the service wrote the same row straight into PostgreSQL; whichever lands
    first, the other finds it."""
    keeper.open_sale()
    if drain == "first":
        insert = trapped.database.insert_attempt

        def drain_first(row):
            keeper.sweep()
            assert rows_of(settings, "refused") == [("invalid_request", None)]
            return insert(row)

        trapped.database.insert_attempt = drain_first  # type: ignore[method-assign]
    trap.armed.set()
    with pytest.raises(SaleError) as heard:
        trapped.checkout("refused", "no item!")
    assert trap.fired.is_set() and heard.value.code == "invalid_request"
    keeper.sweep()
    assert rows_of(settings, "refused") == [("invalid_request", None)]


def test_a_script_redis_runs_after_the_deadline_does_nothing(
    service: SaleService, keeper: SaleKeeper, settings: Settings
) -> None:
    """What a frozen Redis does with the calls queued while it was stopped: it runs them when
    it resumes, long after their callers answered `unavailable`. They decide nothing."""
    sale, _ = keeper.open_sale()
    past = int(time.time() * 1000) - 1
    late = service.inventory.checkout(
        sale.sale_id,
        "late",
        "3",
        now_ms=service.now_ms(),
        ttl_ms=60_000,
        fresh_code=f"{sale.sale_id}.{'x' * 22}",
        user_rate=0,
        ip_rate=0,
        client_ip="",
        attempt_key="late-1",
        deadline_ms=past,
    )
    assert late.outcome == "late"
    bought = service.inventory.purchase(
        sale.sale_id, "nothing", now_ms=0, user_rate=0, ip_rate=0, client_ip="", deadline_ms=past
    )
    assert bought.kind == "late"
    assert service.inventory.read_outbox(sale.sale_id) == []
    assert_nothing_held(settings, sale.sale_id, "3", "late")
