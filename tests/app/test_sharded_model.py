"""The protocol of a sale over K shards against the contract's invariants, with crash points.

Hypothesis drives checkouts, purchases, their confirmations, reverts and releases, the sweeper
and the clock through `Inventory` on a real Redis, with the sale over three shards. Between the
two steps of a checkout a worker may die; a purchase across shards runs as its two steps with
any rule in between (a raise never sold is a worker that died). After every step: no user holds
more than the limit, every item a user holds is counted by the user's limit (over-count first:
never the other way round), every open raise is counted, and nothing is sold twice.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    consumes,
    invariant,
    multiple,
    rule,
)

from flashsale import domain
from flashsale.domain import Sale
from flashsale.stores.inventory.codec import RESERVED, SOLD, ItemState
from flashsale.stores.inventory.keys import SaleLayout
from tests.support.stores import RedisMachine, no_deadline, run_on_redis

USERS = ("ann", "bob", "cy", "dee")
ITEMS = tuple(str(n) for n in range(1, 10))
LIMIT = 2
TTL_MS = 10_000
PERIOD_S = 60
START_MS = 1_790_000_040_000
TAGS = ("0", "1", "2")


class ShardedMachine(RedisMachine):
    codes = Bundle("codes")
    raised = Bundle("raised")  # purchases across shards between their two steps

    def __init__(self) -> None:
        super().__init__()
        self.sale_id = domain.sale_id_for(START_MS // 1000, PERIOD_S)
        self.load(
            Sale(self.sale_id, START_MS // 1000, START_MS // 1000 + PERIOD_S, 9, LIMIT, "m", TAGS)
        )
        self.layout = SaleLayout(self.sale_id, len(ITEMS), TAGS)
        self.now = START_MS
        self.stamps: dict[str, int] = {}  # code -> the stamp of the request that sold it
        self.attempts = 0

    def _key(self) -> str:
        self.attempts += 1
        return f"a{self.attempts}"

    # --- rules ----------------------------------------------------------------------------

    @rule(target=codes, user=st.sampled_from(USERS), item=st.sampled_from(ITEMS))
    def checkout(self, user: str, item: str):
        answer = self.inventory.checkout(
            self.sale_id,
            user,
            item,
            now_ms=self.now,
            ttl_ms=TTL_MS,
            fresh_code=domain.new_code(self.sale_id),
            user_rate=0,
            ip_rate=0,
            client_ip="",
            attempt_key=self._key(),
            deadline_ms=no_deadline(),
        )
        return answer.code if answer.outcome == "ok" else multiple()

    @rule(user=st.sampled_from(USERS), item=st.sampled_from(ITEMS))
    def checkout_dies_after_the_user_step(self, user: str, item: str) -> None:
        """The worker took the user's token and died before the item step."""
        keys = self.layout.shards[self.layout.user_shard(user)]
        self.inventory._eval(
            "checkout_user",
            [
                keys.meta,
                keys.user(user),
                keys.outbox,
                keys.user_bucket(user),
                keys.raises,
            ],
            [user, item, self.now, TTL_MS, 0, "", self._key(), no_deadline(), "1", ""],
        )

    @rule(code=codes)
    def purchase(self, code: str) -> None:
        answer = self.inventory.purchase(
            self.sale_id,
            code,
            now_ms=self.now,
            user_rate=0,
            ip_rate=0,
            client_ip="",
            deadline_ms=no_deadline(),
        )
        if answer.kind == "sold":
            self.stamps[code] = answer.at_ms

    @rule(target=raised, code=codes)
    def purchase_raises(self, code: str):
        """The user's step of a purchase across shards, its item's step left for later: any
        rule may run in between, as another worker's would."""
        claim = self._claim(code)
        if claim is None or self._shards(code)[0] == self._shards(code)[1]:
            return multiple()
        item, user = claim
        step = self.inventory._raise(self.layout, code, user, item, self.now, 0, no_deadline())
        return multiple() if step is not None else (code, user, item)

    @rule(raise_=consumes(raised))
    def purchase_sells_raised(self, raise_: tuple[str, str, str]) -> None:
        """The item's step of a purchase raised earlier, and the end of its raise."""
        code, user, item = raise_
        keys = self.layout.shards[self._shards(code)[1]]
        if self.client.zscore(keys.raising, f"{code} {user} {item}") is None:
            # The sweeper ended it: it does so only past the grace, past the purchase's
            # deadline, so the item step would have answered `late`.
            return
        answer = self.inventory._sell_raised(
            self.layout, self._shards(code)[0], code, user, item, self.now, "", no_deadline(), ""
        )
        if answer.kind == "sold":
            self.stamps[code] = answer.at_ms

    # A raise never consumed is a worker that died after the user's step: the sweeper ends it.

    def _shards(self, code: str) -> tuple[int, int]:
        item_shard, user_shard = (int(part) for part in code.split(".")[1:3])
        return item_shard, user_shard

    def _claim(self, code: str) -> tuple[str, str] | None:
        claim = self.client.hget(self.layout.shards[self._shards(code)[0]].codes, code)
        if claim is None:
            return None
        item, user = claim.split(" ")[:2]
        return item, user

    @rule(code=codes)
    def confirm(self, code: str) -> None:
        self.inventory.confirm(self.sale_id, code)

    @rule(code=codes)
    def revert(self, code: str) -> None:
        self.inventory.revert(self.sale_id, code, self.stamps.get(code, 0))

    @rule(code=codes)
    def release(self, code: str) -> None:
        self.inventory.release(self.sale_id, code)

    @rule(ms=st.sampled_from([1, TTL_MS - 1, TTL_MS + 1, 3 * TTL_MS]))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def sweep(self) -> None:
        """The sweeper's tidying: expired reservations, and notes of purchases a worker left."""
        for shard in range(len(TAGS)):
            self.inventory.reclaim(self.sale_id, self.now, 1000, shard)
        self.inventory.settle_raised(self.sale_id, self.now)

    # --- after every step -----------------------------------------------------------------

    def _holdings(self) -> dict[str, dict[str, float]]:
        """user -> item -> what the items say: +inf bought, or the reservation's expiry."""
        held: dict[str, dict[str, float]] = {}
        for keys in self.layout.shards:
            for item, text in self.client.hgetall(keys.items).items():
                state = ItemState.decode(text)
                if state.kind == SOLD:
                    held.setdefault(state.user_id, {})[item] = float("inf")
                elif state.kind == RESERVED and state.at_ms > self.now:
                    held.setdefault(state.user_id, {})[item] = state.at_ms
        return held

    @invariant()
    def the_limit_counts_every_item_held(self) -> None:
        for user, items in self._holdings().items():
            assert len(items) <= LIMIT, (user, items)
            keys = self.layout.shards[self.layout.user_shard(user)]
            tokens = dict(self.client.zrange(keys.user(user), 0, -1, withscores=True))
            for item, until in items.items():
                assert tokens.get(item, 0) >= until, (user, item, until, tokens)

    @invariant()
    def every_open_raise_is_counted(self) -> None:
        for keys in self.layout.shards:
            notes: dict[str, int] = {}
            for note in self.client.zrange(keys.raising, 0, -1):
                field = note.split(" ", 1)[1]
                notes[field] = notes.get(field, 0) + 1
            counts = {
                field: int(record.split(" ")[0])
                for field, record in self.client.hgetall(keys.raises).items()
            }
            assert notes == counts

    @invariant()
    def nothing_is_sold_twice(self) -> None:
        for keys in self.layout.shards:
            states = [ItemState.decode(t) for t in self.client.hvals(keys.items)]
            sold = [state for state in states if state.kind == SOLD]
            assert len({state.code for state in sold}) == len(sold)
            assert int(self.client.hget(keys.meta, "sold")) == len(sold)


@pytest.mark.timeout(300)
def test_the_sharded_protocol_keeps_the_invariants(redis_url: str) -> None:
    run_on_redis(ShardedMachine, redis_url, max_examples=120)
