"""The real console script as a test runs it: one command, `flashsale serve` on a free port, and
the processes gunicorn starts under it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from flashsale.dev.servers import create_database, drop_database, free_port, unique_database_name
from flashsale.stores.migrate import migrate
from tests.support.service import TEST_SALE, service_environment
from tests.support.stores import redis_client


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
    """`flashsale serve` on a free port: yields (base URL, process); stops it after. Its log is
    `log_dir`/serve-<port>.log, its metrics directory `log_dir`/metrics-<port>."""
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


@contextmanager
def served_stack(
    redis_url: str,
    postgres_url: str,
    log_dir: Path,
    *,
    redis_db: int,
    workers: int = 1,
    **settings: str,
) -> Iterator[tuple[str, dict[str, str], subprocess.Popen]]:
    """`serving` on a database of its own and a Redis db of its own (so other tests' FLUSHDB
    never touches it), with a sale of 20 items open: yields (base URL, env, process). For
    module-scoped servers that many tests share."""
    name = unique_database_name()
    database = create_database(postgres_url, name)
    try:
        migrate(database)
        redis_url = f"{redis_url.rsplit('/', 1)[0]}/{redis_db}"
        env = service_environment(
            redis_url,
            database,
            **{**TEST_SALE, "FLASHSALE_ITEMS": "20", "LOG_LEVEL": "ERROR", **settings},
        )
        client = redis_client(redis_url)
        client.flushdb()
        client.close()
        flashsale("open-sale", env=env)
        with serving(env, log_dir, workers=workers) as (base, proc):
            yield base, env, proc
    finally:
        drop_database(postgres_url, name)


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


def gunicorn_children(master: int) -> tuple[list[int], list[int]]:
    """(web workers, sweeper) processes the gunicorn master started."""
    workers, sweepers = [], []
    for pid, cmdline in children(master):
        (sweepers if " sweep" in cmdline else workers).append(pid)
    return sorted(workers), sorted(sweepers)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
