"""The stores behind the service's back, as a test (or an operator) sees them: a query, a Redis
client, Redis losing everything, the partitions of the attempt records, a proxy that loses a
store's answers, and Hypothesis state machines on the real Redis."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import psycopg2
import redis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test
from redis.cluster import RedisCluster

from flashsale.config import Settings
from flashsale.domain import Sale
from flashsale.stores.inventory import Inventory
from flashsale.stores.records import AttemptRow


def sql(url: str, query: str, *params: object) -> list[tuple]:
    """Rows of one statement, committed, on a connection of its own: what an operator types."""
    connection = psycopg2.connect(url, connect_timeout=3)
    with contextlib.closing(connection), connection, connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def no_deadline() -> int:
    """A deadline for a script call made straight through the gateway that nothing will pass."""
    return int(time.time() * 1000) + 3_600_000


def flush_redis(settings: Settings) -> None:
    """Redis loses everything (a restart without AOF), on every node of a cluster."""
    if settings.redis_cluster:
        with RedisCluster.from_url(settings.redis_url) as cluster:
            cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        redis_client(settings.redis_url).flushdb()


def redis_client(url: str) -> redis.Redis:
    """A plain client for a test that inspects or breaks Redis behind the service's back."""
    return redis.Redis.from_url(url, decode_responses=True)


def attempt_outcomes(url: str) -> dict[str, int]:
    """outcome -> how many checkout_attempts rows have it."""
    return dict(sql(url, "SELECT outcome, count(*) FROM checkout_attempts GROUP BY outcome"))


def attempt_partitions(url: str) -> list[str]:
    """The partitions of checkout_attempts, by name."""
    return [
        name
        for (name,) in sql(
            url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'checkout_attempts'::regclass ORDER BY 1",
        )
    ]


def attempt_row(key: str, at: datetime, sale_id: str | None = None) -> AttemptRow:
    """An attempt record made at `at`, as the drain inserts it."""
    return AttemptRow(key, sale_id, "u", "1", "item_unavailable", None, int(at.timestamp() * 1000))


class RedisMachine(RuleBasedStateMachine):
    """A Hypothesis state machine on the real Redis: each example starts on an empty db, with an
    `Inventory` on it. `run_on_redis` sets `client`."""

    client: redis.Redis

    def __init__(self) -> None:
        super().__init__()
        self.client.flushdb()
        self.inventory = Inventory(self.client)

    def load(self, sale: Sale) -> None:
        """Load the sale as the keeper does; its keys expire by Redis's own clock, so they get
        an hour of real time to live."""
        redis_now_ms = int(self.client.time()[0]) * 1000
        assert self.inventory.load_sale(sale, [], {}, expire_ms=redis_now_ms + 3_600_000)


def run_on_redis(machine: type[RedisMachine], redis_url: str, *, max_examples: int) -> None:
    """Run the machine on this Redis (40 steps an example, no deadline, nothing remembered
    between runs); the db is emptied after."""
    client = redis_client(redis_url)
    try:
        machine.client = client
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=max_examples,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
            ),
        )
    finally:
        client.flushdb()
        client.close()


class AnswerTrap:
    """A TCP proxy in front of a store, for the faults between the service and it. Once armed,
    the first connection that sends a chunk `fires(chunk, state)` accepts has that chunk
    delivered, then loses every answer and, after `linger` seconds, the connection: the store
    did the work, and the client cannot know. `state` is a dict per connection."""

    def __init__(
        self,
        target: tuple[str, int],
        fires: Callable[[bytes, dict], bool],
        linger: float = 0.5,
    ) -> None:
        self.target = target
        self.fires = fires
        self.linger = linger
        self.armed = threading.Event()
        self.fired = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """`url` (of the store behind the trap) with the trap's address in it."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return parts._replace(netloc=f"{user}127.0.0.1:{self.port}").geturl()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"swallow": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                trapped = (
                    self.armed.is_set() and not self.fired.is_set() and self.fires(data, state)
                )
                if trapped:
                    state["swallow"] = True
                    self.fired.set()
                server.sendall(data)
                if trapped:
                    time.sleep(self.linger)  # the store does the work; its answer is lost
                    break
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["swallow"]:
                    continue
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
