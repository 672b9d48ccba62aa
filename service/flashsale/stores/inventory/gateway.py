"""The live sale in Redis: the one class that speaks Redis, with a named method for each thing
the service, the jobs and the audit need and a typed answer for each (answers.py).

Every decision is one Lua script run by SHA (`scripts/`); the few plain commands here only read,
tidy or move records. Key names and where a sale's data lives are in keys.py, the item-state
encoding in codec.py. A sale over K shards (docs/scaling.md) is decided in two steps when the
user's shard is not the item's; this class keeps that out of its callers' sight.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError, NoScriptError, RedisError

from flashsale.domain import Purchase, Sale
from flashsale.stores.inventory.answers import (
    CheckoutAnswer,
    ItemStock,
    OutboxEntry,
    PurchaseAnswer,
    QueueLength,
    QueuePlace,
    SaleFigures,
    outbox_entry,
    queue_place,
)
from flashsale.stores.inventory.batching import Batcher, under_gevent
from flashsale.stores.inventory.cluster import LazyCluster, NodeBatchers, is_cluster, shard_tags
from flashsale.stores.inventory.codec import RESERVED, SOLD, Claim, ItemState, history_bucket
from flashsale.stores.inventory.keys import OUTBOX_REGISTRY, SaleKeys, SaleLayout, keys_for

# What a failing or absent Redis raises; callers turn it into 503 `unavailable`.
InventoryError = RedisError

_SCRIPTS = (
    "checkout",
    "checkout_user",
    "checkout_item",
    "purchase",
    "purchase_user",
    "set_token",
    "revert",
    "release",
    "adopt",
    "record_attempt",
    "status",
    "reclaim",
    "publish",
    "rate_limit",
    "queue_join",
    "queue_ticket",
    "queue_length",
)
_REQUIRES = re.compile(r"^-- requires: (.+)$", re.MULTILINE)
_CHUNK = 1000  # fields per command when a sale is loaded
_MISSING = "\0"  # record_attempt.lua's stand-in for a parameter the request did not have
# How long a pod trusts what it heard about a shard being sold out (it can go back, rarely: a
# purchase voided past the grace frees its item).
_SOLD_OUT_FOR = 1.0


@cache
def _script_text(name: str) -> str:
    """The script with the libraries its `-- requires:` line names prepended."""
    folder = resources.files("flashsale.stores.inventory") / "scripts"
    text = (folder / f"{name}.lua").read_text()
    match = _REQUIRES.search(text)
    libraries = match.group(1).split() if match else []
    return "\n".join([*((folder / f"{lib}.lua").read_text() for lib in libraries), text])


class _Script:
    """A script's text and the SHA1 Redis knows it by."""

    def __init__(self, text: str):
        self.script = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis's own name


def _stream_id_after(entry_id: str) -> str:
    """The stream id right after `entry_id`: trimming below it removes exactly the entries up
    to it, as XADD only appends ids above the stream's last one."""
    millis, sequence = entry_id.split("-")
    if int(sequence) == 2**64 - 1:  # the last id of its millisecond
        return f"{int(millis) + 1}-0"
    return f"{millis}-{int(sequence) + 1}"


_SHARDED_CODE = re.compile(r"[^.]+\.(\d{1,4})\.(\d{1,4})\.[^.]+", re.ASCII)


def _code_shards(code: str) -> tuple[int, int] | None:
    """(item shard, user shard) named by a code of a sharded sale
    (`<sale_id>.<item shard>.<user shard>.<random>`), or None."""
    match = _SHARDED_CODE.fullmatch(code)
    return (int(match[1]), int(match[2])) if match else None


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


class Inventory:
    """Typed calls to the sales' scripts and keys. Holds the client, the scripts, the layouts
    of the sales it met (they never change) and, in a gevent worker, the Batchers that send the
    hot-path calls (one per Cluster node)."""

    def __init__(self, client: redis.Redis | RedisCluster | LazyCluster):
        self._client: Any = client
        self._cluster = is_cluster(client)
        self._scripts = {name: _Script(_script_text(name)) for name in _SCRIPTS}
        # In a gevent worker, concurrent calls share round-trips (see batching.py); on a
        # cluster, those to one node.
        self._execute: Callable[..., Any]
        if under_gevent():
            batcher = NodeBatchers(client) if self._cluster else Batcher(client)
            self._execute = batcher.execute_command
        elif self._cluster:  # made on first use: see LazyCluster
            self._execute = lambda *command: client.execute_command(*command)
        else:
            self._execute = client.execute_command
        self._layouts: dict[str, SaleLayout] = {}
        # (sale, shard) -> (sold out?, when heard)
        self._sold_out: dict[tuple[str, int], tuple[bool, float]] = {}

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except RedisError:
            return False

    def load_scripts(self) -> None:
        """Load every script now, rather than on its first call (a fresh Redis answers that
        first call NOSCRIPT, and it is sent again with the script)."""
        for script in self._scripts.values():
            for server in self._servers():
                server.script_load(script.script)

    def _servers(self, key: str | None = None) -> list[redis.Redis]:
        """The server that holds `key`, or every primary (a single Redis: the client)."""
        if not self._cluster:
            return [self._client]
        nodes = [self._client.get_node_from_key(key)] if key else self._client.get_primaries()
        return [self._client.get_redis_connection(node) for node in nodes]

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA; a Redis that restarted and forgot the script gets it loaded again."""
        script = self._scripts[name]
        try:
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._servers(keys[0])[0].script_load(script.script)
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)

    # --- layouts ----------------------------------------------------------------------------

    def shard_tags(self, sale_id: str, shards: int) -> tuple[str, ...]:
        """The hash tags a sale opened now over `shards` shards gets (docs/scaling.md)."""
        return shard_tags(self._client, sale_id, shards)

    def layout(self, sale_id: str) -> SaleLayout:
        """Where the sale's data lives, read once from its home meta and kept. A sale Redis does
        not hold (yet) gets the one-tag layout, not kept."""
        layout = self._layouts.get(sale_id)
        if layout is not None:
            return layout
        total, tags = self._client.hmget(keys_for(sale_id).meta, "total", "tags")
        if total is None:
            return SaleLayout(sale_id, 0)
        layout = SaleLayout(sale_id, int(total), tuple(tags.split(",")) if tags else ())
        if len(self._layouts) > 64:
            self._layouts.clear()
        self._layouts[sale_id] = layout
        return layout

    def _sharded(self, sale_id: str) -> SaleLayout | None:
        """The layout of a sale known to be sharded; None for any other (its calls go to the
        home tag, whose scripts answer `sharded` for a sharded sale, once per worker)."""
        layout = self._layouts.get(sale_id)
        return layout if layout is not None and layout.k > 1 else None

    def _heard(self, layout: SaleLayout, shard: int, sold_out: Any) -> None:
        self._sold_out[(layout.sale_id, shard)] = (bool(int(sold_out)), time.monotonic())

    def _all_sold_out(self, layout: SaleLayout, but: int | None = None) -> bool:
        """Whether every shard of the sale (but `but`) is sold out, as heard within the last
        second: from the replies of its scripts, else read again (one read a second a shard at
        most)."""
        now = time.monotonic()
        for shard in range(layout.k):
            if shard == but:
                continue
            heard = self._sold_out.get((layout.sale_id, shard))
            if heard is None or now - heard[1] >= _SOLD_OUT_FOR:
                total, sold = self._execute("HMGET", layout.shards[shard].meta, "total", "sold")
                self._heard(layout, shard, total is not None and int(sold) >= int(total))
                heard = self._sold_out[(layout.sale_id, shard)]
            if not heard[0]:
                return False
        return True

    # --- the hot path -----------------------------------------------------------------------

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
        past `deadline_ms` when it runs (answer `late`: nothing decided, nothing recorded).
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
                return self._checkout_refused(layout, user_shard, ask, "rate_limited", wait)
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
                user_keys.ip_bucket(ask.client_ip),
            ],
            [
                ask.user_id,
                ask.item_id,
                ask.now_ms,
                ask.ttl_ms,
                ask.user_rate,
                ask.ip_rate,
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

    def _checkout_refused(
        self, layout: SaleLayout, shard: int, ask: _Checkout, outcome: str, retry_ms: int
    ) -> CheckoutAnswer:
        """A refusal the pod decided (the address's bucket was empty), recorded in the user's
        shard's outbox."""
        recorded = self._record_on(
            layout.shards[shard],
            outcome,
            ask.now_ms,
            ask.user_id,
            ask.item_id,
            ask.attempt_key,
            ask.deadline_ms,
        )
        if not recorded:
            return CheckoutAnswer("late", "", 0, 0, "")
        return CheckoutAnswer(outcome, "", 0, retry_ms, ask.sale_id)

    def _set_token(
        self,
        layout: SaleLayout,
        user_id: str,
        item_id: str,
        score: str,
        *,
        expected: Any = "",
        code: str = "",
    ) -> bool:
        """The user's token for an item becomes `score` ('' removes it), only while it is still
        `expected` ('' for any); a purchase's `raising` note goes (set_token.lua)."""
        keys = layout.shards[layout.user_shard(user_id)]
        return bool(
            self._eval(
                "set_token",
                [keys.user(user_id), keys.raising],
                [item_id, score, expected, code],
            )
        )

    def take_address_token(self, sale_id: str, client_ip: str, *, rate: float, now_ms: int) -> int:
        """0 when a request from this address may pass, else the ms until one may (see
        rate_limit.lua). The bucket is the one checkout and purchase spend from."""
        return self._take_address_token(self.layout(sale_id), client_ip, rate, now_ms)

    def _take_address_token(
        self, layout: SaleLayout, client_ip: str, rate: float, now_ms: int
    ) -> int:
        keys = layout.shards[layout.address_shard(client_ip)]
        return int(self._eval("rate_limit", [keys.ip_bucket(client_ip)], [rate, now_ms]))

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
        shards = _code_shards(code)
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
        item_id, user_id = claim.split(" ")[:2]
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
        user_keys = layout.shards[user_shard]
        step, before = self._eval(
            "purchase_user",
            [
                user_keys.user(user_id),
                user_keys.user_bucket(user_id),
                user_keys.ip_bucket(client_ip),
                user_keys.raising,
            ],
            [code, item_id, now_ms, user_rate, 0, deadline_ms],
        )
        if step == "late":
            return PurchaseAnswer("late")
        if step == "rate_limited":
            return PurchaseAnswer(step, retry_ms=int(before))
        answer = self._purchase_script(
            item_keys,
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
        if answer.kind not in ("sold", "repeat", "late"):
            # A definite refusal: the item goes back to what it was in the user's set.
            with contextlib.suppress(RedisError):  # else the sweeper settles the note
                self._set_token(layout, user_id, item_id, before, expected="inf", code=code)
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

    def _code_layout(self, sale_id: str, code: str) -> tuple[SaleLayout, SaleKeys, Claim | None]:
        """The layout of the code's sale, the keys of its item's shard, and its claim (read only
        for a sharded sale, whose other steps need the user)."""
        layout = self.layout(sale_id)
        if layout.k == 1:
            return layout, layout.home, None
        shards = _code_shards(code)
        if shards is None or shards[0] >= layout.k:
            return layout, layout.home, None
        keys = layout.shards[shards[0]]
        text = self._client.hget(keys.codes, code)
        return layout, keys, Claim.decode(text) if text else None

    def confirm(self, sale_id: str, code: str) -> None:
        """PostgreSQL holds the purchase: it is no longer pending (nor, on a sharded sale, in
        flight on its user's shard)."""
        layout = self._sharded(sale_id)
        shards = _code_shards(code) if layout is not None else None
        if layout is None or shards is None:
            self._execute("ZREM", keys_for(sale_id).pending, code)
            return
        self._execute("ZREM", layout.shards[shards[0]].pending, code)
        if shards[0] != shards[1]:
            self._execute("ZREM", layout.shards[shards[1]].raising, code)

    def revert(self, sale_id: str, code: str, stamp: int) -> bool:
        """The request that sold a purchase undoes it (PostgreSQL surely did not record it),
        unless a retry touched it since (revert.lua). Returns whether it did."""
        layout, keys, claim = self._code_layout(sale_id, code)
        user_here = claim is None or layout.user_shard(claim.user_id) == layout.shards.index(keys)
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
                code=code,
            )
        return reverted

    def release(self, sale_id: str, code: str) -> bool:
        """The code's hold on its item goes: a reservation nobody was told of, or a purchase
        voided in PostgreSQL (release.lua). Returns whether it did."""
        layout, keys, claim = self._code_layout(sale_id, code)
        user_here = claim is None or layout.user_shard(claim.user_id) == layout.shards.index(keys)
        user_id = self._eval(
            "release",
            [keys.meta, keys.items, keys.codes, keys.reserved, keys.pending, keys.history],
            [code, keys.user_prefix if user_here else ""],
        )
        if user_id and not user_here:
            assert claim is not None
            self._set_token(layout, claim.user_id, claim.item_id, "", code=code)
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
        deadline_ms: int,
    ) -> bool:
        """Record an attempt decided before checkout.lua could run (record_attempt.lua), in the
        outbox of the user's shard (or the home one). False when Redis ran it after
        `deadline_ms` and recorded nothing."""
        layout = self.layout(sale_id)
        keys = layout.home
        if layout.k > 1 and user_id is not None:
            keys = layout.shards[layout.user_shard(user_id)]
        return self._record_on(keys, outcome, now_ms, user_id, item_id, attempt_key, deadline_ms)

    def _record_on(
        self,
        keys: SaleKeys,
        outcome: str,
        now_ms: int,
        user_id: str | None,
        item_id: str | None,
        attempt_key: str,
        deadline_ms: int,
    ) -> bool:
        return bool(
            self._eval(
                "record_attempt",
                [keys.meta, keys.outbox],
                [
                    outcome,
                    now_ms,
                    _MISSING if user_id is None else user_id,
                    _MISSING if item_id is None else item_id,
                    attempt_key,
                    deadline_ms,
                ],
            )
        )

    # --- the waiting room ---------------------------------------------------------------------
    # `now_ms` None: the scripts read Redis's clock (TIME). `rate_milli`: admissions per 1000 s.

    def queue_join(
        self,
        sale_id: str,
        user_id: str,
        *,
        fresh_ticket: str,
        draw: int,
        now_ms: int | None,
        window_ms: tuple[int, int],
        rate_milli: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        expire_ms: int,
    ) -> QueuePlace:
        """Join the sale's queue, or find the user's ticket again (queue_join.lua)."""
        keys = keys_for(sale_id)
        wait = self._spend_address_first(sale_id, client_ip, ip_rate, now_ms)
        if wait:
            return QueuePlace("rate_limited", "", user_id, None, False, wait, 0, 0)
        ip_rate = ip_rate if self.layout(sale_id).k == 1 else 0
        return queue_place(
            self._eval(
                "queue_join",
                [
                    keys.queue,
                    keys.queue_users,
                    keys.queue_tickets,
                    keys.queue_draw,
                    keys.meta,
                    keys.user_bucket(user_id),
                    keys.ip_bucket(client_ip),
                ],
                [
                    user_id,
                    fresh_ticket,
                    draw,
                    "" if now_ms is None else now_ms,
                    *window_ms,
                    rate_milli,
                    user_rate,
                    ip_rate,
                    expire_ms,
                ],
            )
        )

    def queue_ticket(
        self,
        sale_id: str,
        ticket: str,
        *,
        now_ms: int | None,
        window_ms: tuple[int, int],
        rate_milli: int,
        ip_rate: float,
        client_ip: str,
        pass_ms: int,
    ) -> QueuePlace:
        """Where a ticket stands, and its pass's expiry once admitted (queue_ticket.lua)."""
        keys = keys_for(sale_id)
        wait = self._spend_address_first(sale_id, client_ip, ip_rate, now_ms)
        if wait:
            return QueuePlace("rate_limited", ticket, "", None, False, wait, 0, 0)
        ip_rate = ip_rate if self.layout(sale_id).k == 1 else 0
        return queue_place(
            self._eval(
                "queue_ticket",
                [keys.queue, keys.queue_tickets, keys.queue_draw, keys.ip_bucket(client_ip)],
                [
                    ticket,
                    "" if now_ms is None else now_ms,
                    *window_ms,
                    rate_milli,
                    ip_rate,
                    pass_ms,
                ],
            )
        )

    def _spend_address_first(
        self, sale_id: str, client_ip: str, rate: float, now_ms: int | None
    ) -> int:
        """A sharded sale's address bucket lives on its own shard, not with the queue's keys:
        spend it first (0 when it let the request through, or a one-tag sale)."""
        layout = self.layout(sale_id)
        if layout.k == 1 or not rate or not client_ip:
            return 0
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return self._take_address_token(layout, client_ip, rate, now)

    def queue_length(
        self, sale_id: str, *, now_ms: int | None, window_ms: tuple[int, int], rate_milli: int
    ) -> QueueLength:
        """How many wait in the sale's queue (queue_length.lua)."""
        keys = keys_for(sale_id)
        waiting, newly = self._eval(
            "queue_length",
            [keys.queue, keys.queue_draw],
            ["" if now_ms is None else now_ms, *window_ms, rate_milli],
        )
        return QueueLength(int(waiting), int(newly))

    # --- reads ------------------------------------------------------------------------------

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

    # --- loading a sale ---------------------------------------------------------------------

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
        wanted = (
            range(layout.k) if shards is None or shards == [0] else [s for s in shards if s >= 0]
        )
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
        states = {
            str(n): ItemState("-").encode()
            for n in range(1, sale.total_items + 1)
            if layout.item_shard(str(n)) == shard
        }
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
        for batch in _chunks(list(states.items())):
            pipe.hset(keys.items_staging, mapping=dict(batch))
        for batch in _chunks(list(codes.items())):
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

    # --- tidying ----------------------------------------------------------------------------

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
        """Sharded sales: purchases whose worker raised the user's item to bought and then went
        quiet before `before_ms`. An item sold under the code stays bought; otherwise the token
        goes back to the reservation's expiry, or away. Returns how many it settled."""
        layout = self.layout(sale_id)
        if layout.k == 1:
            return 0
        settled = 0
        for keys in layout.shards:
            for code in self._client.zrangebyscore(keys.raising, "-inf", before_ms):
                _, item_keys, claim = self._code_layout(sale_id, code)
                if claim is None:
                    self._client.zrem(keys.raising, code)
                    continue
                state = ItemState.decode(self._client.hget(item_keys.items, claim.item_id))
                if state.kind == SOLD and state.code == code:
                    score = "inf"
                elif state.kind == RESERVED and state.code == code:
                    score = str(state.at_ms)
                else:
                    score = ""
                self._set_token(
                    layout, claim.user_id, claim.item_id, score, expected="inf", code=code
                )
                settled += 1
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

    # --- outboxes ---------------------------------------------------------------------------

    def register_outbox(self, sale_id: str) -> None:
        """Before a sale's outbox gets its first record, the sweep must know it exists."""
        self._client.sadd(OUTBOX_REGISTRY, sale_id)

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
        self._client.xtrim(keys.outbox, minid=_stream_id_after(through), approximate=False)

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

    # --- the audit --------------------------------------------------------------------------

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


def _chunks(pairs: list, size: int = _CHUNK) -> list[list]:
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]
