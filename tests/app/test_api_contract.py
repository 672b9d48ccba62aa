"""The contract's HTTP API, row by row of its error table, over the real app in this process.

Everything runs on a fake clock against the real Redis and PostgreSQL. Every response is also
checked against /openapi.json (tests/support/openapi.py), and every checkout request sent is looked
for afterwards as a row of `checkout_attempts`, by counting.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from urllib.parse import urlsplit

import falcon
import falcon.testing
import pytest

from flashsale import domain
from flashsale.dev.servers import free_port
from tests.support.api import (
    LAYOUTS,
    Harness,
    Pairs,
    Stack,
    assert_error,
    on_layout,
    parse_time,
    retry_after,
)
from tests.support.metrics import counted, metric_samples
from tests.support.service import Clock
from tests.support.stores import attempt_outcomes, flush_redis, sql


@pytest.fixture(params=LAYOUTS)
def layout_env(request: pytest.FixtureRequest, service_env: dict[str, str]) -> dict[str, str]:
    """Every test of the contract runs on a sale kept under one hash tag, on a sale over three
    shards of one Redis, and on a sale over three shards of a three-primary Redis Cluster."""
    return on_layout(request, service_env)


# --- 400 invalid_request -----------------------------------------------------------------------

BAD_CHECKOUTS: dict[str, Pairs] = {
    "no parameters": [],
    "user_id missing": [("id", "1")],
    "id missing": [("user_id", "u1")],
    "user_id empty": [("user_id", ""), ("id", "1")],
    "id empty": [("user_id", "u1"), ("id", "")],
    "user_id 65 characters": [("user_id", "u" * 65), ("id", "1")],
    "id 65 characters": [("user_id", "u1"), ("id", "1" * 65)],
    "user_id with a space": [("user_id", "u 1"), ("id", "1")],
    "user_id with a slash": [("user_id", "u/1"), ("id", "1")],
    "user_id not ascii": [("user_id", "\u00fcser"), ("id", "1")],
    "user_id with NUL": [("user_id", "u\x001"), ("id", "1")],
    "id with a quote": [("user_id", "u1"), ("id", "1'")],
    "user_id repeated": [("user_id", "u1"), ("user_id", "u2"), ("id", "1")],
    "id repeated": [("user_id", "u1"), ("id", "1"), ("id", "2")],
    "user_id 300 characters": [("user_id", "x" * 300), ("id", "1")],
}


def test_malformed_checkouts_are_400_and_recorded(harness: Harness, stack: Stack) -> None:
    for name, pairs in BAD_CHECKOUTS.items():
        result = stack.api.checkout_raw(pairs)
        assert_error(result, 400, "invalid_request")
        assert "retry-after" not in result.headers, name
    # The longest valid values pass: the bounds are where the contract puts them.
    assert stack.api.checkout("u" * 64, 1).status_code == 200
    assert stack.api.checkout("A-z_0.9", 2).status_code == 200
    harness.assert_attempts_recorded(stack.keeper)
    # Spelled out: a missing parameter is NULL, not an empty string.
    url = harness.env["DATABASE_URL"]
    assert sql(
        url,
        "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request'"
        " AND user_id IS NULL AND item_id IS NULL",
    ) == [(1,)]
    assert sql(
        url,
        "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request'"
        " AND user_id IS NULL AND item_id = '1'",
    ) == [(1,)]
    assert sql(
        url,
        "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request'"
        " AND user_id = '' AND item_id = '1'",
    ) == [(1,)]
    assert sql(
        url,
        "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request' AND sale_id = %s",
        stack.api.sale.sale_id,
    ) == [(len(BAD_CHECKOUTS),)]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("code", "")],
        [("code", "has space")],
        [("code", "x" * 129)],
        [("code", "a.b"), ("code", "c.d")],
    ],
    ids=["missing", "empty", "bad charset", "too long", "repeated"],
)
def test_malformed_purchases_are_400(stack: Stack, pairs: Pairs) -> None:
    result = stack.api.call("POST", "/purchase", pairs)
    assert_error(result, 400, "invalid_request")


@pytest.mark.parametrize(
    "pairs",
    [
        [("limit", "0")],
        [("limit", "1001")],
        [("limit", "ten")],
        [("limit", "-1")],
        [("limit", "5"), ("limit", "6")],
        [("cursor", "someone-else:3")],
        [("cursor", "a"), ("cursor", "b")],
    ],
    ids=["zero", "1001", "word", "negative", "repeated", "foreign cursor", "repeated cursor"],
)
def test_malformed_item_pages_are_400(stack: Stack, pairs: Pairs) -> None:
    assert_error(stack.api.get("/sale/items", pairs), 400, "invalid_request")


# --- 429 rate_limited --------------------------------------------------------------------------


def test_rate_limited_per_user_with_retry_after(harness: Harness, clock: Clock) -> None:
    stack = harness.stack(FLASHSALE_RATE_PER_USER="1")
    assert stack.settings.rate_per_user == 1
    api = stack.api
    # Before any sale: the first request hears no_active_sale, the second is limited first.
    assert_error(api.checkout("eager", 1), 503, "no_active_sale")
    limited = api.checkout("eager", 1)
    assert_error(limited, 429, "rate_limited")
    assert retry_after(limited) == 1
    stack.open()
    clock.advance(1)
    first = api.reserve("u1", 1)
    limited = api.checkout("u1", 2)
    assert_error(limited, 429, "rate_limited")
    assert retry_after(limited) == 1
    # invalid_request comes before rate_limited: a malformed request never spends a token.
    assert_error(api.checkout_raw([("user_id", "u1")]), 400, "invalid_request")
    # Per user: someone else is not slowed down.
    assert api.checkout("u2", 3).status_code == 200
    # A purchase spends the same user's tokens.
    assert_error(api.purchase(first["code"]), 429, "rate_limited")
    clock.advance(1)
    assert api.purchase(first["code"]).status_code == 200
    clock.advance(1)
    assert api.checkout("u1", 2).status_code == 200
    harness.assert_attempts_recorded(stack.keeper)
    url = harness.env["DATABASE_URL"]
    assert sql(
        url,
        "SELECT count(*) FROM checkout_attempts WHERE outcome = 'rate_limited'"
        " AND user_id = 'u1' AND item_id = '2' AND sale_id IS NOT NULL",
    ) == [(1,)]


# --- 503 no_active_sale ------------------------------------------------------------------------


def test_no_active_sale_before_any_sale_opened(harness: Harness) -> None:
    stack = harness.stack()
    for result in (
        stack.api.checkout("u1", 1),
        stack.api.checkout("u1", "no-such-item"),
        stack.api.get("/sale/status"),
        stack.api.get("/sale/items"),
    ):
        assert_error(result, 503, "no_active_sale")
        assert retry_after(result) >= 1
    harness.assert_attempts_recorded(stack.keeper)
    assert sql(
        harness.env["DATABASE_URL"],
        "SELECT count(*) FROM checkout_attempts WHERE sale_id IS NULL"
        " AND outcome = 'no_active_sale'",
    ) == [(2,)]


def test_sale_ends_with_its_period(harness: Harness, stack: Stack, clock: Clock) -> None:
    sale = stack.api.sale
    clock.now = sale.ends_at - 10
    held = stack.api.reserve("u1", 1)
    bought_code, bought = stack.api.buy("u2", 2)
    # A checkout close to the end reserves until the end, not past it.
    assert parse_time(held["expires_at"]) == sale.ends_at
    clock.now = sale.ends_at
    for result in (stack.api.checkout("u3", 3), stack.api.checkout("u3", "no-such-item")):
        assert_error(result, 503, "no_active_sale")
        # Nothing is open until the next period's sale is: the client is told to come back.
        assert retry_after(result) >= 1
    assert_error(stack.api.get("/sale/status"), 503, "no_active_sale")
    # The code handed out before the end can no longer be used...
    assert_error(stack.api.purchase(held["code"]), 410, "code_expired")
    # ...but a purchase made in time is still confirmed by a retry.
    again = stack.api.purchase(bought_code)
    assert again.status_code == 200 and again.json == bought
    harness.assert_attempts_recorded(stack.keeper)


# --- 404 item_not_found, 409 sold_out and the precedence between them ---------------------------


def test_unknown_items(harness: Harness, stack: Stack) -> None:
    for item in ("0", "51", "999999", "abc", "1.0", "-1"):
        assert_error(stack.api.checkout("u1", item), 404, "item_not_found")
    assert stack.api.checkout("u1", 50).status_code == 200
    harness.assert_attempts_recorded(stack.keeper)


def test_sold_out_and_its_precedence(harness: Harness) -> None:
    stack = harness.stack(FLASHSALE_ITEMS="4", FLASHSALE_USER_LIMIT="2")
    stack.open()
    api = stack.api
    codes = [api.reserve(user, item)["code"] for user, item in (("a", 1), ("a", 2), ("b", 3))]
    api.reserve("b", 4)
    # Everything is reserved, nothing sold yet: reserved is not sold out.
    assert_error(api.checkout("c", 1), 409, "item_unavailable")
    api.buy("b", 4)  # the same code again, bought
    for code in codes:
        assert api.purchase(code).status_code == 200
    status = api.get("/sale/status").json
    assert status["items_sold"] == status["total_items"] == 4 and status["remaining_items"] == 0
    # Every item sold: sold_out wins over the limit (a and b hold 2), over item_unavailable,
    # and over holding the very item asked for.
    for user, item in (("a", 1), ("a", 3), ("b", 4), ("c", 2), ("c", 4)):
        assert_error(api.checkout(user, item), 409, "sold_out")
    # An unknown item and a malformed request are told so, sold out or not.
    assert_error(api.checkout("a", 99), 404, "item_not_found")
    assert_error(api.checkout_raw([("user_id", "a")]), 400, "invalid_request")
    harness.assert_attempts_recorded(stack.keeper)


# --- 403 user_limit_reached --------------------------------------------------------------------


def test_user_limit_counts_open_reservations(harness: Harness, stack: Stack, clock: Clock) -> None:
    api = stack.api  # limit 3, TTL 60 s
    first = api.reserve("u1", 1)
    api.reserve("u1", 2)
    api.reserve("u1", 3)
    # Nothing bought yet: three open checkouts are the limit.
    assert_error(api.checkout("u1", 4), 403, "user_limit_reached")
    # The limit comes after item_not_found and before item_unavailable.
    api.reserve("u2", 5)
    assert_error(api.checkout("u1", 5), 403, "user_limit_reached")
    assert_error(api.checkout("u1", 777), 404, "item_not_found")
    # Asking again for an item held: the same code, not a fourth slot.
    again = api.checkout("u1", 1)
    assert again.status_code == 200 and again.json == first
    # Buying does not free a slot; expiry does.
    assert api.purchase(first["code"]).status_code == 200
    assert_error(api.checkout("u1", 4), 403, "user_limit_reached")
    clock.advance(stack.settings.checkout_ttl)
    api.reserve("u1", 4)
    api.reserve("u1", 6)
    assert_error(api.checkout("u1", 7), 403, "user_limit_reached")
    harness.assert_attempts_recorded(stack.keeper)


def test_same_user_same_item_same_code_counted_once(
    harness: Harness, stack: Stack, clock: Clock
) -> None:
    api = stack.api
    first = api.reserve("u1", 1)
    clock.advance(5)
    for _ in range(3):
        again = api.checkout("u1", 1)
        assert again.status_code == 200
        assert again.json == first  # same code, same expiry: a retry does not extend it
    api.reserve("u1", 2)
    api.reserve("u1", 3)  # three distinct items: the repeats counted once
    assert_error(api.checkout("u1", 4), 403, "user_limit_reached")
    assert api.get("/sale/status").json["items_reserved"] == 3
    harness.assert_attempts_recorded(stack.keeper)
    # Each repeat is its own attempt row, all with the one code.
    assert sql(
        harness.env["DATABASE_URL"],
        "SELECT count(*), count(DISTINCT code) FROM checkout_attempts"
        " WHERE user_id = 'u1' AND item_id = '1'",
    ) == [(4, 1)]


# --- 409 item_unavailable ----------------------------------------------------------------------


def test_item_unavailable_reserved_or_sold(harness: Harness, stack: Stack, clock: Clock) -> None:
    api = stack.api
    held = api.reserve("u1", 1)
    assert_error(api.checkout("u2", 1), 409, "item_unavailable")
    api.buy("u1", 2)
    assert_error(api.checkout("u2", 2), 409, "item_unavailable")
    # An expired reservation goes back to stock by itself (no sweep needed)...
    clock.advance(stack.settings.checkout_ttl)
    taken = api.reserve("u2", 1)
    assert taken["code"] != held["code"]
    # ...while a sold item stays sold.
    assert_error(api.checkout("u2", 2), 409, "item_unavailable")
    assert_error(api.checkout("u1", 2), 409, "item_unavailable")
    harness.assert_attempts_recorded(stack.keeper)


# --- 404 code_not_found, 410 code_expired ------------------------------------------------------


def test_unknown_codes(stack: Stack) -> None:
    sale_id = stack.api.sale.sale_id
    token = "A" * 22
    for code in (
        "nonsense",
        f"{sale_id}.{token}",
        f"19990101T000000Z-3600.{token}",
        f"{sale_id}.short",
    ):
        assert_error(stack.api.purchase(code), 404, "code_not_found")


def test_code_expired(harness: Harness, stack: Stack, clock: Clock) -> None:
    api = stack.api
    late = api.reserve("u1", 1)
    clock.advance(stack.settings.checkout_ttl)  # expires_at is reached: expired
    assert_error(api.purchase(late["code"]), 410, "code_expired")
    assert api.get("/sale/status").json["items_reserved"] == 0
    # Someone else buys the item: the old code still cannot take it back.
    other_code, other = api.buy("u2", 1)
    assert_error(api.purchase(late["code"]), 410, "code_expired")
    again = api.purchase(other_code)
    assert again.status_code == 200 and again.json == other
    harness.assert_attempts_recorded(stack.keeper)


def test_purchase_retry_is_the_same_purchase(harness: Harness, stack: Stack, clock: Clock) -> None:
    api = stack.api
    held = api.reserve("u1", 7)
    first = api.purchase(held["code"])
    assert first.status_code == 200
    assert set(first.json) == {"sale_id", "item_id", "user_id", "purchased_at"}
    assert first.json["sale_id"] == held["sale_id"] and first.json["item_id"] == "7"
    assert first.json["user_id"] == "u1"
    assert parse_time(first.json["purchased_at"]) == clock()
    clock.advance(stack.settings.checkout_ttl * 2)  # long past the code's expiry
    for _ in range(2):
        again = api.purchase(held["code"])
        assert again.status_code == 200 and again.json == first.json
    # Redis loses the sale; once restored from PostgreSQL the retry is still the same purchase.
    flush_redis(stack.settings)
    stack.keeper.restore()
    again = api.purchase(held["code"])
    assert again.status_code == 200 and again.json == first.json
    url = harness.env["DATABASE_URL"]
    assert sql(url, "SELECT count(*) FROM purchases") == [(1,)]
    assert sql(url, "SELECT user_id, item_id, code FROM purchases") == [("u1", "7", held["code"])]
    assert api.get("/sale/status").json["items_sold"] == 1


# --- 503 unavailable ---------------------------------------------------------------------------


def test_redis_unreachable(harness: Harness, stack: Stack) -> None:
    dead = harness.stack(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", FLASHSALE_REDIS_TIMEOUT="0.5"
    )
    api = dead.api
    api.sale = stack.api.sale
    for result in (api.checkout("u1", 1), api.checkout("u1", "no-such-item")):
        assert_error(result, 503, "unavailable")
    # A malformed request is still told 400, and recorded all the same.
    assert_error(api.checkout_raw([("id", "1")]), 400, "invalid_request")
    assert_error(api.purchase(f"{stack.api.sale.sale_id}.{'A' * 22}"), 503, "unavailable")
    assert_error(api.get("/sale/status"), 503, "unavailable")
    assert_error(api.get("/readyz"), 503, "unavailable")
    assert api.get("/healthz").status_code == 200
    assert api.get("/metrics").status_code == 200
    # The attempts are in PostgreSQL already, before any drain ran: straight from the request,
    # filed under the sale PostgreSQL has open (Redis being away does not close it).
    rows = harness.rows()
    sale_id = stack.api.sale.sale_id
    assert Counter((s, u, i, o) for s, u, i, o, _, _ in rows) == Counter(
        [
            (sale_id, None, "1", "invalid_request"),
            (sale_id, "u1", "1", "unavailable"),
            (sale_id, "u1", "no-such-item", "unavailable"),
        ]
    )
    harness.assert_attempts_recorded(stack.keeper)


def test_postgres_unreachable_at_purchase(harness: Harness, stack: Stack) -> None:
    dead = harness.stack(
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        FLASHSALE_PG_CONNECT_TIMEOUT="1",
    )
    api = dead.api
    api.sale = stack.api.sale
    held = api.reserve("u1", 1)  # the decision and its record need Redis only
    assert_error(api.purchase(held["code"]), 503, "unavailable")
    assert_error(api.get("/readyz"), 503, "unavailable")
    # Not durable, so not sold: the reservation is back as it was, and the code still works.
    status = stack.api.get("/sale/status").json
    assert status["items_sold"] == 0 and status["items_reserved"] == 1
    assert stack.api.purchase(held["code"]).status_code == 200
    assert sql(harness.env["DATABASE_URL"], "SELECT count(*) FROM purchases") == [(1,)]
    harness.assert_attempts_recorded(stack.keeper)


# --- successes ---------------------------------------------------------------------------------


def test_checkout_body_and_code_entropy(harness: Harness, stack: Stack, clock: Clock) -> None:
    sale = stack.api.sale
    tokens = []
    for n in range(1, 41):
        result = stack.api.checkout(f"user{n}", n)
        assert result.status_code == 200
        assert result.headers["content-type"].startswith("application/json")
        body = result.json
        assert set(body) == {"code", "sale_id", "item_id", "expires_at"}
        assert body["sale_id"] == sale.sale_id and body["item_id"] == str(n)
        expires = parse_time(body["expires_at"])
        assert expires == clock() + stack.settings.checkout_ttl <= sale.ends_at
        # The random part: url-safe base64 of at least 16 bytes = at least 128 bits.
        random_part = body["code"].rpartition(".")[2]
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", random_part), body["code"]
        assert len(base64.urlsafe_b64decode(random_part + "==")) >= 16
        tokens.append(random_part)
    assert len(set(tokens)) == len(tokens)
    # Not a counter or a timestamp: every full character varies across codes (the 22nd
    # carries the last 2 of the 128 bits).
    for position in range(21):
        assert len({token[position] for token in tokens}) > 5, position
    assert len({token[21] for token in tokens}) > 1
    harness.assert_attempts_recorded(stack.keeper)


def test_sale_status_figures(harness: Harness, stack: Stack, clock: Clock) -> None:
    api = stack.api
    sale = api.sale
    for item in (1, 2, 3):
        api.reserve("a", item)
    api.buy("b", 4)
    clock.advance(30)
    api.reserve("c", 5)
    status = api.get("/sale/status").json
    assert status == {
        "sale_id": sale.sale_id,
        "starts_at": domain.rfc3339(sale.starts_ms),
        "ends_at": domain.rfc3339(sale.ends_ms),
        "total_items": 50,
        "items_sold": 1,
        "items_reserved": 4,
        "remaining_items": 49,
    }
    assert parse_time(status["starts_at"]) == sale.starts_at
    assert parse_time(status["ends_at"]) == sale.ends_at
    clock.advance(31)  # a's three have expired, c's has not: only unexpired ones count
    status = api.get("/sale/status").json
    assert (status["items_sold"], status["items_reserved"], status["remaining_items"]) == (1, 1, 49)
    harness.assert_attempts_recorded(stack.keeper)  # the sweep frees a's items: same figures
    status = api.get("/sale/status").json
    assert (status["items_sold"], status["items_reserved"], status["remaining_items"]) == (1, 1, 49)


def test_items_pages_list_every_item_once(stack: Stack) -> None:
    api = stack.api
    sale = api.sale
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        pairs = [("limit", "7")] + ([("cursor", cursor)] if cursor else [])
        page = api.get("/sale/items", pairs, host="shop.example").json
        assert page["sale_id"] == sale.sale_id
        assert 1 <= len(page["items"]) <= 7
        for item in page["items"]:
            assert set(item) == {"id", "name", "image_url"} and item["name"]
            seen.append(item["id"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and pages < 20
    assert pages == 8
    assert len(seen) == len(set(seen)) == 50
    assert set(seen) == {str(n) for n in range(1, 51)}
    whole = api.get("/sale/items", [("limit", "1000")]).json
    assert [i["id"] for i in whole["items"]] == seen and whole["next_cursor"] is None
    default = api.get("/sale/items").json
    assert len(default["items"]) == 50  # the default page (100) holds them all


def test_item_images_are_served_by_the_service(stack: Stack) -> None:
    api = stack.api
    item = api.get("/sale/items", [("limit", "1")], host="shop.example").json["items"][0]
    url = urlsplit(item["image_url"])
    assert url.netloc == "shop.example"  # the service's own host, whatever it is called
    image = api.get(url.path)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/svg+xml"
    assert image.text.startswith("<svg") and image.text.rstrip().endswith("</svg>")
    assert item["name"] in image.text
    assert_error(api.get(f"/images/{api.sale.sale_id}/51.svg"), 404, "item_not_found")
    assert_error(api.get("/images/not-a-sale/1.svg"), 404, "item_not_found")


def test_public_url_is_the_base_of_absolute_urls(harness: Harness) -> None:
    """FLASHSALE_PUBLIC_URL, when set, whatever host the request named (without it, the
    request's own host: test_item_images_are_served_by_the_service)."""
    stack = harness.stack(FLASHSALE_PUBLIC_URL="https://shop.example.com/flash/")
    sale = stack.open()
    api = stack.api
    items = api.get("/sale/items", [("limit", "3")], host="pod-7.internal").json["items"]
    assert [item["image_url"] for item in items] == [
        f"https://shop.example.com/flash/images/{sale.sale_id}/{n}.svg" for n in (1, 2, 3)
    ]


# Headers that differ between any two answers, HEAD or not.
_PER_ANSWER = {"x-request-id"}


def test_head_is_answered_on_every_get_route(stack: Stack) -> None:
    """The API's reads, images, probes, /metrics, /openapi.json, the status page and its files:
    HEAD gets the GET's status and headers (Content-Length included), and no body."""
    client = stack.api.client
    image = urlsplit(stack.api.get("/sale/items", [("limit", "1")]).json["items"][0]["image_url"])
    targets = [
        ("/sale/status", ""),
        ("/sale/items", "limit=2"),
        ("/sale/items", "limit=0"),  # errors too
        (image.path, ""),
        (f"/images/{stack.api.sale.sale_id}/999.svg", ""),
        ("/healthz", ""),
        ("/readyz", ""),
        ("/metrics", ""),
        ("/openapi.json", ""),
        ("/", ""),
        ("/static/status.css", ""),
        ("/static/status.js", ""),
        ("/static/nothing.css", ""),
    ]
    for path, query in targets:
        got = client.simulate_get(path, query_string=query)
        head = client.simulate_head(path, query_string=query)
        assert head.status_code == got.status_code, path
        assert head.content == b"" and got.content, path
        ignored = _PER_ANSWER | ({"content-length"} if path == "/metrics" else set())
        same = {k: v for k, v in got.headers.items() if k not in ignored}
        assert {k: v for k, v in head.headers.items() if k not in ignored} == same, path
        assert int(head.headers["content-length"]) > 0, path
        if path != "/metrics":  # it counts the GET just made
            assert int(head.headers["content-length"]) == len(got.content), path


def test_health_and_readiness(stack: Stack) -> None:
    health = stack.api.get("/healthz")
    assert health.status_code == 200 and health.json["status"] == "ok"
    ready = stack.api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"redis": True, "postgres": True}


def test_metrics_names_the_contract_metrics(stack: Stack) -> None:
    api = stack.api

    def figures() -> tuple[float, float, float]:
        metrics = api.get("/metrics").text
        return (
            counted(metrics, "flashsale_checkouts_total", outcome="ok"),
            counted(metrics, "flashsale_checkouts_total", outcome="item_not_found"),
            counted(metrics, "flashsale_purchases_total", outcome="ok"),
        )

    before = figures()
    api.buy("u1", 1)
    api.reserve("u1", 2)
    assert_error(api.checkout("u1", 99), 404, "item_not_found")
    after = figures()
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 1, 1]

    result = api.get("/metrics")
    assert result.headers["content-type"].startswith("text/plain")
    types, samples = metric_samples(result.text)
    assert types["flashsale_checkouts"] == "counter"
    assert types["flashsale_purchases"] == "counter"
    assert types["flashsale_request_duration_seconds"] == "histogram"
    assert types["flashsale_sale_items"] == "gauge"
    assert types["flashsale_outbox_backlog"] == "gauge"
    assert any(
        n == "flashsale_request_duration_seconds_bucket"
        and labels.get("route") == "/checkout"
        and labels.get("status") == "200"
        for n, labels, _ in samples
    )
    items = {labels["state"]: v for n, labels, v in samples if n == "flashsale_sale_items"}
    assert items == {"total": 50, "sold": 1, "reserved": 1, "remaining": 49}
    backlog = [v for n, _, v in samples if n == "flashsale_outbox_backlog"]
    assert backlog == [3]  # three checkouts, nothing drained yet


def test_unknown_route_and_wrong_method_are_json_errors(stack: Stack) -> None:
    api = stack.api

    def error_shaped(result: falcon.testing.Result, status: int, code: str) -> bool:
        return (
            result.status_code == status
            and result.headers["content-type"].startswith("application/json")
            and set(result.json) == {"error"}
            and set(result.json["error"]) == {"code", "message"}
            and result.json["error"]["code"] == code
        )

    for path in ("/nowhere", "/checkout/1", "/images/x"):
        assert error_shaped(api.get(path), 404, "not_found"), path
    for method, path in (
        ("GET", "/checkout"),
        ("GET", "/purchase"),
        ("POST", "/sale/status"),
        ("DELETE", "/sale/items"),
        ("PUT", "/healthz"),
    ):
        result = api.call(method, path)
        assert error_shaped(result, 405, "method_not_allowed"), (method, path, result.text)


# --- the records of a busy minute ---------------------------------------------------------------


def test_every_attempt_is_recorded_with_its_outcome(
    harness: Harness, stack: Stack, clock: Clock
) -> None:
    """A mix of every checkout outcome, then the rows counted by outcome."""
    api = stack.api
    api.reserve("a", 1)
    api.checkout("a", 1)  # the same code again
    api.checkout("b", 1)  # item_unavailable
    api.checkout("b", 1000)  # item_not_found
    api.checkout_raw([("id", "2")])  # invalid_request, user NULL
    for item in (2, 3):
        api.reserve("a", item)
    api.checkout("a", 4)  # user_limit_reached
    clock.advance(61)
    api.buy("b", 1)  # the expired item back in stock
    harness.assert_attempts_recorded(stack.keeper)
    by_outcome = attempt_outcomes(harness.env["DATABASE_URL"])
    assert by_outcome == {
        "ok": 5,
        "item_unavailable": 1,
        "item_not_found": 1,
        "invalid_request": 1,
        "user_limit_reached": 1,
    }
    # Draining again adds nothing: the rows are keyed.
    stack.keeper.sweep()
    assert len(harness.rows()) == 9
