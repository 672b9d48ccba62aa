"""The probe port (FLASHSALE_PROBE_PORT), served in each worker by a thread of its own.

A gevent worker answers its connections in turns of its event loop. Under a crowd one turn
serves every connection that has a request: with 4,000 of them that takes a second or more
(docs/admission.md), and a probe waiting for its turn times out, so the kubelet would restart a
pod for being busy. This thread has an event loop of its own (gevent gives each thread its own
hub) and store connections of its own (its /readyz asks the stores, its /metrics reads the
sale's gauges); the interpreter lock passes to it within its switch interval (5 ms), so the
probes are answered in milliseconds however busy the worker's loop is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gevent.pywsgi import WSGIServer
from gevent.socket import socket
from gevent.threadpool import ThreadPool

log = logging.getLogger("flashsale.probes")


def serve_probes(listeners: list[Any]) -> None:
    """Serve the probe app on `listeners` (the worker's sockets of the probe port) from a
    native thread, for as long as the worker lives (the running thread keeps its pool)."""
    ThreadPool(1).spawn(_serve, [os.dup(listener.fileno()) for listener in listeners])


def _serve(fds: list[int]) -> None:
    # Imported here, not at the top: gunicorn's master imports this module (server/worker.py)
    # and must not load the app and its metrics.
    from psycogreen.gevent import patch_psycopg

    from flashsale.config import Settings
    from flashsale.web.app import create_probe_app
    from flashsale.wiring import build_service

    # PostgreSQL waits through gevent, on this thread's hub. A worker has set that already
    # (web/wsgi.py; setting it again is harmless); a process that imports only this module
    # has not.
    patch_psycopg()
    # Built here, in the thread: its connections wait on this thread's hub.
    app = create_probe_app(build_service(Settings.from_env()))
    servers = [WSGIServer(socket(fileno=fd), app, log=None, error_log=log) for fd in fds]
    for server in servers[1:]:
        server.start()
    servers[0].serve_forever()
