"""Admission's own arithmetic (docs/admission.md): how a worker books the retries it tells the
refused, and how the pod's table of connections per client address forgets a worker's."""

from __future__ import annotations

from collections import Counter

import pytest

from flashsale.domain import SaleError
from flashsale.sale.load import Load
from flashsale.server.addresses import AddressTable
from tests.support.service import Clock


def test_retries_are_booked_a_tenth_of_the_admitted_rate_per_second() -> None:
    """A worker that admits 100 requests a second books about 10 retries into each coming
    second: the first refused hear 1, the next 2, and so on, up to 60."""
    clock = Clock(1000.0)
    load = Load(limit=0, clock=clock)

    def second(admitted: int, shed: int) -> list[int]:
        told = []
        load.limit = 10**6
        for _ in range(admitted):
            load.check()
            clock.advance(0.9 / admitted)
        load.limit = 0
        for _ in range(shed):
            load.enter()
            with pytest.raises(SaleError) as refusal:
                load.check()
            assert refusal.value.code == "overloaded"
            told.append(refusal.value.retry_after)
        clock.advance(1.0 - 0.9 * bool(admitted))
        return told

    for _ in range(8):
        second(100, 0)
    assert 99 < load.rate <= 100
    told = second(100, 95)
    per_second = Counter(told)
    assert told == sorted(told) and told[0] == 1
    assert set(per_second) == set(range(1, max(told) + 1))  # no second skipped
    assert all(10 <= n <= 12 for delay, n in per_second.items() if delay < max(told))
    told = second(100, 1000)  # fills the calendar up to its last second
    per_second = Counter(told)
    assert told[0] >= 7 and max(told) == 60 and per_second[60] > 12  # after the booked ones
    assert all(n <= 12 for delay, n in per_second.items() if delay < 60)
    assert load.inflight == 0
    for _ in range(61):  # the booked seconds pass
        second(100, 0)
    assert second(100, 1) == [1]


def test_the_address_table_forgets_a_workers_connections_with_its_row() -> None:
    table = AddressTable(rows=2, slots=64)
    first, second = table.claim(), table.claim()
    assert table.claim() is None
    assert table.open(first, "10.0.0.1", cap=2) is not None
    slot = table.open(second, "10.0.0.1", cap=2)
    assert table.open(first, "10.0.0.1", cap=2) is None  # the pod holds 2: one per row
    table.close(second, slot)
    assert table.open(first, "10.0.0.1", cap=2) is not None
    table.release(first)  # its worker exited holding 2
    assert table.count(slot) == 0
    assert table.claim() == first
