"""gunicorn settings for `flashsale serve`: gevent workers with deadlines and caps on
connections (server/worker.py), bounded requests, graceful stops, Prometheus multiprocess
housekeeping, and the pod's sweeper as a child of the master."""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import weakref
from pathlib import Path

import orjson
from gunicorn import util

from flashsale.config import Settings
from flashsale.logs import gunicorn_logger
from flashsale.server.addresses import AddressTable
from flashsale.server.sweeper import Sweeper
from flashsale.server.worker import end_reading
from flashsale.web.errors import error_body

_settings = Settings.from_env()

# A pod serves its network (HOST narrows it, as `flashsale dev` does); the probe port, when set,
# answers the probes and /metrics from a thread of each worker, with an event loop and store
# connections of its own (server/probes.py).
bind = [
    f"{_settings.host or '0.0.0.0'}:{port}"  # noqa: S104
    for port in (_settings.port, _settings.probe_port)
    if port
]
worker_class = "flashsale.server.worker.Worker"
workers = _settings.web_concurrency or multiprocessing.cpu_count()
# Connections (greenlets) per worker on the API port (the probe port's thread is not bound by
# it): room for a crowd of thousands, whose slow or idle connections the header deadline and the
# per-address cap keep from taking it all.
worker_connections = 10_000
backlog = 4096  # connections accepted by the kernel while the workers catch up (somaxconn caps it)
keepalive = 75  # longer than common load balancers' idle timeout
timeout = 30  # a worker silent this long is killed and replaced
graceful_timeout = 25  # SIGTERM: finish in-flight requests within this, then exit
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = None  # the app logs requests itself, as JSON
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn's own lines (starting, booting and exiting workers) as JSON, like every other line.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "flashsale.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"level": _settings.log_level, "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": _settings.log_level, "handlers": [], "propagate": True},
    },
}
logger_class = gunicorn_logger()  # no access lines of gunicorn's: the app logs each request
proc_name = "flashsale"
# gunicorn 27 opens a control socket under $HOME; a read-only container root has no room.
control_socket_disable = True

_sweeper = Sweeper(_settings.sweep_interval)
# Open connections per client address, shared by the workers: a row for each worker, and as many
# again for the new workers of a reload, which start before the old ones have gone.
_addresses = AddressTable(rows=2 * workers + 2) if _settings.max_conn_per_ip else None


def on_starting(server) -> None:
    """A stale multiprocess directory would resurrect dead workers' counters: wipe it."""
    folder = _settings.metrics_dir
    if folder:
        path = Path(folder)
        if path.exists():
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        path.mkdir(parents=True, exist_ok=True)


def pre_fork(server, worker) -> None:
    if _addresses is not None:
        worker.addresses, worker.address_row = _addresses, _addresses.claim()


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    if _addresses is not None:
        _addresses.release(getattr(worker, "address_row", None))
    if _settings.metrics_dir:
        multiprocess.mark_process_dead(worker.pid)


def _json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's refusals (a request line or headers past the limits, bytes that are not HTTP)
    in the API's error shape instead of its HTML page."""
    # 501: a transfer coding gunicorn does not know, the client's doing like the other refusals.
    code = "internal_error" if status_int >= 500 and status_int != 501 else "invalid_request"
    body = orjson.dumps(error_body(code, f"{reason}: {mesg}"))
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn writes its own refusals with util.write_error, looked up at each call: set once in
# the master, every forked worker has it.
util.write_error = _json_error


def post_worker_init(worker) -> None:
    """On SIGTERM, also end idle keep-alive connections, so a graceful stop lasts as long as
    the requests in flight and not the whole graceful_timeout (gunicorn's gevent worker leaves
    idle keep-alive connections open until keepalive expires, then gets killed)."""
    # Weak: a connection the client closed leaves the set with its socket object.
    worker.idle_connections = weakref.WeakSet()
    handle_exit = worker.handle_exit

    def on_sigterm(signum, frame) -> None:
        handle_exit(signum, frame)
        for sock in list(worker.idle_connections):
            end_reading(sock)

    signal.signal(signal.SIGTERM, on_sigterm)


def pre_request(worker, req) -> None:
    idle = getattr(worker, "idle_connections", None)
    sock = getattr(req.unreader, "sock", None)
    if idle is not None and sock is not None:
        idle.discard(sock)


def post_request(worker, req, environ, resp) -> None:
    """Between requests a connection is idle; once the worker is stopping, it is closed."""
    sock = environ.get("gunicorn.socket")
    idle = getattr(worker, "idle_connections", None)
    if sock is None or idle is None:
        return
    if worker.alive:
        idle.add(sock)
    else:
        idle.discard(sock)
        end_reading(sock)


def when_ready(server) -> None:
    if _settings.sweeper:
        _sweeper.start(server.log.warning)


def on_exit(server) -> None:
    _sweeper.stop()
