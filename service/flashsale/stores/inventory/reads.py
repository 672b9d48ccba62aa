"""What the gateway reads without deciding: a sale's figures, facts, history and stock, what
a load must rebuild, and what the audit compares with PostgreSQL."""

from __future__ import annotations

from collections import Counter

from flashsale.domain import Sale
from flashsale.stores.inventory.answers import (
    ItemStock,
    SaleFigures,
)
from flashsale.stores.inventory.base import (
    InventoryBase,
)
from flashsale.stores.inventory.codec import RESERVED, SOLD, ItemState
from flashsale.stores.inventory.keys import SaleLayout, keys_for


class Reads(InventoryBase):
    """Reads of a sale, summed over its shards."""

    def figures(self, sale_id: str, now_ms: int) -> SaleFigures | None:
        """The sale's counts now (summed over its shards), or None if Redis does not hold it
        whole (a shard lost with its node is being restored)."""
        layout = self.layout(sale_id)
        rows = [
            self._eval("status", [keys.meta, keys.reserved, keys.outbox], [now_ms])
            for keys in layout.shards
        ]
        if not all(rows):
            return None
        backlog = self._client.xlen(layout.home.outbox) if layout.k > 1 else 0
        held, starts, ends = rows[0][:3]
        return SaleFigures(
            held,
            int(starts),
            int(ends),
            sum(int(row[3]) for row in rows),
            sum(int(row[4]) for row in rows),
            sum(int(row[5]) for row in rows),
            backlog + sum(int(row[6]) for row in rows),
        )

    def sold_history(self, sale_id: str) -> dict[int, int]:
        """Items sold in each bucket of the sale's period (codec.history_bucket), summed over its
        shards: one HGETALL of a small hash per shard."""
        sold: Counter[int] = Counter()
        for keys in self.layout(sale_id).shards:
            for bucket, count in self._client.hgetall(keys.history).items():
                sold[int(bucket)] += int(count)
        return dict(sold)

    def stock(self, sale_id: str, item_ids: list[str], now_ms: int) -> dict[str, ItemStock] | None:
        """Each item's state at `now_ms` (a reservation past its expiry is available again), one
        HMGET per shard; None when Redis does not hold one of them (a sale being restored)."""
        layout = self.layout(sale_id)
        by_shard: dict[int, list[str]] = {}
        for item_id in item_ids:
            shard = layout.item_shard(item_id)
            if shard is None:
                return None
            by_shard.setdefault(shard, []).append(item_id)
        found: dict[str, ItemStock] = {}
        for shard, ids in by_shard.items():
            texts = self._client.hmget(layout.shards[shard].items, ids)
            for item_id, text in zip(ids, texts, strict=True):
                if text is None:
                    return None
                state = ItemState.decode(text)
                if state.kind == SOLD:
                    found[item_id] = "sold"
                elif state.kind == RESERVED and state.at_ms > now_ms:
                    found[item_id] = "reserved"
                else:
                    found[item_id] = "available"
        return found

    def sale(self, sale_id: str) -> Sale | None:
        """The sale's fixed facts, or None if Redis does not hold it."""
        meta = self._client.hgetall(keys_for(sale_id).meta)
        if not meta:
            return None
        return Sale(
            sale_id,
            int(meta["starts_ms"]) // 1000,
            int(meta["ends_ms"]) // 1000,
            int(meta["total"]),
            int(meta["limit"]),
            meta["seed"],
            tuple(meta["tags"].split(",")) if meta.get("tags") else (),
        )

    def missing(self, sale: Sale) -> list[int]:
        """The shards of the sale Redis does not hold (all, when its home meta is gone too):
        what a load must (re)build. Empty when Redis holds it whole."""
        layout = SaleLayout(sale.sale_id, sale.total_items, sale.shard_tags)
        home = bool(self._client.exists(layout.home.meta))
        if layout.k == 1:
            return [] if home else [0]
        there = [bool(self._client.exists(keys.meta)) for keys in layout.shards]
        lost = [shard for shard, present in enumerate(there) if not present]
        return lost if home or lost else [-1]  # -1: only the home meta is gone

    def sold_items(self, sale_id: str) -> dict[str, ItemState]:
        """item_id -> state of every item Redis holds as sold."""
        sold = {}
        for keys in self.layout(sale_id).shards:
            for item_id, text in self._client.hscan_iter(keys.items, count=1000):
                state = ItemState.decode(text)
                if state.kind == SOLD:
                    sold[item_id] = state
        return sold

    def bought_by(self, sale_id: str, user_id: str) -> int:
        """How many items the user's set holds as bought."""
        layout = self.layout(sale_id)
        keys = layout.shards[layout.user_shard(user_id)]
        return self._client.zcount(keys.user(user_id), "inf", "inf")

    def issued_codes(self, sale_id: str) -> set[str]:
        shards = self.layout(sale_id).shards
        return {code for keys in shards for code in self._client.hkeys(keys.codes)}
