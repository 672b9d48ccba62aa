"""What the jobs do to a sale in Redis: load it (or the shards a node lost), return expired
reservations, settle purchases in flight, and move its outboxes along."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from redis.exceptions import LockError, RedisError

from flashsale.domain import Purchase, Sale
from flashsale.stores.inventory.answers import (
    OutboxEntry,
    outbox_entry,
)
from flashsale.stores.inventory.base import (
    InventoryBase,
    chunks,
    stream_id_after,
)
from flashsale.stores.inventory.codec import (
    FREE,
    RESERVED,
    SOLD,
    Claim,
    ItemState,
    history_bucket,
)
from flashsale.stores.inventory.keys import OUTBOX_REGISTRY, SaleKeys, SaleLayout, keys_for


class Upkeep(InventoryBase):
    """Loading, tidying and the outboxes."""

    @contextlib.contextmanager
    def exclusive(
        self, sale_id: str, job: str, *, ttl: float, wait: float, part: int = 0
    ) -> Iterator[Callable[[], None] | None]:
        """A short lock of one job on one sale (`load`) or on one of its outboxes (`drain`, its
        `part`, see outbox_parts). Yields a function that renews it, or None when another
        holder kept it for `wait` seconds. A lock that cannot be released (Redis went away)
        times out by itself."""
        keys = self._part(sale_id, part)
        name = {"load": keys_for(sale_id).load_lock, "drain": keys.drain_lock}[job]
        lock = self._client.lock(
            name, timeout=ttl, blocking=wait > 0, blocking_timeout=wait or None
        )
        if not lock.acquire():
            yield None
            return

        def renew() -> None:
            with contextlib.suppress(LockError):  # lost it: correctness never rests on it
                lock.reacquire()

        try:
            yield renew
        finally:
            with contextlib.suppress(RedisError):
                lock.release()

    def load_sale(
        self,
        sale: Sale,
        sold: Iterable[Purchase],
        issued: dict[str, tuple[str, str]],
        *,
        expire_ms: int,
        shards: list[int] | None = None,
    ) -> bool:
        """Load a sale (or the given shards of it, lost with their node) into staging keys and
        publish each in one step (publish.lua), unless it is there; the home meta goes last, so
        a sale is live only once whole. `sold`: its purchases (they stay sold, their codes
        answer with them); `issued`: code -> (item, user) of checkouts handed out (they can no
        longer be bought); reservations only Redis knew are not carried over. A rebuilt shard's
        users get back their purchases and the reservations the surviving shards hold for them,
        so the limit still counts everything. Returns whether this call loaded anything."""
        layout = SaleLayout(sale.sale_id, sale.total_items, sale.shard_tags)
        # `shards` from missing(): [0] of a one-tag sale is the whole of it, of a sharded sale
        # its first shard only; the others must keep their user sets.
        wanted = range(layout.k) if shards is None else [s for s in shards if s >= 0]
        sold = list(sold)
        live = self._live_reservations(layout, skip=set(wanted)) if layout.k > 1 else {}
        loaded = False
        for shard in wanted:
            loaded |= self._load_shard(layout, sale, shard, sold, issued, live, expire_ms)
        home_meta = {
            "sale_id": sale.sale_id,
            "starts_ms": sale.starts_ms,
            "ends_ms": sale.ends_ms,
            "total": sale.total_items,
            "limit": sale.user_limit,
            "seed": sale.seed,
            "expire_ms": expire_ms,
        }
        if layout.k > 1:
            home_meta |= {"shards": layout.k, "tags": ",".join(sale.shard_tags)}
            if not self._client.exists(layout.home.meta):
                self._client.hset(layout.home.meta, mapping=home_meta)
                self._client.pexpireat(layout.home.meta, expire_ms)
                loaded = True
        self.register_outbox(sale.sale_id)
        return loaded

    def _load_shard(
        self,
        layout: SaleLayout,
        sale: Sale,
        shard: int,
        sold: list[Purchase],
        issued: dict[str, tuple[str, str]],
        live: dict[str, dict[str, int]],
        expire_ms: int,
    ) -> bool:
        keys = layout.shards[shard]
        mine = [p for p in sold if layout.item_shard(p.item_id) == shard]
        # Ids shard + 1, shard + 1 + K, ...: the ones item_shard deals here, all free at first.
        free = ItemState(FREE).encode()
        states = dict.fromkeys(map(str, range(shard + 1, sale.total_items + 1, layout.k)), free)
        codes = {
            code: Claim(item, user, 0).encode()
            for code, (item, user) in issued.items()
            if layout.item_shard(item) == shard
        }
        history: Counter[int] = Counter()
        for p in mine:
            states[p.item_id] = ItemState(SOLD, p.purchased_ms, p.user_id, p.code).encode()
            codes[p.code] = Claim(p.item_id, p.user_id, p.purchased_ms).encode()
            history[history_bucket(sale.starts_ms, sale.ends_ms, p.purchased_ms)] += 1
        # This shard's users: what they bought anywhere, and what other shards hold for them.
        holdings: dict[str, dict[str, float]] = {}
        for p in sold:
            if layout.user_shard(p.user_id) == shard:
                holdings.setdefault(p.user_id, {})[p.item_id] = float("inf")
        for user, items in live.items():
            if layout.user_shard(user) == shard:
                for item, until in items.items():
                    holdings.setdefault(user, {}).setdefault(item, until)

        self._client.delete(keys.items_staging, keys.codes_staging, keys.history_staging)
        pipe = self._client.pipeline(transaction=False)
        for batch in chunks(list(states.items())):
            pipe.hset(keys.items_staging, mapping=dict(batch))
        for batch in chunks(list(codes.items())):
            pipe.hset(keys.codes_staging, mapping=dict(batch))
        if history:
            pipe.hset(keys.history_staging, mapping=dict(history))
        for user, items in holdings.items():
            pipe.delete(keys.user(user))
            pipe.zadd(keys.user(user), items)
            pipe.pexpireat(keys.user(user), expire_ms)
        pipe.execute()
        meta = {
            "sale_id": sale.sale_id,
            "starts_ms": sale.starts_ms,
            "ends_ms": sale.ends_ms,
            "total": len(states),
            "limit": sale.user_limit,
            "seed": sale.seed,
            "sold": len(mine),
            "expire_ms": expire_ms,
        }
        if layout.k > 1:
            meta["shard"] = shard
        pairs = [part for field, value in meta.items() for part in (field, value)]
        return bool(
            self._eval(
                "publish",
                [
                    keys.meta,
                    keys.items,
                    keys.codes,
                    keys.items_staging,
                    keys.codes_staging,
                    keys.reserved,
                    keys.history,
                    keys.history_staging,
                ],
                [expire_ms, *pairs],
            )
        )

    def _live_reservations(self, layout: SaleLayout, skip: set[int]) -> dict[str, dict[str, int]]:
        """user -> item -> expiry of the reservations the shards not in `skip` hold."""
        live: dict[str, dict[str, int]] = {}
        for shard, keys in enumerate(layout.shards):
            if shard in skip:
                continue
            for item_id, text in self._client.hscan_iter(keys.items, count=1000):
                state = ItemState.decode(text)
                if state.kind == RESERVED:
                    live.setdefault(state.user_id, {})[item_id] = state.at_ms
        return live

    def shard_count(self, sale_id: str) -> int:
        return self.layout(sale_id).k

    def reclaim(self, sale_id: str, now_ms: int, batch: int, shard: int = 0) -> int:
        """Return up to `batch` expired reservations of one shard to stock (reclaim.lua)."""
        keys = self.layout(sale_id).shards[shard]
        return int(
            self._eval(
                "reclaim", [keys.items, keys.reserved, keys.codes, keys.meta], [now_ms, batch]
            )
        )

    def pending_since(self, sale_id: str, before_ms: int) -> list[str]:
        """Codes sold in Redis before `before_ms` and still not confirmed in PostgreSQL."""
        return [
            code
            for keys in self.layout(sale_id).shards
            for code in self._client.zrangebyscore(keys.pending, "-inf", before_ms)
        ]

    def pending(self, sale_id: str) -> dict[str, float]:
        """Every unconfirmed code, with its stamp (the ms it was sold, moved on by retries)."""
        found: dict[str, float] = {}
        for keys in self.layout(sale_id).shards:
            found |= dict(self._client.zrange(keys.pending, 0, -1, withscores=True))
        return found

    def settle_raised(self, sale_id: str, before_ms: int) -> int:
        """Sharded sales: raises of a user's item to bought whose purchase went quiet before
        `before_ms` (a worker died, or its item step came too late to run) end with what the
        item says of the code: sold, reserved until its expiry, or neither. Returns how many
        it ended."""
        layout = self.layout(sale_id)
        if layout.k == 1:
            return 0
        settled = 0
        for keys in layout.shards:
            for note in self._client.zrangebyscore(keys.raising, "-inf", before_ms):
                code, user_id, item_id = note.split(" ")
                item_keys = layout.shards[layout.item_shard(item_id) or 0]
                state = ItemState.decode(self._client.hget(item_keys.items, item_id))
                if state.code != code:
                    score = ""
                elif state.kind == SOLD:
                    score = "inf"
                else:
                    score = str(state.at_ms) if state.kind == RESERVED else ""
                settled += self._end_raise(layout, code, user_id, item_id, score)
        return settled

    def in_flight(self, sale_id: str) -> bool:
        """Whether the sale still has attempts to drain or purchases to settle."""
        layout = self.layout(sale_id)
        pipe = self._client.pipeline(transaction=False)
        for keys in self.outbox_parts_keys(layout):
            pipe.xlen(keys.outbox)
        for keys in layout.shards:
            pipe.zcard(keys.pending)
            pipe.zcard(keys.raising)
        return any(pipe.execute())

    def register_outbox(self, sale_id: str) -> None:
        """Before a sale's outbox gets its first record, the sweep must know it exists. Every
        worker's first requests of a sale ask at once: they share a round-trip."""
        self._execute("SADD", OUTBOX_REGISTRY, sale_id)

    def registered_sales(self) -> set[str]:
        return self._client.smembers(OUTBOX_REGISTRY)

    @staticmethod
    def outbox_parts_keys(layout: SaleLayout) -> list[SaleKeys]:
        """The tags whose outboxes hold a sale's attempts: the home's, then each shard's."""
        return [layout.home] if layout.k == 1 else [layout.home, *layout.shards]

    def outbox_parts(self, sale_id: str) -> range:
        """The sale's outboxes, by number (0 is the home's): one drainer each."""
        return range(len(self.outbox_parts_keys(self.layout(sale_id))))

    def _part(self, sale_id: str, part: int) -> SaleKeys:
        return self.outbox_parts_keys(self.layout(sale_id))[part]

    def forget_outbox(self, sale_id: str) -> bool:
        """Drop a finished sale's outboxes from the registry, if nothing is left in flight."""
        if self.in_flight(sale_id):
            return False
        for keys in self.outbox_parts_keys(self.layout(sale_id)):
            self._client.delete(keys.outbox)
        self._client.srem(OUTBOX_REGISTRY, sale_id)
        return True

    def read_outbox(
        self, sale_id: str, count: int | None = None, part: int | None = None
    ) -> list[OutboxEntry]:
        """The oldest `count` attempts of one of the sale's outboxes (all of them by default,
        of every outbox when `part` is None)."""
        layout = self.layout(sale_id)
        parts = self.outbox_parts_keys(layout)
        chosen = parts if part is None else [parts[part]]
        return [
            outbox_entry(entry_id, fields)
            for keys in chosen
            for entry_id, fields in self._client.xrange(keys.outbox, count=count)
        ]

    def trim_outbox(self, sale_id: str, through: str, part: int = 0) -> None:
        """Remove an outbox's entries up to and including `through` (one short command instead
        of XDEL of a batch's ids; Redis frees whole stream nodes)."""
        keys = self._part(sale_id, part)
        self._client.xtrim(keys.outbox, minid=stream_id_after(through), approximate=False)

    def backlog(self) -> int:
        """Attempts in every registered outbox, not yet in PostgreSQL."""
        sale_ids = self.registered_sales()
        if not sale_ids:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for sale_id in sale_ids:
            for keys in self.outbox_parts_keys(self.layout(sale_id)):
                pipe.xlen(keys.outbox)
        return sum(pipe.execute())
