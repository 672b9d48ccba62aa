"""Redis topologies only the tests need: a Sentinel-watched primary with a replica, and a
Cluster of a few primaries; and the name of a server the tests are given rather than start.
Built on the dev servers of `flashsale.dev.servers` (same ports, state directories and clean
shutdown), which `flashsale dev` uses for its single Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis

from flashsale.dev.servers import (
    HOST,
    START_TIMEOUT,
    DevServerError,
    RedisServer,
    find_redis_server,
    free_port,
    redis_command,
    start_on_free_port,
    start_redis,
)


@dataclass(frozen=True)
class ExternalServer:
    """A server someone else runs (from REDIS_URL / DATABASE_URL): we use it, never stop it."""

    url: str


class ReplicaServer(RedisServer):
    """A Redis server that replicates `primary_port` from its start."""

    def __init__(self, state_dir: Path, port: int, *, executable: Path, primary_port: int):
        super().__init__(state_dir, port, executable=executable, appendonly=True)
        self.primary_port = primary_port

    def _more_config(self) -> list[str]:
        return [f"replicaof {HOST} {self.primary_port}"]


class ClusterNode(RedisServer):
    """A cluster-enabled Redis server. Its bus port would default to port + 10000, past 65535
    for most free ports: it gets a free port of its own."""

    def __init__(self, state_dir: Path, port: int, *, executable: Path):
        super().__init__(state_dir, port, executable=executable, appendonly=False)
        self.bus_port = free_port()

    def _more_config(self) -> list[str]:
        return [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-port {self.bus_port}",
        ]


class RedisSentinel(RedisServer):
    """A Redis Sentinel watching one primary, named `flashsale`, quick to fail it over."""

    name = "redis-sentinel"
    master_name = "flashsale"

    def __init__(self, state_dir: Path, port: int, *, executable: Path, primary_port: int):
        super().__init__(state_dir, port, executable=executable, appendonly=False)
        self.primary_port = primary_port

    @property
    def url(self) -> str:
        """What the service takes as REDIS_URL: the sentinels and the name they watch."""
        return f"redis+sentinel://{HOST}:{self.port}/{self.master_name}"

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        self.config_path.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {self.port}",
                    f'dir "{self.state_dir}"',
                    'logfile ""',
                    f"sentinel monitor {name} {HOST} {self.primary_port} 1",
                    f"sentinel down-after-milliseconds {name} 1000",
                    f"sentinel failover-timeout {name} 5000",
                    "",
                ]
            )
        )

    def _argv(self) -> list[str]:
        return [str(self.executable), str(self.config_path), "--sentinel"]

    def _shutdown(self) -> None:
        if self._proc is not None:
            self._proc.terminate()


class RedisSentinelServers:
    """A primary, its replica and a sentinel: a failover in miniature."""

    def __init__(self, primary: RedisServer, replica: RedisServer, sentinel: RedisSentinel):
        self.primary, self.replica, self.sentinel = primary, replica, sentinel

    @property
    def url(self) -> str:
        return self.sentinel.url

    def primary_port(self) -> int:
        """The port of the node the sentinel currently names as primary."""
        with redis.Redis(host=HOST, port=self.sentinel.port, decode_responses=True) as client:
            _, port = client.sentinel_get_master_addr_by_name(self.sentinel.master_name)
        return int(port)

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.primary):
            server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_redis_sentinel(state_dir: Path) -> RedisSentinelServers:
    """A primary (AOF on), a replica of it, and a sentinel; returns once the replica is in sync."""
    exe = find_redis_server()
    primary = start_redis(state_dir / "primary", executable=exe)
    replica = start_on_free_port(
        lambda port: ReplicaServer(
            state_dir / "replica", port, executable=exe, primary_port=primary.port
        )
    )
    sentinel = start_on_free_port(
        lambda port: RedisSentinel(
            state_dir / "sentinel", port, executable=exe, primary_port=primary.port
        )
    )
    servers = RedisSentinelServers(primary, replica, sentinel)
    deadline = time.monotonic() + START_TIMEOUT
    while b"master_link_status:up" not in redis_command(replica.port, b"INFO replication"):
        if time.monotonic() > deadline:
            servers.stop()
            raise DevServerError("the replica did not sync with the primary")
        time.sleep(0.1)
    return servers


class RedisClusterServers:
    """A Redis Cluster of a few primaries on one machine, each owning a range of the slots."""

    def __init__(self, nodes: list[ClusterNode]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_redis_cluster(state_dir: Path, *, nodes: int = 3) -> RedisClusterServers:
    """Start `nodes` cluster-enabled Redis servers, split the 16384 slots between them, and
    introduce them to each other; returns once the cluster says it is ok."""
    exe = find_redis_server()
    servers = [
        start_on_free_port(
            lambda port, i=i: ClusterNode(state_dir / f"node{i}", port, executable=exe)
        )
        for i in range(nodes)
    ]
    cluster = RedisClusterServers(servers)
    try:
        bounds = [16384 * i // nodes for i in range(nodes + 1)]
        for server, start, end in zip(servers, bounds, bounds[1:], strict=False):
            slots = " ".join(str(slot) for slot in range(start, end))
            redis_command(server.port, f"CLUSTER ADDSLOTS {slots}".encode())
        for server in servers[1:]:
            redis_command(
                servers[0].port, f"CLUSTER MEET {HOST} {server.port} {server.bus_port}".encode()
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_cluster_ok(server.port) for server in servers):
            if time.monotonic() > deadline:
                raise DevServerError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _cluster_ok(port: int) -> bool:
    with redis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True) as client:
        return client.cluster("INFO").get("cluster_state") == "ok"
