"""The live sale in Redis: the one class that speaks Redis, with a named method for each thing
the service, the jobs and the audit need and a typed answer for each.

Every decision is one Lua script run by SHA (`scripts/`); the few plain commands here only read,
tidy or move records. Key names are in keys.py, the item-state encoding in codec.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import redis
from redis.cluster import RedisCluster
from redis.exceptions import LockError, NoScriptError, RedisError

from flashsale.domain import Purchase, Sale
from flashsale.stores.inventory.batching import Batcher, under_gevent
from flashsale.stores.inventory.codec import SOLD, Claim, ItemState
from flashsale.stores.inventory.keys import OUTBOX_REGISTRY, keys_for

# What a failing or absent Redis raises; callers turn it into 503 `unavailable`.
InventoryError = RedisError

_SCRIPTS = (
    "checkout",
    "purchase",
    "revert",
    "adopt",
    "record_attempt",
    "status",
    "reclaim",
    "publish",
    "rate_limit",
)
_REQUIRES = re.compile(r"^-- requires: (.+)$", re.MULTILINE)
_CHUNK = 1000  # fields per command when a sale is loaded
_MISSING = "\0"  # record_attempt.lua's stand-in for a parameter the request did not have


class CheckoutAnswer(NamedTuple):
    """checkout.lua's decision. `sale_id` is the sale the attempt was filed under ('' if none)."""

    outcome: str
    code: str
    expires_ms: int
    retry_ms: int
    sale_id: str


class PurchaseAnswer(NamedTuple):
    """purchase.lua's decision: `kind` is sold (now), repeat (sold before under this code),
    sale_missing (Redis does not hold the sale), forbidden (held by another user than the
    requester), rate_limited, code_not_found or code_expired."""

    kind: str
    item_id: str = ""
    user_id: str = ""
    at_ms: int = 0
    sale_id: str = ""
    retry_ms: int = 0


class SaleFigures(NamedTuple):
    """One consistent reading of a sale's counts (status.lua)."""

    sale_id: str
    starts_ms: int
    ends_ms: int
    total: int
    sold: int
    reserved: int
    backlog: int

    @property
    def remaining(self) -> int:
        return self.total - self.sold


class OutboxEntry(NamedTuple):
    """A checkout attempt in a sale's outbox, as its script recorded it."""

    entry_id: str
    sale_id: str | None
    user_id: str | None
    item_id: str | None
    outcome: str
    code: str | None
    created_ms: int


@cache
def _script_text(name: str) -> str:
    """The script with the libraries its `-- requires:` line names prepended."""
    folder = resources.files("flashsale.stores.inventory") / "scripts"
    text = (folder / f"{name}.lua").read_text()
    match = _REQUIRES.search(text)
    libraries = match.group(1).split() if match else []
    return "\n".join([*((folder / f"{lib}.lua").read_text() for lib in libraries), text])


def _stream_id_after(entry_id: str) -> str:
    """The stream id right after `entry_id`: trimming below it removes exactly the entries up
    to it, as XADD only appends ids above the stream's last one."""
    millis, sequence = entry_id.split("-")
    if int(sequence) == 2**64 - 1:  # the last id of its millisecond
        return f"{int(millis) + 1}-0"
    return f"{millis}-{int(sequence) + 1}"


class Inventory:
    """Typed calls to the sale's scripts and keys. Holds the client, the scripts and, in a
    gevent worker, the Batcher that sends the hot-path calls (with its connection and queue)."""

    def __init__(self, client: redis.Redis | RedisCluster):
        self._client = client
        self._scripts = {name: client.register_script(_script_text(name)) for name in _SCRIPTS}
        # In a gevent worker, concurrent calls share round-trips (see batching.py). A cluster
        # routes each command to its slot's node: its calls go out one by one.
        batch = under_gevent() and not isinstance(client, RedisCluster)
        self._execute = Batcher(client).execute_command if batch else client.execute_command

    def close(self) -> None:
        self._client.close()

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except RedisError:
            return False

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA; a Redis that restarted and forgot the script gets it loaded again."""
        script = self._scripts[name]
        try:
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._client.script_load(script.script)
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)

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
        seen_open: bool = False,
    ) -> CheckoutAnswer:
        """Decide and record one checkout (checkout.lua). `seen_open`: the caller saw the sale
        open, so its absence means Redis lost it."""
        keys = keys_for(sale_id)
        outcome, code, expires, retry_ms, filed_under = self._eval(
            "checkout",
            [
                keys.meta,
                keys.items,
                keys.codes,
                keys.reserved,
                keys.user(user_id),
                keys.outbox,
                keys.user_bucket(user_id),
                keys.ip_bucket(client_ip),
            ],
            [
                user_id,
                item_id,
                now_ms,
                ttl_ms,
                fresh_code,
                user_rate,
                ip_rate,
                sale_id if seen_open else "",
            ],
        )
        return CheckoutAnswer(outcome, code, int(expires), int(retry_ms), filed_under)

    def take_address_token(self, sale_id: str, client_ip: str, *, rate: float, now_ms: int) -> int:
        """0 when a request from this address may pass, else the ms until one may (see
        rate_limit.lua). The bucket is the one checkout and purchase spend from."""
        keys = keys_for(sale_id)
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
        requester: str = "",
    ) -> PurchaseAnswer:
        """Turn the code's reservation into a sale, pending until PostgreSQL has it. With a
        `requester` (identity on), only the code's holder may: `forbidden` for anyone else."""
        keys = keys_for(sale_id)
        answer = self._eval(
            "purchase",
            [
                keys.meta,
                keys.items,
                keys.codes,
                keys.reserved,
                keys.pending,
                keys.ip_bucket(client_ip),
            ],
            [
                code,
                now_ms,
                user_rate,
                ip_rate,
                keys.user_prefix,
                keys.user_bucket_prefix,
                requester,
            ],
        )
        kind = answer[0]
        if kind == "rate_limited":
            return PurchaseAnswer(kind, retry_ms=int(answer[1]))
        if kind in ("sold", "repeat"):
            _, item_id, user_id, at_ms, sold_in = answer
            return PurchaseAnswer(kind, item_id, user_id, int(at_ms), sold_in)
        return PurchaseAnswer(kind)

    def confirm(self, sale_id: str, code: str) -> None:
        """PostgreSQL holds the purchase: it is no longer pending."""
        self._execute("ZREM", keys_for(sale_id).pending, code)

    def revert(self, sale_id: str, code: str) -> bool:
        """Undo a pending purchase PostgreSQL did not record (revert.lua)."""
        keys = keys_for(sale_id)
        return bool(
            self._eval(
                "revert",
                [keys.meta, keys.items, keys.codes, keys.reserved, keys.pending],
                [code, keys.user_prefix],
            )
        )

    def adopt(self, sale_id: str, lost_code: str, stored: Purchase) -> bool:
        """Make Redis hold the purchase PostgreSQL has for the item (see adopt.lua)."""
        keys = keys_for(sale_id)
        return bool(
            self._eval(
                "adopt",
                [keys.items, keys.codes, keys.pending],
                [
                    lost_code,
                    stored.code,
                    stored.item_id,
                    stored.user_id,
                    stored.purchased_ms,
                    keys.user_prefix,
                ],
            )
        )

    def record_attempt(
        self,
        sale_id: str,
        outcome: str,
        *,
        now_ms: int,
        user_id: str | None,
        item_id: str | None,
    ) -> None:
        """Record an attempt decided before checkout.lua could run (record_attempt.lua)."""
        keys = keys_for(sale_id)
        self._eval(
            "record_attempt",
            [keys.meta, keys.outbox],
            [
                outcome,
                now_ms,
                _MISSING if user_id is None else user_id,
                _MISSING if item_id is None else item_id,
            ],
        )

    # --- reads ------------------------------------------------------------------------------

    def figures(self, sale_id: str, now_ms: int) -> SaleFigures | None:
        """The sale's counts now, or None if Redis does not hold it."""
        keys = keys_for(sale_id)
        row = self._eval("status", [keys.meta, keys.reserved, keys.outbox], [now_ms])
        if not row:
            return None
        held, starts, ends, total, sold, reserved, backlog = row
        return SaleFigures(
            held, int(starts), int(ends), int(total), int(sold), int(reserved), int(backlog)
        )

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
        )

    def holds(self, sale_id: str) -> bool:
        return bool(self._client.exists(keys_for(sale_id).meta))

    # --- loading a sale ---------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(
        self, sale_id: str, job: str, *, ttl: float, wait: float
    ) -> Iterator[Callable[[], None] | None]:
        """A short lock of one job on one sale (`load` or `drain`). Yields a function that
        renews it, or None when another holder kept it for `wait` seconds. A lock that cannot
        be released (Redis went away) times out by itself."""
        keys = keys_for(sale_id)
        name = {"load": keys.load_lock, "drain": keys.drain_lock}[job]
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
    ) -> bool:
        """Load a sale into staging keys and publish it in one step (publish.lua), unless it is
        already there. `sold`: its purchases (they stay sold, their codes answer with them);
        `issued`: code -> (item, user) of checkouts handed out (they can no longer be bought);
        reservations only Redis knew are not carried over. Returns whether this call loaded it."""
        keys = keys_for(sale.sale_id)
        states = {
            str(position): ItemState("-").encode() for position in range(1, sale.total_items + 1)
        }
        codes = {code: Claim(item, user, 0).encode() for code, (item, user) in issued.items()}
        buyers: dict[str, list[str]] = {}
        count = 0
        for p in sold:
            states[p.item_id] = ItemState(SOLD, p.purchased_ms, p.user_id, p.code).encode()
            codes[p.code] = Claim(p.item_id, p.user_id, p.purchased_ms).encode()
            buyers.setdefault(p.user_id, []).append(p.item_id)
            count += 1

        self._client.delete(keys.items_staging, keys.codes_staging)
        pipe = self._client.pipeline(transaction=False)
        for batch in _chunks(list(states.items())):
            pipe.hset(keys.items_staging, mapping=dict(batch))
        for batch in _chunks(list(codes.items())):
            pipe.hset(keys.codes_staging, mapping=dict(batch))
        for user, items in buyers.items():
            pipe.delete(keys.user(user))
            pipe.zadd(keys.user(user), {item: "inf" for item in items})
            pipe.pexpireat(keys.user(user), expire_ms)
        pipe.execute()
        self.register_outbox(sale.sale_id)
        meta = {
            "sale_id": sale.sale_id,
            "starts_ms": sale.starts_ms,
            "ends_ms": sale.ends_ms,
            "total": sale.total_items,
            "limit": sale.user_limit,
            "seed": sale.seed,
            "sold": count,
            "expire_ms": expire_ms,
        }
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
                ],
                [expire_ms, *pairs],
            )
        )

    # --- tidying ----------------------------------------------------------------------------

    def reclaim(self, sale_id: str, now_ms: int, batch: int) -> int:
        """Return up to `batch` expired reservations to stock (reclaim.lua); how many it did."""
        keys = keys_for(sale_id)
        return int(
            self._eval(
                "reclaim", [keys.items, keys.reserved, keys.codes, keys.meta], [now_ms, batch]
            )
        )

    def pending_since(self, sale_id: str, before_ms: int) -> list[str]:
        """Codes sold in Redis before `before_ms` and still not confirmed in PostgreSQL."""
        return self._client.zrangebyscore(keys_for(sale_id).pending, "-inf", before_ms)

    def pending(self, sale_id: str) -> dict[str, float]:
        """Every unconfirmed code, with the ms it was sold."""
        return dict(self._client.zrange(keys_for(sale_id).pending, 0, -1, withscores=True))

    def in_flight(self, sale_id: str) -> bool:
        """Whether the sale still has attempts to drain or purchases to settle."""
        keys = keys_for(sale_id)
        pipe = self._client.pipeline(transaction=False)
        pipe.xlen(keys.outbox)
        pipe.zcard(keys.pending)
        return any(pipe.execute())

    # --- outboxes ---------------------------------------------------------------------------

    def register_outbox(self, sale_id: str) -> None:
        """Before a sale's outbox gets its first record, the sweep must know it exists."""
        self._client.sadd(OUTBOX_REGISTRY, sale_id)

    def registered_sales(self) -> set[str]:
        return self._client.smembers(OUTBOX_REGISTRY)

    def forget_outbox(self, sale_id: str) -> bool:
        """Drop a finished sale's outbox from the registry, if nothing is left in flight."""
        if self.in_flight(sale_id):
            return False
        self._client.delete(keys_for(sale_id).outbox)
        self._client.srem(OUTBOX_REGISTRY, sale_id)
        return True

    def read_outbox(self, sale_id: str, count: int | None = None) -> list[OutboxEntry]:
        """The oldest `count` attempts of the sale's outbox (all of them by default)."""
        entries = self._client.xrange(keys_for(sale_id).outbox, count=count)
        return [_entry(entry_id, fields) for entry_id, fields in entries]

    def trim_outbox(self, sale_id: str, through: str) -> None:
        """Remove the outbox's entries up to and including `through` (one short command instead
        of XDEL of a batch's ids; Redis frees whole stream nodes)."""
        self._client.xtrim(
            keys_for(sale_id).outbox, minid=_stream_id_after(through), approximate=False
        )

    def backlog(self) -> int:
        """Attempts in every registered outbox, not yet in PostgreSQL."""
        sale_ids = self.registered_sales()
        if not sale_ids:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.xlen(keys_for(sale_id).outbox)
        return sum(pipe.execute())

    # --- the audit --------------------------------------------------------------------------

    def sold_items(self, sale_id: str) -> dict[str, ItemState]:
        """item_id -> state of every item Redis holds as sold."""
        sold = {}
        for item_id, text in self._client.hscan_iter(keys_for(sale_id).items, count=1000):
            state = ItemState.decode(text)
            if state.kind == SOLD:
                sold[item_id] = state
        return sold

    def bought_by(self, sale_id: str, user_id: str) -> int:
        """How many items the user's set holds as bought."""
        return self._client.zcount(keys_for(sale_id).user(user_id), "inf", "inf")

    def issued_codes(self, sale_id: str) -> set[str]:
        return set(self._client.hkeys(keys_for(sale_id).codes))


def _entry(entry_id: str, fields: dict[str, str]) -> OutboxEntry:
    """Stream fields: s sale, u user, i item, o outcome, c code, t ms (see checkout.lua)."""
    return OutboxEntry(
        entry_id,
        fields.get("s") or None,
        fields.get("u"),
        fields.get("i"),
        fields.get("o", "unknown"),
        fields.get("c") or None,
        int(fields.get("t") or entry_id.split("-")[0]),
    )


def _chunks(pairs: list, size: int = _CHUNK) -> list[list]:
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]
