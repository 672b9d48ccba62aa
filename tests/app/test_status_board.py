"""The status page's reads beyond the contract: `GET /sale/history` (the burn-down since the sale
opened) and `GET /sale/stock` (each listed item available, reserved or sold), over the real app
on a fake clock, on a sale under one hash tag, over three shards of one Redis and over three
shards of a Redis Cluster (the harness of tests/support/api.py, whose every response is checked
against /openapi.json). How a period is cut into buckets is in tests/unit/test_status_board.py."""

from __future__ import annotations

import time

import pytest

from flashsale.domain import rfc3339
from flashsale.sale import board
from tests.support.api import LAYOUTS, Harness, Stack, assert_error, on_layout, retry_after
from tests.support.service import Clock
from tests.support.stores import flush_redis, no_deadline


@pytest.fixture(params=LAYOUTS)
def layout_env(request: pytest.FixtureRequest, service_env: dict[str, str]) -> dict[str, str]:
    """As the contract's tests: each test runs on one tag, three shards, and a Cluster."""
    return on_layout(request, service_env)


# A period of 360 s has buckets of one second.
PERIOD = 360


@pytest.fixture
def short(harness: Harness, clock: Clock) -> Stack:
    """The default app with a 360 s period, its sale open a quarter second after it started
    (in the real period of now: its keys in Redis expire a day after the sale ends)."""
    clock.now = (time.time() // PERIOD) * PERIOD + 0.25
    stack = harness.stack(FLASHSALE_PERIOD=str(PERIOD))
    stack.open()
    return stack


def history(stack: Stack) -> dict:
    result = stack.api.get("/sale/history")
    assert result.status_code == 200, result.text
    assert result.headers["cache-control"] == "public, max-age=1"
    return result.json


def test_history_counts_the_sold_items_since_the_opening(
    harness: Harness, short: Stack, clock: Clock
) -> None:
    api, sale = short.api, short.api.sale
    first = history(short)
    assert first == {
        "sale_id": sale.sale_id,
        "starts_at": rfc3339(sale.starts_ms),
        "ends_at": rfc3339(sale.ends_ms),
        "total_items": 50,
        "bucket_seconds": 1,
        "sold": [0],
    }
    api.buy("ann", 1)  # bucket 0
    clock.advance(2.25)  # +2.5 s: bucket 2
    api.buy("bob", 2)
    api.buy("cy", 3)
    api.reserve("dee", 4)  # reserved, not sold: not in the history
    clock.advance(2.75)  # +5.25 s: bucket 5
    api.buy("ann", 5)
    clock.advance(1)  # +6.25 s: bucket 6, the current one
    assert history(short)["sold"] == [1, 1, 3, 3, 3, 4, 4]
    # The sale's own counter says the same as the last bucket.
    assert api.get("/sale/status").json["items_sold"] == 4
    harness.assert_attempts_recorded(short.keeper)


def test_history_is_kept_for_a_second_by_a_worker(short: Stack, clock: Clock) -> None:
    """Within one bucket a worker answers what it read for a second: Redis sees one read a
    second per worker, however many pages poll. A new bucket is read at once."""
    assert history(short)["sold"] == [0]
    short.api.buy("ann", 1)
    assert history(short)["sold"] == [0]  # the same second, the same bucket: kept
    time.sleep(board.HISTORY_FRESH_FOR + 0.1)
    assert history(short)["sold"] == [1]
    short.api.buy("bob", 2)
    clock.advance(1)
    assert history(short)["sold"] == [2, 2]  # a new bucket: read again


def test_history_takes_back_a_purchase_undone(short: Stack, clock: Clock) -> None:
    """A purchase the request that sold it reverts (PostgreSQL surely did not record it), and
    one the sweeper voids (pending past the grace, not in PostgreSQL), leave the history at the
    bucket they were sold in."""
    service, sale_id = short.service, short.api.sale.sale_id
    inventory = service.inventory
    sold_at = {}
    for item, user in (("1", "ann"), ("2", "bob"), ("3", "cy")):
        code = service.checkout(user, item).code
        answer = inventory.purchase(
            sale_id,
            code,
            now_ms=service.now_ms(),
            user_rate=0,
            ip_rate=0,
            client_ip="",
            deadline_ms=no_deadline(),
        )
        assert answer.kind == "sold"
        sold_at[code] = answer.at_ms
        clock.advance(1)
    assert inventory.sold_history(sale_id) == {0: 1, 1: 1, 2: 1}
    first, second, _ = sold_at
    assert inventory.revert(sale_id, first, sold_at[first])
    assert inventory.release(sale_id, second)
    assert inventory.sold_history(sale_id) == {0: 0, 1: 0, 2: 1}
    assert history(short)["sold"] == [0, 0, 1, 1]
    assert short.api.get("/sale/status").json["items_sold"] == 1


def test_history_is_rebuilt_with_a_sale_redis_lost(
    harness: Harness, short: Stack, clock: Clock
) -> None:
    """Redis loses everything mid-sale: the sweep loads the sale again from PostgreSQL, its
    sold history with it, each purchase in the bucket it was made in."""
    short.api.buy("ann", 1)
    clock.advance(3)
    short.api.buy("bob", 2)
    short.api.buy("cy", 3)
    clock.advance(1)
    before = history(short)["sold"]
    assert before == [1, 1, 1, 3, 3]
    short.keeper.sweep()  # what was answered is in PostgreSQL
    flush_redis(short.settings)
    time.sleep(board.HISTORY_FRESH_FOR)  # what the worker kept is gone
    # Until it is restored the history answers as the status does.
    lost = short.api.get("/sale/status").json
    assert short.api.get("/sale/history").json == lost
    short.keeper.sweep()
    clock.advance(1)
    assert history(short)["sold"] == [*before, 3]
    short.api.buy("dee", 4)
    clock.advance(1)
    assert history(short)["sold"] == [*before, 4, 4]


def test_history_without_an_open_sale(harness: Harness, clock: Clock) -> None:
    stack = harness.stack()
    result = stack.api.get("/sale/history")
    assert_error(result, 503, "no_active_sale")
    assert retry_after(result) >= 1
    stack.open()
    clock.now = stack.api.sale.ends_at
    assert_error(stack.api.get("/sale/history"), 503, "no_active_sale")


def stock(stack: Stack, **params: str) -> dict:
    result = stack.api.get("/sale/stock", list(params.items()))
    assert result.status_code == 200, result.text
    return result.json


def test_stock_tells_each_listed_item_available_reserved_or_sold(
    harness: Harness, stack: Stack, clock: Clock
) -> None:
    api = stack.api
    api.buy("ann", 2)
    api.buy("bob", 4)
    api.reserve("cy", 3)
    clock.advance(30)
    api.reserve("dee", 7)
    page = stock(stack, limit="8")
    assert page["sale_id"] == api.sale.sale_id
    states = {item["id"]: item["state"] for item in page["items"]}
    assert states == {
        "1": "available",
        "2": "sold",
        "3": "reserved",
        "4": "sold",
        "5": "available",
        "6": "available",
        "7": "reserved",
        "8": "available",
    }
    clock.advance(31)  # cy's reservation expired (the sweeper has not run): available again
    assert stock(stack, limit="8")["items"][2] == {"id": "3", "state": "available"}
    harness.assert_attempts_recorded(stack.keeper)  # the sweep returns it: the same
    assert stock(stack, limit="8")["items"][2] == {"id": "3", "state": "available"}


def test_stock_pages_are_the_item_pages(stack: Stack) -> None:
    """The same limit, cursor and order as /sale/items: a page of each, side by side."""
    cursor: list[tuple[str, str]] = []
    seen = []
    while True:
        pairs = [("limit", "7"), *cursor]
        items = stack.api.get("/sale/items", pairs).json
        states = stack.api.get("/sale/stock", pairs).json
        assert [i["id"] for i in states["items"]] == [i["id"] for i in items["items"]]
        assert states["next_cursor"] == items["next_cursor"]
        seen += [i["id"] for i in states["items"]]
        if states["next_cursor"] is None:
            break
        cursor = [("cursor", states["next_cursor"])]
    assert seen == [str(n) for n in range(1, 51)]
    assert len(stock(stack)["items"]) == 50  # the default page (100) holds them all


def test_stock_refusals(harness: Harness, clock: Clock) -> None:
    stack = harness.stack()
    result = stack.api.get("/sale/stock")
    assert_error(result, 503, "no_active_sale")
    assert retry_after(result) >= 1
    stack.open()
    for pairs in ([("limit", "0")], [("limit", "1001")], [("limit", "x")], [("cursor", "nope")]):
        assert_error(stack.api.get("/sale/stock", pairs), 400, "invalid_request")
    assert_error(
        stack.api.get("/sale/stock", [("cursor", "a"), ("cursor", "b")]), 400, "invalid_request"
    )
    # Redis lost the sale: PostgreSQL still lists its items, but only Redis knows their state.
    flush_redis(stack.settings)
    assert stack.api.get("/sale/items").status_code == 200
    assert_error(stack.api.get("/sale/stock"), 503, "unavailable")
    stack.keeper.sweep()
    assert stock(stack)["items"][0] == {"id": "1", "state": "available"}


def test_history_and_stock_spend_the_address_budget(harness: Harness) -> None:
    """Like the status and the item pages, both spend a token of the client address's bucket
    (FLASHSALE_RATE_PER_IP) after their parameters are checked."""
    stack = harness.stack(FLASHSALE_RATE_PER_IP="0.01")  # a token per 100 s
    stack.open()
    assert stack.api.get("/sale/history").status_code == 200
    for path in ("/sale/history", "/sale/stock", "/sale/status"):
        result = stack.api.get(path)
        assert_error(result, 429, "rate_limited")
        assert retry_after(result) >= 1
    assert_error(stack.api.get("/sale/stock", [("limit", "0")]), 400, "invalid_request")
    other = harness.stack(FLASHSALE_RATE_PER_IP="0.01")
    assert other.api.get("/sale/stock").status_code == 429  # the same address, another worker
