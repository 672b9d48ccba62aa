"""The ground every part of the Redis gateway stands on: the client, the scripts and how they
are run, where a sale's data lives (its layout) and what the pods know of its shards."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from flashsale.stores.inventory.batching import Batcher, under_gevent
from flashsale.stores.inventory.cluster import LazyCluster, NodeBatchers, is_cluster, shard_tags
from flashsale.stores.inventory.codec import Claim
from flashsale.stores.inventory.keys import SaleKeys, SaleLayout, keys_for

# What a failing or absent Redis raises; callers turn it into 503 `unavailable`.
InventoryError = RedisError

_SCRIPTS = (
    "checkout",
    "checkout_user",
    "checkout_item",
    "purchase",
    "purchase_user",
    "end_raise",
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
# How long a pod trusts what it heard about a shard being sold out (it can go back, rarely: a
# purchase voided past the grace frees its item).
_SOLD_OUT_FOR = 1.0


@cache
def script_text(name: str) -> str:
    """The script with the libraries its `-- requires:` line names prepended."""
    folder = resources.files("flashsale.stores.inventory") / "scripts"
    text = (folder / f"{name}.lua").read_text()
    match = _REQUIRES.search(text)
    libraries = match.group(1).split() if match else []
    return "\n".join([*((folder / f"{lib}.lua").read_text() for lib in libraries), text])


class _Script:
    """A script's text, the SHA1 Redis knows it by, and how it is loaded again when a Redis
    (restarted, or new) answers NOSCRIPT."""

    def __init__(self, text: str):
        self.script = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis's own name
        # A crowd's calls all hear NOSCRIPT at once: one of them loads the script, the others
        # wait for it (a gevent lock in a worker), instead of a pool connection each.
        self._lock = threading.Lock()
        self.loads = 0  # times loaded by this process: read before a call, see load()

    def load(self, server: redis.Redis, before: int) -> None:
        """Load the script on `server` after a call sent when `loads` was `before` heard
        NOSCRIPT, unless another caller has loaded it since: then that call's retry finds it."""
        with self._lock:
            if self.loads == before:
                server.script_load(self.script)
                self.loads += 1


def stream_id_after(entry_id: str) -> str:
    """The stream id right after `entry_id`: trimming below it removes exactly the entries up
    to it, as XADD only appends ids above the stream's last one."""
    millis, sequence = entry_id.split("-")
    if int(sequence) == 2**64 - 1:  # the last id of its millisecond
        return f"{int(millis) + 1}-0"
    return f"{millis}-{int(sequence) + 1}"


_SHARDED_CODE = re.compile(r"[^.]+\.(\d{1,4})\.(\d{1,4})\.[^.]+", re.ASCII)


def code_shards(code: str) -> tuple[int, int] | None:
    """(item shard, user shard) named by a code of a sharded sale
    (`<sale_id>.<item shard>.<user shard>.<random>`), or None."""
    match = _SHARDED_CODE.fullmatch(code)
    return (int(match[1]), int(match[2])) if match else None


class InventoryBase:
    """What every part of the gateway shares: the client, the scripts (run by SHA), the
    layouts of the sales met so far, what was heard of their shards being sold out, and, in a
    gevent worker, the Batchers that send the calls (one per Cluster node)."""

    def __init__(self, client: redis.Redis | RedisCluster | LazyCluster):
        self._client: Any = client
        self._cluster = is_cluster(client)
        self._scripts = {name: _Script(script_text(name)) for name in _SCRIPTS}
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
        before = script.loads
        try:
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.load(self._servers(keys[0])[0], before)
            return self._execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def shard_tags(self, sale_id: str, shards: int) -> tuple[str, ...]:
        """The hash tags a sale opened now over `shards` shards gets (docs/scaling.md)."""
        return shard_tags(self._client, sale_id, shards)

    def layout(self, sale_id: str) -> SaleLayout:
        """Where the sale's data lives, read once from its home meta and kept. A sale Redis does
        not hold (yet) gets the one-tag layout, not kept."""
        layout = self._layouts.get(sale_id)
        if layout is not None:
            return layout
        # Through the round-trips the scripts share: a crowd's first requests all ask at once,
        # and a connection each from the pool would keep most of them waiting for seconds.
        total, tags = self._execute("HMGET", keys_for(sale_id).meta, "total", "tags")
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

    def _set_token(
        self,
        layout: SaleLayout,
        user_id: str,
        item_id: str,
        score: str,
        *,
        expected: Any = "",
    ) -> bool:
        """The user's token for an item becomes `score` ('' removes it), only while it is still
        `expected` ('' for any) and no purchase is raising it (set_token.lua)."""
        keys = layout.shards[layout.user_shard(user_id)]
        return bool(
            self._eval(
                "set_token",
                [keys.user(user_id), keys.raises],
                [user_id, item_id, score, expected],
            )
        )

    def _end_raise(
        self, layout: SaleLayout, code: str, user_id: str, item_id: str, score: str
    ) -> bool:
        """A purchase's raise of the user's item ends with what the item's shard made of the
        code: 'inf' sold, an expiry, or '' (end_raise.lua). False if it had ended already."""
        keys = layout.shards[layout.user_shard(user_id)]
        return bool(
            self._eval(
                "end_raise",
                [keys.user(user_id), keys.raising, keys.raises],
                [code, user_id, item_id, score],
            )
        )

    def _take_address_token(
        self, layout: SaleLayout, client_ip: str, rate: float, now_ms: int
    ) -> int:
        keys = layout.shards[layout.address_shard(client_ip)]
        return int(self._eval("rate_limit", [keys.ip_bucket(client_ip)], [rate, now_ms]))

    def _code_layout(
        self, sale_id: str, code: str
    ) -> tuple[SaleLayout, SaleKeys, Claim | None, bool]:
        """The layout of the code's sale, the keys of its item's shard, its claim (read only for
        a sharded sale, whose other steps need the user), and whether the user's keys live on
        that shard too (the scripts then update the user's set themselves)."""
        layout = self.layout(sale_id)
        if layout.k == 1:
            return layout, layout.home, None, True
        shards = code_shards(code)
        if shards is None or shards[0] >= layout.k:
            return layout, layout.home, None, True
        keys = layout.shards[shards[0]]
        text = self._execute("HGET", keys.codes, code)
        claim = Claim.decode(text) if text else None
        user_here = claim is None or layout.user_shard(claim.user_id) == shards[0]
        return layout, keys, claim, user_here


def chunks(pairs: list, size: int = _CHUNK) -> list[list]:
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]
