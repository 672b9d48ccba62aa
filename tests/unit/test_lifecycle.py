"""The outbox drain trims the stream up to the id right after its batch."""

from __future__ import annotations

from flashsale.stores.inventory.base import stream_id_after


def test_the_drain_trims_to_the_next_stream_id() -> None:
    """The trim bound is the id right after the batch's last: the next sequence number, or the
    next millisecond after its last sequence number."""
    assert stream_id_after("1764038400000-0") == "1764038400000-1"
    assert stream_id_after("1764038400000-41") == "1764038400000-42"
    assert stream_id_after(f"1764038400000-{2**64 - 1}") == "1764038400001-0"
