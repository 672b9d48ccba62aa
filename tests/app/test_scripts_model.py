"""The Lua scripts against a plain-Python model of the sale's rules, step by step.

Hypothesis drives random interleavings of checkout, purchase, confirm, revert, release, reclaim
and clock moves (few users, few items, a small limit) through `Inventory` on a real Redis, and
after every step compares what the scripts answered and hold with what the model says the
contract means.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    initialize,
    invariant,
    multiple,
    rule,
)

from flashsale import domain
from flashsale.domain import Sale
from flashsale.stores.inventory import CheckoutAnswer, PurchaseAnswer
from flashsale.stores.inventory.keys import SaleKeys, keys_for
from tests.support.stores import RedisMachine, no_deadline, run_on_redis

USERS = ("ann", "bob", "cy")
ITEMS = ("1", "2", "3", "4")
LIMIT = 2
TTL_MS = 10_000
PERIOD_S = 60
START_MS = 1_790_000_040_000  # a period boundary of PERIOD_S
END_MS = START_MS + PERIOD_S * 1000


@dataclass(frozen=True)
class Held:
    """An item's state in the model: reserved ("R", until) or sold ("S", at)."""

    kind: str
    at: int
    user: str
    code: str


class SaleModel:
    """The contract's rules for one sale, in plain Python, in its precedence order."""

    def __init__(self, sale_id: str):
        self.sale_id = sale_id
        self.items: dict[str, Held | None] = dict.fromkeys(ITEMS)
        self.codes: dict[str, tuple[str, str, int]] = {}  # code -> (item, user, expires)
        self.again: set[str] = set()  # codes a second checkout of their user answered with
        self.pending: dict[str, int] = {}  # code -> stamp
        self.sold_at: dict[str, int] = {}  # code -> the stamp of the request that sold it
        self.sold = 0
        self.attempts = 0

    def live(self, held: Held | None, now: int) -> bool:
        return held is not None and held.kind == "R" and held.at > now

    def holdings(self, user: str, now: int) -> set[str]:
        """Items bought plus items reserved by unexpired checkouts."""
        return {
            item
            for item, held in self.items.items()
            if held is not None and held.user == user and (held.kind == "S" or held.at > now)
        }

    def reserved(self, now: int) -> int:
        return sum(self.live(held, now) for held in self.items.values())

    def checkout(self, user: str, item: str, now: int, fresh: str) -> CheckoutAnswer:
        self.attempts += 1
        if not START_MS <= now < END_MS:
            return CheckoutAnswer("no_active_sale", "", 0, max(START_MS - now, 0), "")
        if item not in self.items:
            return CheckoutAnswer("item_not_found", "", 0, 0, self.sale_id)
        if self.sold >= len(ITEMS):
            return CheckoutAnswer("sold_out", "", 0, 0, self.sale_id)
        held = self.items[item]
        if self.live(held, now) and held.user == user:
            self.again.add(held.code)
            return CheckoutAnswer("ok", held.code, held.at, 0, self.sale_id)
        if len(self.holdings(user, now)) >= LIMIT:
            return CheckoutAnswer("user_limit_reached", "", 0, 0, self.sale_id)
        if held is not None and (held.kind == "S" or self.live(held, now)):
            return CheckoutAnswer("item_unavailable", "", 0, 0, self.sale_id)
        expires = min(now + TTL_MS, END_MS)
        self.items[item] = Held("R", expires, user, fresh)
        self.codes[fresh] = (item, user, expires)
        return CheckoutAnswer("ok", fresh, expires, 0, self.sale_id)

    def purchase(self, code: str, now: int, requester: str = "") -> PurchaseAnswer:
        if code not in self.codes:
            return PurchaseAnswer("code_not_found")
        item, user, _ = self.codes[code]
        if requester and requester != user:  # identity on: only the holder, expired or not
            return PurchaseAnswer("forbidden")
        held = self.items[item]
        if held is not None and held.kind == "S" and held.code == code:
            if code in self.pending:  # a retry that may commit it: the stamp moves on
                self.pending[code] = max(now, self.pending[code] + 1)
            return PurchaseAnswer("repeat", item, user, held.at, self.sale_id)
        if not self.live(held, now) or held.code != code or now >= END_MS:
            return PurchaseAnswer("code_expired")
        self.items[item] = Held("S", now, user, code)
        self.sold += 1
        self.pending[code] = self.sold_at[code] = now
        return PurchaseAnswer("sold", item, user, now, self.sale_id)

    def confirm(self, code: str) -> None:
        self.pending.pop(code, None)

    def revert(self, code: str, stamp: int) -> int:
        """PostgreSQL surely did not take the purchase: the request that sold it puts it back
        to the reservation it was, unless a retry touched it since."""
        if self.pending.get(code) != stamp:
            return 0
        del self.pending[code]
        item, user, expires = self.codes[code]
        self.items[item] = Held("R", expires, user, code)
        self.sold -= 1
        return 1

    def release(self, code: str) -> int:
        """Nobody was told of the reservation, or PostgreSQL voided the purchase: the item is
        free, the code gone (reserved) or expired (sold)."""
        if code not in self.codes:
            return 0
        item, user, _ = self.codes[code]
        held = self.items[item]
        if held is None or held.code != code:
            return 0
        if held.kind == "R":
            if code in self.again:
                return 0
            del self.codes[code]
        else:
            if code not in self.pending:
                return 0
            del self.pending[code]
            self.sold -= 1
            self.codes[code] = (item, user, 0)
        self.items[item] = None
        return 1

    def reclaim(self, now: int) -> int:
        expired = [
            item
            for item, held in self.items.items()
            if held is not None and held.kind == "R" and held.at <= now
        ]
        for item in expired:
            self.items[item] = None
        return len(expired)


class ScriptsMachine(RedisMachine):
    codes = Bundle("codes")

    def __init__(self) -> None:
        super().__init__()
        sale_id = domain.sale_id_for(START_MS // 1000, PERIOD_S)
        self.sale_id = sale_id
        self.attempts = 0
        self.keys: SaleKeys = keys_for(sale_id)
        self.model = SaleModel(sale_id)
        self.now = START_MS
        self.load(Sale(sale_id, START_MS // 1000, END_MS // 1000, len(ITEMS), LIMIT, "model"))

    # --- rules ----------------------------------------------------------------------------

    @initialize(offset=st.sampled_from([0, 0, 0, -1, -1500]))
    def start_clock(self, offset: int) -> None:
        """Mostly from the sale's start; sometimes a moment before it opens."""
        self.now = START_MS + offset

    @rule(target=codes, user=st.sampled_from(USERS), item=st.sampled_from((*ITEMS, "9")))
    def checkout(self, user: str, item: str):
        fresh = domain.new_code(self.model.sale_id)
        got = self.inventory.checkout(
            self.sale_id,
            user,
            item,
            now_ms=self.now,
            ttl_ms=TTL_MS,
            fresh_code=fresh,
            user_rate=0,
            ip_rate=0,
            client_ip="",
            attempt_key=f"attempt-{self.attempts}",
            deadline_ms=no_deadline(),
        )
        expected = self.model.checkout(user, item, self.now, fresh)
        assert got == expected
        # The attempt went to the outbox in the same step, with what the client was told.
        ((_, fields),) = self.client.xrevrange(self.keys.outbox, count=1)
        assert fields == {
            "k": f"attempt-{self.attempts}",
            "s": expected.sale_id,
            "u": user,
            "i": item,
            "o": expected.outcome,
            "c": expected.code,
            "t": str(self.now),
        }
        self.attempts += 1
        return expected.code if expected.outcome == "ok" else multiple()

    @rule(code=codes, requester=st.sampled_from(("", "", *USERS)))
    def purchase(self, code: str, requester: str) -> None:
        """`requester` "": identity off; else the authenticated user."""
        got = self.inventory.purchase(
            self.sale_id,
            code,
            now_ms=self.now,
            user_rate=0,
            ip_rate=0,
            client_ip="",
            deadline_ms=no_deadline(),
            requester=requester,
        )
        assert got == self.model.purchase(code, self.now, requester)

    @rule(token=st.sampled_from(["A" * 22, "never-issued"]))
    def purchase_unknown(self, token: str) -> None:
        code = f"{self.model.sale_id}.{token}"
        got = self.inventory.purchase(
            self.sale_id,
            code,
            now_ms=self.now,
            user_rate=0,
            ip_rate=0,
            client_ip="",
            deadline_ms=no_deadline(),
        )
        assert got == self.model.purchase(code, self.now) == PurchaseAnswer("code_not_found")

    @rule(code=codes)
    def confirm(self, code: str) -> None:
        """PostgreSQL stored the purchase."""
        self.inventory.confirm(self.sale_id, code)
        self.model.confirm(code)

    @rule(code=codes)
    def revert(self, code: str) -> None:
        """The request that sold it heard PostgreSQL surely did not store it."""
        stamp = self.model.sold_at.get(code, 0)
        assert int(self.inventory.revert(self.sale_id, code, stamp)) == self.model.revert(
            code, stamp
        )

    @rule(code=codes)
    def release(self, code: str) -> None:
        """Nobody was told of it (its request was answered `unavailable`), or voided."""
        assert int(self.inventory.release(self.sale_id, code)) == self.model.release(code)

    @rule(
        ms=st.one_of(
            st.sampled_from([1, TTL_MS - 1, TTL_MS, TTL_MS + 1]), st.integers(0, 3 * TTL_MS)
        )
    )
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule()
    def reclaim(self) -> None:
        assert self.inventory.reclaim(self.sale_id, self.now, 2) + self.inventory.reclaim(
            self.sale_id, self.now, 1000
        ) == self.model.reclaim(self.now)

    # --- after every step -----------------------------------------------------------------

    @invariant()
    def figures_agree(self) -> None:
        figures = self.inventory.figures(self.sale_id, self.now)
        assert figures is not None
        assert figures.sold == self.model.sold
        assert figures.reserved == self.model.reserved(self.now)
        assert figures.backlog == self.model.attempts
        pending = dict(self.client.zrange(self.keys.pending, 0, -1, withscores=True))
        assert pending == self.model.pending

    @invariant()
    def holdings_agree(self) -> None:
        for user in USERS:
            held = self.client.zrangebyscore(self.keys.user(user), f"({self.now}", "+inf")
            assert set(held) == self.model.holdings(user, self.now), user
            assert len(held) <= LIMIT

    @invariant()
    def nothing_sold_twice(self) -> None:
        states = self.client.hgetall(self.keys.items)
        sold = [state for state in states.values() if state.startswith("S ")]
        assert len(sold) == self.model.sold <= len(ITEMS)
        assert len({state.split()[3] for state in sold}) == len(sold)


@pytest.mark.timeout(240)
def test_scripts_follow_the_model(redis_url: str) -> None:
    run_on_redis(ScriptsMachine, redis_url, max_examples=100)
