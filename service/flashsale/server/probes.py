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


def serve_probes(listeners: list[Any]) -> ThreadPool:
    """Serve the probe app on `listeners` (the worker's sockets of the probe port) from a
    native thread, for as long as the worker lives."""
    pool = ThreadPool(1)
    pool.spawn(_serve, [os.dup(listener.fileno()) for listener in listeners])
    return pool


def _serve(fds: list[int]) -> None:
    # Built here, in the thread: its connections wait on this thread's hub.
    from flashsale.web.wsgi import probe_application

    app = probe_application()
    servers = [WSGIServer(socket(fileno=fd), app, log=None, error_log=log) for fd in fds]
    for server in servers[1:]:
        server.start()
    servers[0].serve_forever()
