"""The live sale in Redis: key names, the Lua scripts, and typed calls to them.

Every decision is one script run by SHA; nothing here decides anything by itself.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

from flashsale.batching import Batcher, under_gevent
from flashsale.config import ConfigError
from flashsale.domain import Purchase

# Sales whose outboxes may hold attempts; the drainer walks this set.
OUTBOX_REGISTRY = "fs:outboxes"

_SCRIPTS = (
    "checkout",
    "purchase",
    "revert",
    "adopt",
    "record_attempt",
    "status",
    "sweep",
    "publish",
    "rate_limit",
)
# Scripts that rate-limit get the token bucket library prepended.
_WITH_BUCKET = {"checkout", "purchase", "rate_limit"}


class SaleKeys:
    """Names of one sale's keys. One hash tag, so every script touches one Cluster slot."""

    def __init__(self, sale_id: str):
        self.sale_id = sale_id
        self.prefix = prefix = f"fs:{{sale:{sale_id}}}:"
        self.meta = prefix + "meta"  # the sale's settings and sold counter; its existence = live
        self.items = prefix + "items"  # item_id -> state
        self.codes = prefix + "codes"  # code -> claim
        self.reserved = prefix + "reserved"  # reservations by expiry
        self.pending = prefix + "pending"  # sold in Redis, not yet confirmed in PostgreSQL
        self.outbox = prefix + "outbox"  # checkout attempts on their way to PostgreSQL
        self.items_staging = prefix + "items:loading"
        self.codes_staging = prefix + "codes:loading"
        self.load_lock = prefix + "lock:load"
        self.drain_lock = prefix + "lock:drain"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def user_bucket(self, user_id: str) -> str:
        return f"{self.prefix}bucket:u:{user_id}"

    def ip_bucket(self, address: str) -> str:
        return f"{self.prefix}bucket:ip:{address}"


keys_for = lru_cache(maxsize=256)(SaleKeys)


def connect(
    url: str, *, max_connections: int, timeout: float, cluster: bool = False
) -> redis.Redis | RedisCluster:
    """A client whose every call is bounded in time: a dead Redis gives an error, never a hang.

    With `cluster`, `url` names any node of a Redis Cluster: each sale's keys share one hash
    tag, so every script runs on the one node that owns the sale's slot. A
    `redis+sentinel://host:port,.../<master>` URL follows the primary its sentinels name, also
    across a failover.
    """
    bounds = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        # Never sent twice: a script that ran but whose answer was lost must not run again
        # (it would record a second attempt). A restarted Redis fails the calls in flight; the
        # next round-trip takes a working connection from the pool.
        "retry": Retry(NoBackoff(), 0),
    }
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections, **bounds)
    if url.startswith(SENTINEL_SCHEME):
        sentinels, master, db = _parse_sentinel_url(url)
        watchers = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": timeout}, **bounds)
        return watchers.master_for(master, db=db, max_connections=max_connections)
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,  # waiting for a free connection
        **bounds,
    )
    return redis.Redis(connection_pool=pool)


SENTINEL_SCHEME = "redis+sentinel://"


def _parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int]:
    """redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"""
    parts = urlsplit(url)
    sentinels = []
    for address in parts.netloc.split(","):
        host, _, port = address.rpartition(":")
        sentinels.append((host, int(port or 26379)))
    master, _, db = parts.path.strip("/").partition("/")
    if not master:
        raise ConfigError(f"{url!r} names no master: redis+sentinel://host:port/<master name>")
    return sentinels, master, int(db or 0)


def _script_text(name: str) -> str:
    folder = resources.files("flashsale") / "scripts"
    text = (folder / f"{name}.lua").read_text()
    if name in _WITH_BUCKET:
        text = (folder / "token_bucket.lua").read_text() + "\n" + text
    return text


class Inventory:
    """Typed calls to the sale scripts. Holds the client, the scripts and, in a gevent worker,
    the Batcher that sends the hot-path calls (with its connection and queue)."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._scripts = {name: client.register_script(_script_text(name)) for name in _SCRIPTS}
        # In a gevent worker, concurrent calls share round-trips (see batching.py). A cluster
        # routes each command to its slot's node: its calls go out one by one.
        batch = under_gevent() and not isinstance(client, RedisCluster)
        self._execute = Batcher(client).execute_command if batch else client.execute_command

    def _eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA; a Redis that restarted and forgot the script gets it loaded again."""
        script = self._scripts[name]
        try:
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.client.script_load(script.script)
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)

    # --- the hot path -----------------------------------------------------------------------

    def checkout(
        self,
        keys: SaleKeys,
        user_id: str,
        item_id: str,
        *,
        now_ms: int,
        ttl_ms: int,
        fresh_code: str,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        expected: bool = False,
    ) -> list[Any]:
        """[outcome, code, expires_ms, retry_ms, sale_id] — see checkout.lua. `expected`: the
        sale was seen open, so its absence means Redis lost it."""
        return self._eval(
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
                keys.sale_id if expected else "",
            ],
        )

    def take_address_token(
        self, keys: SaleKeys, client_ip: str, *, rate: float, now_ms: int
    ) -> int:
        """0 when a request from this address may pass, else the ms until one may (see
        rate_limit.lua). The bucket is the one checkout and purchase spend from."""
        return int(self._eval("rate_limit", [keys.ip_bucket(client_ip)], [rate, now_ms]))

    def purchase(
        self,
        keys: SaleKeys,
        code: str,
        *,
        now_ms: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
    ) -> list[Any]:
        """[kind, ...] — see purchase.lua."""
        return self._eval(
            "purchase",
            [
                keys.meta,
                keys.items,
                keys.codes,
                keys.reserved,
                keys.pending,
                keys.ip_bucket(client_ip),
            ],
            [code, now_ms, user_rate, ip_rate, keys.user(""), keys.user_bucket("")],
        )

    def confirm(self, keys: SaleKeys, code: str) -> None:
        """PostgreSQL holds the purchase: it is no longer pending."""
        self._execute("ZREM", keys.pending, code)

    def revert(self, keys: SaleKeys, code: str) -> bool:
        return bool(
            self._eval(
                "revert",
                [keys.meta, keys.items, keys.codes, keys.reserved, keys.pending],
                [code, keys.user("")],
            )
        )

    def adopt(self, keys: SaleKeys, lost_code: str, stored: Purchase) -> bool:
        """Make Redis hold the purchase PostgreSQL has for the item (see adopt.lua)."""
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
                    keys.user(""),
                ],
            )
        )

    def record_attempt(
        self,
        keys: SaleKeys,
        outcome: str,
        *,
        now_ms: int,
        user_id: str | None,
        item_id: str | None,
    ) -> None:
        missing = "\0"
        self._eval(
            "record_attempt",
            [keys.meta, keys.outbox],
            [
                outcome,
                now_ms,
                missing if user_id is None else user_id,
                missing if item_id is None else item_id,
            ],
        )

    def register_outbox(self, sale_id: str) -> None:
        self.client.sadd(OUTBOX_REGISTRY, sale_id)

    def registered_sales(self) -> set[str]:
        return self.client.smembers(OUTBOX_REGISTRY)

    def unregister_outbox(self, sale_id: str) -> None:
        self.client.srem(OUTBOX_REGISTRY, sale_id)

    # --- reads ------------------------------------------------------------------------------

    def status(self, keys: SaleKeys, now_ms: int) -> dict[str, int | str] | None:
        row = self._eval("status", [keys.meta, keys.reserved, keys.outbox], [now_ms])
        if not row:
            return None
        sale_id, starts, ends, total, sold, reserved, backlog = row
        return {
            "sale_id": sale_id,
            "starts_ms": int(starts),
            "ends_ms": int(ends),
            "total": int(total),
            "sold": int(sold),
            "reserved": int(reserved),
            "backlog": int(backlog),
        }

    def meta(self, keys: SaleKeys) -> dict[str, str]:
        return self.client.hgetall(keys.meta)

    # --- lifecycle --------------------------------------------------------------------------

    def sweep(self, keys: SaleKeys, now_ms: int, batch: int) -> int:
        return int(
            self._eval("sweep", [keys.items, keys.reserved, keys.codes, keys.meta], [now_ms, batch])
        )

    def publish(self, keys: SaleKeys, meta: dict[str, str | int], expire_ms: int) -> bool:
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
