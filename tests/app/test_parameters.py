"""Numbers from clients are read one way (domain.parse_count): ASCII digits only. Parameters that
are well formed but unusual (digits of other scripts, superscripts, a cursor or sale id naming
nothing) get a 4xx of the error table, never a 500; Hypothesis then sends arbitrary Unicode.

In-process over the real app (Redis and PostgreSQL behind it); parse_count itself is in
tests/unit/test_parameters.py, and tests/system/test_bad_input.py sends the same kind of digits
through gunicorn.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashsale import domain
from flashsale.sale.keeper import SaleKeeper
from tests.support.api import NUMBER_LOOKALIKES, error_code
from tests.support.openapi import check_response


@pytest.fixture
def sale_id(keeper: SaleKeeper) -> str:
    sale, _ = keeper.open_sale()
    return sale.sale_id


def get(client: falcon.testing.TestClient, path: str, **params: str) -> falcon.testing.Result:
    result = client.simulate_get(path, query_string=urlencode(params))
    check_response(client.app, "GET", path, result)  # never a 500, always as documented
    return result


@pytest.mark.parametrize("text", NUMBER_LOOKALIKES, ids=ascii)
def test_unusual_limits_are_400(client, sale_id, text: str) -> None:
    result = get(client, "/sale/items", limit=text)
    assert result.status_code == 400 and error_code(result) == "invalid_request"


@pytest.mark.parametrize("text", NUMBER_LOOKALIKES, ids=ascii)
def test_unusual_cursor_positions_are_400(client, sale_id, text: str) -> None:
    result = get(client, "/sale/items", cursor=f"{sale_id}:{text}")
    assert result.status_code == 400 and error_code(result) == "invalid_request"


@pytest.mark.parametrize("position", ["0", "51", "999999999999999999"])
def test_a_cursor_naming_no_item_is_400(client, sale_id, position: str) -> None:
    """The sale has 50 items: a cursor names one of positions 1..50 or nothing."""
    result = get(client, "/sale/items", cursor=f"{sale_id}:{position}")
    assert result.status_code == 400 and error_code(result) == "invalid_request"
    assert get(client, "/sale/items", cursor=f"{sale_id}:50").json["items"][0]["id"] == "50"


# Not "10\n": Falcon's router does not route a path segment holding a newline (404 not_found,
# as for any path no route names).
@pytest.mark.parametrize(
    "text", [*NUMBER_LOOKALIKES[:7], *NUMBER_LOOKALIKES[8:-2], "007", "0", "51"], ids=ascii
)
def test_unusual_item_ids_in_image_paths_are_404(client, sale_id, text: str) -> None:
    result = get(client, f"/images/{sale_id}/{quote(text, safe='')}.svg")
    assert result.status_code == 404 and error_code(result) == "item_not_found"
    assert get(client, f"/images/{sale_id}/7.svg").status_code == 200


@pytest.mark.parametrize(
    "sale",
    [
        "\uff12\uff10\uff12\uff16\uff10\uff11\uff10\uff11T000000Z-3600",  # fullwidth date
        "20260101T000000Z-\u0663\u0666\u0660\u0660",  # Arabic-Indic period
        "20260101T000000Z-" + "9" * 40,  # a period no int64 holds
        "20260101T000000Z-3600",  # the shape of a sale id, but no such sale
    ],
    ids=ascii,
)
def test_unusual_sale_ids_in_image_paths_are_404(client, sale_id, sale: str) -> None:
    result = get(client, f"/images/{quote(sale, safe='')}/1.svg")
    assert result.status_code == 404 and error_code(result) == "item_not_found"


# Any text but "/", a newline or nothing, which make a path no route names (404 not_found).
# Any text a client can send: every character but a lone surrogate (no URL can carry one).
_TEXT = st.characters(blacklist_categories=("Cs",))
_SEGMENT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\n"),
    min_size=1,
    max_size=40,
)


@given(
    limit=st.one_of(st.none(), st.text(_TEXT, max_size=30)),
    cursor=st.one_of(st.none(), st.text(_TEXT, max_size=60)),
    cursor_position=st.one_of(st.none(), st.text(_TEXT, max_size=30)),
    sale=_SEGMENT,
    item=_SEGMENT,
)
@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_arbitrary_unicode_parameters_get_a_4xx_of_the_table(
    client, sale_id, limit, cursor, cursor_position, sale, item
) -> None:
    params = {}
    if limit is not None:
        params["limit"] = limit
    if cursor_position is not None:  # a cursor of the open sale, with any position
        params["cursor"] = f"{sale_id}:{cursor_position}"
    elif cursor is not None:
        params["cursor"] = cursor
    for result in (
        get(client, "/sale/items", **params),
        get(client, f"/images/{quote(sale, safe='')}/{quote(item, safe='')}.svg"),
        get(client, f"/images/{sale_id}/{quote(item, safe='')}.svg"),
    ):
        if result.status_code == 200:
            continue
        code = error_code(result)
        assert code in domain.ERRORS and domain.ERRORS[code][0] == result.status_code
        assert 400 <= result.status_code < 500, result.text
