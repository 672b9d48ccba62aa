"""Helpers the tests share: a settable clock, a running `flashsale serve`, HTTP calls."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import redis
import requests
from redis.cluster import RedisCluster

from flashsale.config import Settings
from flashsale.dev.servers import free_port
from flashsale.domain import Sale
from flashsale.sale.audit import audit_sale
from flashsale.sale.keeper import SaleKeeper


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


def assert_sweeps_clean(keeper: SaleKeeper, sale: Sale) -> None:
    """One sweep (outbox drained, pending purchases settled), then the audit finds nothing."""
    keeper.sweep()
    now_ms = int(keeper.clock() * 1000)
    report = audit_sale(keeper.inventory, keeper.database, sale, now_ms=now_ms, window_ms=5000)
    assert report.clean, report.render()


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The command name (field 2) may hold spaces: the parent pid follows its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


class Clock:
    """A clock the test moves by hand, for the parts built with an injected clock."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def flashsale(
    *args: str, env: dict[str, str], check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the real console script, as a CronJob or an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "flashsale", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def wait_ready(base: str, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base} not ready within {timeout}s")


@contextmanager
def serving(
    env: dict[str, str], log_dir: Path, workers: int = 2
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`flashsale serve` on a free port: yields (base URL, process); stops it after."""
    port = free_port()
    env = {
        **env,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(log_dir / f"metrics-{port}"),
    }
    log = open(log_dir / f"serve-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "flashsale", "serve"],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


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
