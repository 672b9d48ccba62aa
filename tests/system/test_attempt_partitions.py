"""checkout_attempts is partitioned by day: `flashsale migrate` makes the partitions ahead, and
`flashsale prune --older-than DAYS` drops whole days, never a purchase or a sale. A row no
partition was made for is in tests/app/test_attempt_partitions.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from flashsale.domain import Purchase
from flashsale.sale.keeper import SaleKeeper
from tests.support.processes import flashsale
from tests.support.stores import attempt_partitions, attempt_row, sql


def test_migrate_makes_today_and_tomorrow(migrated_db: str, service_env: dict[str, str]) -> None:
    said = json.loads(flashsale("migrate", env=service_env).stdout.splitlines()[-1])
    today = datetime.now(UTC).date()
    days = [f"checkout_attempts_{today + timedelta(days=n):%Y%m%d}" for n in range(2)]
    assert set(days) <= set(attempt_partitions(migrated_db))
    assert said["command"] == "migrate"


def test_prune_drops_old_days_only_and_again_drops_nothing(
    keeper: SaleKeeper, migrated_db: str, service_env: dict[str, str]
) -> None:
    sale, _ = keeper.open_sale()
    keeper.database.save_purchase(Purchase(sale.sale_id, "1", "u", f"{sale.sale_id}.c", 0))
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=9), now - timedelta(hours=1)
    keeper.database.ensure_attempt_partitions(old.date(), 1)
    keeper.database.insert_attempts(
        [attempt_row("old", old, sale.sale_id), attempt_row("recent", recent, sale.sale_id)]
    )
    keeper.database.insert_attempts([attempt_row("older-in-default", now - timedelta(days=400))])

    cutoff = f"checkout_attempts_{now - timedelta(days=7):%Y%m%d}"
    expected = [name for name in attempt_partitions(migrated_db) if "_2" in name and name < cutoff]
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
