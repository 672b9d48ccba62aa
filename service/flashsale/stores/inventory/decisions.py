"""The gateway's decisions: checkout, purchase and what follows a purchase (confirm, revert,
release, adopt), one script on one tag, or the steps of a sharded sale (docs/scaling.md)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from flashsale.domain import Purchase
from flashsale.stores.inventory.answers import (
    CheckoutAnswer,
    PurchaseAnswer,
)
from flashsale.stores.inventory.base import (
    InventoryBase,
    code_shards,
)
from flashsale.stores.inventory.codec import Claim
from flashsale.stores.inventory.keys import SaleKeys, SaleLayout, keys_for

_MISSING = "\0"  # record_attempt.lua's stand-in for a parameter the request did not have


@dataclass(frozen=True)
class _Checkout:
    """One checkout's arguments, as every step of it passes them on."""

    sale_id: str
    user_id: str
    item_id: str
    now_ms: int
    ttl_ms: int
    code: str
    user_rate: float
    ip_rate: float
    client_ip: str
    attempt_key: str
    deadline_ms: int
    seen_open: str  # the sale's id if the caller saw it open, else ''


class Decisions(InventoryBase):
    """Each decision is a script; on a sharded sale, the steps in the order that over-counts
    first and never compensates on a timeout."""

    def checkout(
        self,
        sale_id: str,
        user_id: str,
        item_id: str,
        *,
        now_ms: int,
        ttl_ms: int,
        fresh_code: str,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        attempt_key: str,
        deadline_ms: int,
        seen_open: bool = False,
    ) -> CheckoutAnswer:
        """Decide and record one checkout, as the attempt `attempt_key`, unless Redis's clock is
        past `deadline_ms` when it runs (outcome `late`: nothing recorded; on a sharded sale the
        user's step may have taken a limit token already, which expires).
        `seen_open`: the caller saw the sale open, so its absence means Redis lost it."""
        ask = _Checkout(
            sale_id,
            user_id,
            item_id,
            now_ms,
            ttl_ms,
            fresh_code,
            user_rate,
            ip_rate if client_ip else 0,
            client_ip,
            attempt_key,
            deadline_ms,
            sale_id if seen_open else "",
        )
        layout = self._sharded(sale_id)
        if layout is None:
            answer, _ = self._checkout_script(keys_for(sale_id), ask, others_sold_out=True)
            if answer.outcome != "sharded":
                return answer
            layout = self.layout(sale_id)
        return self._checkout_sharded(layout, ask)

    def _checkout_script(
        self, keys: SaleKeys, ask: _Checkout, *, others_sold_out: bool
    ) -> tuple[CheckoutAnswer, bool]:
        """checkout.lua on one tag: (its answer, whether that tag's items are sold out)."""
        outcome, code, expires, retry_ms, filed_under, sold_out = self._eval(
            "checkout",
            [
                keys.meta,
                keys.items,
                keys.codes,
                keys.reserved,
                keys.user(ask.user_id),
                keys.outbox,
                keys.user_bucket(ask.user_id),
                keys.ip_bucket(ask.client_ip),
            ],
            [
                ask.user_id,
                ask.item_id,
                ask.now_ms,
                ask.ttl_ms,
                ask.code,
                ask.user_rate,
                ask.ip_rate,
                ask.seen_open,
                ask.attempt_key,
                ask.deadline_ms,
                "1" if others_sold_out else "",
            ],
        )
        answer = CheckoutAnswer(outcome, code, int(expires), int(retry_ms), filed_under)
        return answer, bool(int(sold_out))

    def _checkout_sharded(self, layout: SaleLayout, ask: _Checkout) -> CheckoutAnswer:
        """A checkout of a sharded sale: one script when the user lives on the item's shard,
        else the user's step, then the item's (docs/scaling.md)."""
        item_shard = layout.item_shard(ask.item_id)
        user_shard = layout.user_shard(ask.user_id)
        token = ask.code.rpartition(".")[2]
        shards = f"{user_shard if item_shard is None else item_shard}.{user_shard}"
        ask = replace(ask, code=f"{ask.sale_id}.{shards}.{token}")
        if ask.ip_rate:  # the address's bucket lives on its own shard: spend it first
            wait = self._take_address_token(layout, ask.client_ip, ask.ip_rate, ask.now_ms)
            if wait:
                return self._checkout_refused(ask, "rate_limited", wait)
            ask = replace(ask, ip_rate=0)
        if item_shard == user_shard:
            others = self._all_sold_out(layout, but=item_shard)
            keys = layout.shards[item_shard]
            answer, sold_out = self._checkout_script(keys, ask, others_sold_out=others)
            self._heard(layout, item_shard, sold_out)
            return answer

        user_keys = layout.shards[user_shard]
        step, expires, retry_ms, filed_under = self._eval(
            "checkout_user",
            [
                user_keys.meta,
                user_keys.user(ask.user_id),
                user_keys.outbox,
                user_keys.user_bucket(ask.user_id),
                user_keys.raises,
            ],
            [
                ask.user_id,
                ask.item_id,
                ask.now_ms,
                ask.ttl_ms,
                ask.user_rate,
                ask.seen_open,
                ask.attempt_key,
                ask.deadline_ms,
                "" if item_shard is None else "1",
                "1" if self._all_sold_out(layout) else "",
            ],
        )
        if step not in ("token", "held"):  # refused and recorded there, or late
            return CheckoutAnswer(step, "", 0, int(retry_ms), filed_under)
        assert item_shard is not None  # the user step refuses an item of no shard
        item_keys = layout.shards[item_shard]
        outcome, code, until, sold_out = self._eval(
            "checkout_item",
            [
                item_keys.meta,
                item_keys.items,
                item_keys.codes,
                item_keys.reserved,
                item_keys.outbox,
            ],
            [
                ask.user_id,
                ask.item_id,
                ask.now_ms,
                expires,
                ask.code,
                ask.attempt_key,
                ask.deadline_ms,
                "1" if self._all_sold_out(layout, but=item_shard) else "",
            ],
        )
        self._heard(layout, item_shard, sold_out)
        if outcome not in ("ok", "late") and step == "token":
            # A definite refusal: the token this checkout took goes (unless it changed since).
            with contextlib.suppress(RedisError):  # else it expires with `expires`
                self._set_token(layout, ask.user_id, ask.item_id, "", expected=expires)
        return CheckoutAnswer(outcome, code, int(until), 0, filed_under)

    def _checkout_refused(self, ask: _Checkout, outcome: str, retry_ms: int) -> CheckoutAnswer:
        """A refusal the pod decided (the address's bucket was empty), recorded in the user's
        shard's outbox (record_attempt picks it from the sale's kept layout)."""
        self.record_attempt(
            ask.sale_id,
            outcome,
            now_ms=ask.now_ms,
            user_id=ask.user_id,
            item_id=ask.item_id,
            attempt_key=ask.attempt_key,
        )
        return CheckoutAnswer(outcome, "", 0, retry_ms, ask.sale_id)

    def take_address_token(self, sale_id: str, client_ip: str, *, rate: float, now_ms: int) -> int:
        """0 when a request from this address may pass, else the ms until one may (see
        rate_limit.lua). The bucket is the one checkout and purchase spend from."""
        return self._take_address_token(self.layout(sale_id), client_ip, rate, now_ms)

    def purchase(
        self,
        sale_id: str,
        code: str,
        *,
        now_ms: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        deadline_ms: int,
        requester: str = "",
    ) -> PurchaseAnswer:
        """Turn the code's reservation into a sale, pending until PostgreSQL has it, unless
        Redis's clock is past `deadline_ms` when it runs (answer `late`). With a `requester`
        (identity on), only the code's holder may: `forbidden` for anyone else."""
        ip_rate = ip_rate if client_ip else 0
        layout = self._sharded(sale_id)
        if layout is None:
            keys = keys_for(sale_id)
            answer = self._purchase_script(
                keys,
                code,
                now_ms,
                user_rate,
                ip_rate,
                client_ip,
                deadline_ms,
                requester,
                user_here=True,
            )
            if answer.kind != "sharded":
                return answer
            layout = self.layout(sale_id)
        return self._purchase_sharded(
            layout, code, now_ms, user_rate, ip_rate, client_ip, deadline_ms, requester
        )

    def _purchase_sharded(
        self,
        layout: SaleLayout,
        code: str,
        now_ms: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        deadline_ms: int,
        requester: str,
    ) -> PurchaseAnswer:
        """A purchase of a sharded sale: the code's claim first (its user, whether it is the
        requester's), the address's bucket on its own shard, then one script when the user lives
        on the item's shard, else the user's step (raise to bought), then the item's."""
        shards = code_shards(code)
        claim = None
        if shards is not None and max(shards) < layout.k:
            item_keys = layout.shards[shards[0]]
            claim = self._execute("HGET", item_keys.codes, code)
            if claim is None and not self._execute("EXISTS", item_keys.meta):
                return PurchaseAnswer("sale_missing")  # its node lost the shard
        wait = self._take_address_token(layout, client_ip, ip_rate, now_ms) if ip_rate else 0
        if claim is None or shards is None:
            return (
                PurchaseAnswer("rate_limited", retry_ms=wait)
                if wait
                else PurchaseAnswer("code_not_found")
            )
        item_id, user_id, _, _ = Claim.decode(claim)
        if layout.user_shard(user_id) != shards[1]:
            return PurchaseAnswer("code_not_found")  # a made-up code
        if requester and requester != user_id:
            return PurchaseAnswer("forbidden")  # before any rate limit, as the table says
        if wait:
            return PurchaseAnswer("rate_limited", retry_ms=wait)
        item_shard, user_shard = shards
        item_keys = layout.shards[item_shard]
        if item_shard == user_shard:
            return self._purchase_script(
                item_keys,
                code,
                now_ms,
                user_rate,
                0,
                client_ip,
                deadline_ms,
                requester,
                user_here=True,
                heard=(layout, item_shard),
            )
        step = self._raise(layout, code, user_id, item_id, now_ms, user_rate, deadline_ms)
        if step is not None:
            return step
        return self._sell_raised(
            layout, item_shard, code, user_id, item_id, now_ms, client_ip, deadline_ms, requester
        )

    def _raise(
        self,
        layout: SaleLayout,
        code: str,
        user_id: str,
        item_id: str,
        now_ms: int,
        user_rate: float,
        deadline_ms: int,
    ) -> PurchaseAnswer | None:
        """The user's step of a purchase across shards (purchase_user.lua): the user's bucket,
        then the item raised to bought in the user's set. None when it was raised."""
        keys = layout.shards[layout.user_shard(user_id)]
        step = self._eval(
            "purchase_user",
            [
                keys.user(user_id),
                keys.user_bucket(user_id),
                keys.raising,
                keys.raises,
            ],
            [code, item_id, now_ms, user_rate, deadline_ms, user_id],
        )
        if step == "late":
            return PurchaseAnswer("late")
        if step != "raised":
            return PurchaseAnswer("rate_limited", retry_ms=int(step[1]))
        return None

    def _sell_raised(
        self,
        layout: SaleLayout,
        item_shard: int,
        code: str,
        user_id: str,
        item_id: str,
        now_ms: int,
        client_ip: str,
        deadline_ms: int,
        requester: str,
    ) -> PurchaseAnswer:
        """The item's step of a purchase across shards (purchase.lua), then the end of the
        user's raise with its answer; on `late` the sweeper ends it."""
        answer = self._purchase_script(
            layout.shards[item_shard],
            code,
            now_ms,
            0,
            0,
            client_ip,
            deadline_ms,
            requester,
            user_here=False,
            heard=(layout, item_shard),
        )
        if answer.kind != "late":
            score = "inf" if answer.kind in ("sold", "repeat") else ""
            with contextlib.suppress(RedisError):  # else the sweeper ends it
                self._end_raise(layout, code, user_id, item_id, score)
        return answer

    def _purchase_script(
        self,
        keys: SaleKeys,
        code: str,
        now_ms: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        deadline_ms: int,
        requester: str,
        *,
        user_here: bool,
        heard: tuple[SaleLayout, int] | None = None,
    ) -> PurchaseAnswer:
        """purchase.lua on one tag; `user_here`: the buyer's set and bucket live on it too;
        `heard`: (layout, shard) of a sharded sale, whose sold-out the reply tells."""
        answer = self._eval(
            "purchase",
            [
                keys.meta,
                keys.items,
                keys.codes,
                keys.reserved,
                keys.pending,
                keys.ip_bucket(client_ip),
                keys.history,
            ],
            [
                code,
                now_ms,
                user_rate,
                ip_rate,
                keys.user_prefix if user_here else "",
                keys.user_bucket_prefix if user_here else "",
                deadline_ms,
                requester,
            ],
        )
        kind = answer[0]
        if kind == "rate_limited":
            return PurchaseAnswer(kind, retry_ms=int(answer[1]))
        if kind in ("sold", "repeat"):
            item_id, user_id, at_ms, sold_in = answer[1:5]
            if kind == "sold" and heard is not None:
                self._heard(heard[0], heard[1], answer[5])
            return PurchaseAnswer(kind, item_id, user_id, int(at_ms), sold_in)
        return PurchaseAnswer(kind)

    def confirm(self, sale_id: str, code: str) -> None:
        """PostgreSQL holds the purchase: it is no longer pending."""
        layout = self._sharded(sale_id)
        shards = code_shards(code) if layout is not None else None
        if layout is None or shards is None:
            self._execute("ZREM", keys_for(sale_id).pending, code)
            return
        self._execute("ZREM", layout.shards[shards[0]].pending, code)

    def revert(self, sale_id: str, code: str, stamp: int) -> bool:
        """The request that sold a purchase undoes it (PostgreSQL surely did not record it),
        unless a retry touched it since (revert.lua). Returns whether it did."""
        layout, keys, claim, user_here = self._code_layout(sale_id, code)
        reverted = bool(
            self._eval(
                "revert",
                [keys.meta, keys.items, keys.codes, keys.reserved, keys.pending, keys.history],
                [code, keys.user_prefix if user_here else "", stamp],
            )
        )
        if reverted and not user_here:
            assert claim is not None
            self._set_token(
                layout,
                claim.user_id,
                claim.item_id,
                str(claim.expires_ms),
                expected="inf",
            )
        return reverted

    def release(self, sale_id: str, code: str) -> bool:
        """The code's hold on its item goes: a reservation nobody was told of, or a purchase
        voided in PostgreSQL (release.lua). Returns whether it did."""
        layout, keys, claim, user_here = self._code_layout(sale_id, code)
        user_id = self._eval(
            "release",
            [keys.meta, keys.items, keys.codes, keys.reserved, keys.pending, keys.history],
            [code, keys.user_prefix if user_here else ""],
        )
        if user_id and not user_here:
            assert claim is not None
            self._set_token(layout, claim.user_id, claim.item_id, "")
        return bool(user_id)

    def adopt(self, sale_id: str, lost_code: str, stored: Purchase) -> bool:
        """Make Redis hold the purchase PostgreSQL has for the item (see adopt.lua)."""
        layout = self.layout(sale_id)
        shard = layout.item_shard(stored.item_id) or 0
        keys = layout.shards[shard]
        holder = self._eval(
            "adopt",
            [keys.items, keys.codes, keys.pending],
            [
                lost_code,
                stored.code,
                stored.item_id,
                stored.user_id,
                stored.purchased_ms,
                keys.user_prefix if layout.k == 1 else "",
            ],
        )
        if holder and layout.k > 1:
            self._set_token(layout, holder, stored.item_id, "")
            self._set_token(layout, stored.user_id, stored.item_id, "inf")
        return bool(holder)

    def record_attempt(
        self,
        sale_id: str,
        outcome: str,
        *,
        now_ms: int,
        user_id: str | None,
        item_id: str | None,
        attempt_key: str,
    ) -> None:
        """Record an attempt decided before checkout.lua could run (record_attempt.lua), in the
        outbox of the user's shard (or the home one)."""
        layout = self.layout(sale_id)
        keys = layout.home
        if layout.k > 1 and user_id is not None:
            keys = layout.shards[layout.user_shard(user_id)]
        self._eval(
            "record_attempt",
            [keys.meta, keys.outbox],
            [
                outcome,
                now_ms,
                _MISSING if user_id is None else user_id,
                _MISSING if item_id is None else item_id,
                attempt_key,
            ],
        )
