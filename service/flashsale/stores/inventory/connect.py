"""A Redis client whose every call is bounded in time, for a single Redis, a Sentinel-managed
primary or a Redis Cluster."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from flashsale.config import ConfigError
from flashsale.stores.inventory.cluster import LazyCluster


def connect(
    url: str, *, max_connections: int, timeout: float, cluster: bool = False
) -> redis.Redis | LazyCluster:
    """A client whose every call is bounded in time: a dead Redis gives an error, never a hang.

    With `cluster`, `url` names any node of a Redis Cluster (made on first use: see
    LazyCluster); each script's keys share one hash tag, so it runs on one node. A
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
        return LazyCluster(
            lambda: RedisCluster.from_url(url, max_connections=max_connections, **bounds)
        )
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
