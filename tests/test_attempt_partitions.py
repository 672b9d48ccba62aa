"""checkout_attempts is partitioned by day: the jobs make the partitions ahead, a row no
partition was made for waits in the default one until its day's partition takes it over, and
`flashsale prune --older-than DAYS` drops whole days, never a purchase or a sale."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flashsale.domain import Purchase
from flashsale.sale.keeper import SaleKeeper
from flashsale.stores.records import AttemptRow
from tests.support import flashsale, sql


def partitions(url: str) -> list[str]:
    return [
        name
        for (name,) in sql(
            url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'checkout_attempts'::regclass ORDER BY 1",
        )
    ]


def row(key: str, at: datetime, sale_id: str | None = None) -> AttemptRow:
    return AttemptRow(key, sale_id, "u", "1", "item_unavailable", None, int(at.timestamp() * 1000))


def test_migrate_makes_today_and_tomorrow(migrated_db: str, service_env: dict[str, str]) -> None:
    said = json.loads(flashsale("migrate", env=service_env).stdout.splitlines()[-1])
    today = datetime.now(UTC).date()
    days = [f"checkout_attempts_{today + timedelta(days=n):%Y%m%d}" for n in range(2)]
    assert set(days) <= set(partitions(migrated_db))
    assert said["command"] == "migrate"


def test_a_row_of_a_day_without_a_partition_moves_into_it_when_made(
    keeper: SaleKeeper, migrated_db: str
) -> None:
    long_ago = datetime(2020, 2, 29, 12, tzinfo=UTC)
    keeper.database.insert_attempts([row("early", long_ago)])
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_default") == [(1,)]
    made = keeper.database.ensure_attempt_partitions(long_ago.date(), 1)
    assert made == ["checkout_attempts_20200229"]
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_20200229") == [(1,)]
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts_default") == [(0,)]
    # The key still holds across the move: the same request again is the same row.
    assert keeper.database.insert_attempts([row("early", long_ago)]) == []
    assert sql(migrated_db, "SELECT count(*) FROM checkout_attempts") == [(1,)]
    assert keeper.database.ensure_attempt_partitions(long_ago.date(), 1) == []


def test_prune_drops_old_days_only_and_again_drops_nothing(
    keeper: SaleKeeper, migrated_db: str, service_env: dict[str, str]
) -> None:
    sale, _ = keeper.open_sale()
    keeper.database.save_purchase(Purchase(sale.sale_id, "1", "u", f"{sale.sale_id}.c", 0))
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=9), now - timedelta(hours=1)
    keeper.database.ensure_attempt_partitions(old.date(), 1)
    keeper.database.insert_attempts(
        [row("old", old, sale.sale_id), row("recent", recent, sale.sale_id)]
    )
    keeper.database.insert_attempts([row("older-in-default", now - timedelta(days=400))])

    cutoff = f"checkout_attempts_{now - timedelta(days=7):%Y%m%d}"
    expected = [name for name in partitions(migrated_db) if "_2" in name and name < cutoff]
    assert f"checkout_attempts_{old:%Y%m%d}" in expected
    pruned = json.loads(flashsale("prune", "--older-than", "7", env=service_env).stdout)
    assert sorted(pruned["dropped"]) == expected
    keys = {key for (key,) in sql(migrated_db, "SELECT attempt_key FROM checkout_attempts")}
    assert keys == {"recent"}
    assert sql(migrated_db, "SELECT count(*) FROM purchases") == [(1,)]
    assert sql(migrated_db, "SELECT count(*) FROM sales") == [(1,)]
    again = json.loads(flashsale("prune", "--older-than", "7", env=service_env).stdout)
    assert again["dropped"] == []
    refused = flashsale("prune", "--older-than", "0", env=service_env, check=False)
    assert refused.returncode == 2 and "--older-than" in refused.stderr
