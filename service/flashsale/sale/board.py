"""What the status page shows beside the sale's figures: the burn-down since the sale opened
(GET /sale/history) and the state of each listed item (GET /sale/stock).

The burn-down is read from the sold history purchase.lua keeps in Redis (codec.py: about 360
buckets a period). Every page open during a sale polls it, so a worker keeps its answer for a
second: however many pages poll, Redis sees one read a second per worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flashsale import domain
from flashsale.domain import SaleError
from flashsale.stores.inventory import Inventory, InventoryError, SaleFigures
from flashsale.stores.inventory.codec import history_bucket, history_bucket_ms

# Seconds a worker serves the burn-down it read (GET /sale/history says max-age=1 too).
HISTORY_FRESH_FOR = 1.0


class Board:
    """The status page's reads beyond GET /sale/status. Safe for greenlets."""

    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory
        # ((sale id, current bucket), read at (monotonic), answer)
        self._kept: tuple[tuple[str, int], float, dict[str, Any]] | None = None

    def history(
        self, sale_id: str, now_ms: int, figures: Callable[[], SaleFigures | None]
    ) -> dict[str, Any] | None:
        """The sale's sold count at the end of each bucket since it opened, the last one being
        the bucket of `now_ms` (so far); None when the sale `sale_id` is not open in Redis.
        `figures` reads the open sale's figures (only when the kept answer is stale)."""
        window = domain.sale_window(sale_id)
        if window is None:
            return None
        starts_ms, ends_ms = window[0] * 1000, window[1] * 1000
        key = (sale_id, history_bucket(starts_ms, ends_ms, now_ms))
        kept = self._kept
        if kept is not None and kept[0] == key and time.monotonic() - kept[1] < HISTORY_FRESH_FOR:
            return kept[2]
        snapshot = figures()
        if snapshot is None or snapshot.sale_id != sale_id:
            return None
        try:
            per_bucket = self._inventory.sold_history(sale_id)
        except InventoryError:
            raise SaleError("unavailable") from None
        sold, running = [], 0
        for bucket in range(key[1] + 1):
            running += per_bucket.get(bucket, 0)
            sold.append(running)
        answer = {
            "sale_id": sale_id,
            "starts_at": domain.rfc3339(snapshot.starts_ms),
            "ends_at": domain.rfc3339(snapshot.ends_ms),
            "total_items": snapshot.total,
            "bucket_seconds": history_bucket_ms(starts_ms, ends_ms) // 1000,
            "sold": sold,
        }
        self._kept = (key, time.monotonic(), answer)
        return answer

    def stock(
        self, sale_id: str, ids: list[str], next_cursor: str | None, now_ms: int
    ) -> dict[str, Any]:
        """The state of each item of a page of GET /sale/items (its ids and next cursor)."""
        try:
            states = self._inventory.stock(sale_id, ids, now_ms)
        except InventoryError:
            raise SaleError("unavailable") from None
        if states is None:  # the sale is in PostgreSQL, not (yet again) in Redis
            raise SaleError("unavailable")
        return {
            "sale_id": sale_id,
            "items": [{"id": item_id, "state": states[item_id]} for item_id in ids],
            "next_cursor": next_cursor,
        }
