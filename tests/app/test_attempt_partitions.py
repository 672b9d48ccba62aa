"""checkout_attempts is partitioned by day: a row no partition was made for waits in the default
one until its day's partition takes it over. The jobs that make and drop partitions are in
tests/system/test_attempt_partitions.py."""

from __future__ import annotations

from datetime import UTC, datetime

from flashsale.sale.keeper import SaleKeeper
from tests.support.stores import attempt_row, sql


def test_a_row_of_a_day_without_a_partition_moves_into_it_when_made(
    keeper: SaleKeeper, migrated_db: str
) -> None:
    long_ago = datetime(2020, 2, 29, 12, tzinfo=UTC)
    keeper.database.insert_attempts([attempt_row("early", long_ago)])
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_default") == [(1,)]
    made = keeper.database.ensure_attempt_partitions(long_ago.date(), 1)
    assert made == ["checkout_attempts_20200229"]
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_20200229") == [(1,)]
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_default") == [(0,)]
    # The key still holds across the move: the same request again is the same row.
    assert keeper.database.insert_attempts([attempt_row("early", long_ago)]) == []
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts") == [(1,)]
    assert keeper.database.ensure_attempt_partitions(long_ago.date(), 1) == []
