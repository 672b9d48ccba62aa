"""What a Redis Cluster needs beyond a single Redis: hash tags that land on distinct primaries,
and, in a gevent worker, one Batcher per node so that concurrent calls to a node share a
round-trip as they do on a single Redis."""

from __future__ import annotations

import time
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError

from flashsale.stores.inventory.batching import Batcher

# How often a node error may make us re-read the cluster's slots (a failover moves them).
_REFRESH_EVERY = 1.0


class LazyCluster:
    """A RedisCluster client made on first use. Making one asks the cluster for its slots, so a
    pod that starts while the cluster is away would fail to start; this way its calls fail like
    any Redis call (503 `unavailable`) until the cluster answers."""

    def __init__(self, make: Any):
        self._make = make
        self._client: RedisCluster | None = None

    def real(self) -> RedisCluster:
        if self._client is None:
            try:
                self._client = self._make()
            except RedisClusterException as error:  # not a RedisError: say what callers expect
                raise RedisConnectionError(str(error)) from error
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster | LazyCluster)


def shard_tags(client: Any, sale_id: str, k: int) -> tuple[str, ...]:
    """Suffixes of K hash tags `sale:<id>/<suffix>` for a sharded sale: on a cluster, each on a
    primary of its own (round the primaries when there are fewer than K), else `0..K-1`."""
    if k <= 1:
        return ()
    if not is_cluster(client):
        return tuple(str(n) for n in range(k))
    order = sorted({node.name for node in client.get_primaries()})
    wanted = [order[n % len(order)] for n in range(k)]
    chosen: list[str] = []
    suffix = 0
    for name in wanted:
        while True:
            candidate = str(suffix)
            suffix += 1
            slot = key_slot(f"sale:{sale_id}/{candidate}".encode())
            if client.nodes_manager.slots_cache[slot][0].name == name:
                chosen.append(candidate)
                break
    return tuple(chosen)


class NodeBatchers:
    """Sends each command to the node that owns its key's slot, through that node's Batcher.

    A command is routed by its first key (EVALSHA's first KEYS entry, else its first argument).
    A MOVED answer or a lost connection (a failover, a resharding) makes the next call re-read
    the cluster's slots; the failed call itself fails, as on a single Redis, and is never sent
    twice (a script that ran must not run again)."""

    def __init__(self, client: RedisCluster | LazyCluster):
        self._client = client
        self._batchers: dict[str, Batcher] = {}
        self._refreshed = 0.0

    def execute_command(self, *command: Any) -> Any:
        key = command[3] if command[0] == "EVALSHA" else command[1]
        node = self._client.get_node_from_key(key)
        batcher = self._batchers.get(node.name)
        if batcher is None:
            batcher = Batcher(self._client.get_redis_connection(node))
            self._batchers[node.name] = batcher
        try:
            return batcher.execute_command(*command)
        except ResponseError as error:
            if str(error).startswith(("MOVED", "ASK")):
                self._refresh()
            raise
        except RedisConnectionError:
            self._refresh()
            raise

    def _refresh(self) -> None:
        if time.monotonic() - self._refreshed < _REFRESH_EVERY:
            return
        self._refreshed = time.monotonic()
        self._client.nodes_manager.initialize()
