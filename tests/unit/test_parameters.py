"""Numbers from clients are read one way (domain.parse_count): ASCII digits only."""

from __future__ import annotations

from flashsale.domain import parse_count
from tests.support.api import NUMBER_LOOKALIKES


def test_parse_count_takes_ascii_digits_only() -> None:
    assert [parse_count(t) for t in ("0", "7", "10", "007", "9" * 18)] == [0, 7, 10, 7, 10**18 - 1]
    for text in NUMBER_LOOKALIKES:
        assert parse_count(text) is None, repr(text)
    assert parse_count(None) is None
    assert parse_count(["1"]) is None
    assert parse_count(10) is None  # a number already is not text from a client
