"""The nodes of a Redis Cluster on this machine, as the load scripts need them: a client of one
node, the primaries, the node of each shard of a sale, and dropping a sale once measured."""

from __future__ import annotations

import contextlib

import redis
from redis.cluster import RedisCluster

from flashsale.stores.inventory.keys import OUTBOX_REGISTRY, keys_for

HOST = "127.0.0.1"


def node_client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=30)


def primary_ports(cluster_url: str) -> list[int]:
    with contextlib.closing(RedisCluster.from_url(cluster_url)) as client:
        return sorted(int(node.port) for node in client.get_primaries())


def tag_ports(cluster_url: str, sale_id: str, tags: tuple[str, ...]) -> list[int]:
    """The node (port) of each shard of the sale, the home's when it has one tag."""
    with contextlib.closing(RedisCluster.from_url(cluster_url)) as client:
        metas = [keys_for(sale_id, tag).meta for tag in tags] or [keys_for(sale_id).meta]
        return [int(client.get_node_from_key(meta).port) for meta in metas]


def forget_sale(cluster_url: str, ports: list[int], sale_id: str) -> None:
    """Unlink a measured sale from every node, so memory (and the AOF) stay small."""
    for port in ports:
        client = node_client(port)
        pipe = client.pipeline(transaction=False)  # one key a command: keys of several slots
        for key in client.scan_iter(match=f"fs:{{sale:{sale_id}*", count=1000):
            pipe.unlink(key)
        pipe.execute()
    with contextlib.closing(RedisCluster.from_url(cluster_url)) as client:
        client.srem(OUTBOX_REGISTRY, sale_id)
