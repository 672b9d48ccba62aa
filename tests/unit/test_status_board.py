"""The status page's burn-down (`GET /sale/history`) counts sales in buckets of whole seconds,
at most 360 of them a period, whatever its length."""

from __future__ import annotations

import pytest

from flashsale.stores.inventory.codec import history_bucket, history_bucket_ms


@pytest.mark.parametrize(
    ("period", "bucket_seconds"),
    [(2, 1), (60, 1), (360, 1), (361, 2), (720, 2), (1000, 3), (3600, 10), (86400, 240)],
)
def test_a_period_has_at_most_360_buckets_of_whole_seconds(
    period: int, bucket_seconds: int
) -> None:
    starts = 1_800_000_000_000
    size = history_bucket_ms(starts, starts + period * 1000)
    assert size == bucket_seconds * 1000
    assert -(-period * 1000 // size) <= 360
    assert history_bucket(starts, starts + period * 1000, starts + period * 1000 - 1) < 360
