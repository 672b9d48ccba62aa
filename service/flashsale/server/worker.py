"""gunicorn's gevent worker with the connection rules of docs/admission.md: a deadline for
request headers (FLASHSALE_HEADER_TIMEOUT), a cap of open connections per client address per pod
(FLASHSALE_MAX_CONN_PER_IP), and a probe port (FLASHSALE_PROBE_PORT) served by a thread of its
own (server/probes.py), out of the cap's reach and of the event loop's turns.

gunicorn's own worker reads every request, the first included, under one timeout: its
keep-alive (75 s here). A connection that sends half a request line holds a greenlet of the
worker's pool that long, and a few thousand of them take every slot. Here the first request's
headers must arrive within the header timeout of the accept; between requests a connection may
stay idle for the keep-alive, and once the next request's first byte has come its headers must
follow within the header timeout too.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import getcurrent
from gevent.socket import wait_read
from gunicorn.workers import ggevent
from gunicorn.workers.ggevent import GeventWorker

from flashsale.config import Settings
from flashsale.server.addresses import AddressTable
from flashsale.server.probes import serve_probes

# Connections a worker accepts each time its listener wakes it. gunicorn's gevent worker takes
# one when there are several workers (so that no worker takes them all); under load one turn of
# the event loop serves every ready connection first, and a crowd's connections then waited in
# the backlog for seconds: 2,300 of wrk's 4,000 were never accepted during a 10 s run.
# gevent's own default, 100, drained that backlog in a second or so.
ACCEPT_PER_WAKEUP = 100


class _StreamServer(ggevent.StreamServer):
    max_accept = property(lambda self: ACCEPT_PER_WAKEUP, lambda self, value: None)


@dataclass
class _Connection:
    sock: Any
    accepted: float  # time.monotonic() of the accept
    unreader: Any = None  # gunicorn's read buffer of the connection, once a request was read


class Worker(GeventWorker):
    # Given by gunicorn_conf's pre_fork hook: the pod's shared table and this worker's row.
    addresses: AddressTable | None = None
    address_row: int | None = None

    def init_process(self) -> None:
        # In the worker only: the master must not create metric files of its own.
        from flashsale.metrics import CONNECTIONS_REFUSED

        self._refused = CONNECTIONS_REFUSED
        settings = Settings.from_env()
        self.header_timeout = settings.header_timeout
        self.probe_port = settings.probe_port
        # Behind a trusted proxy header the peers are the proxy's pods, not clients: the proxy
        # caps clients (docs/admission.md).
        capped = settings.max_conn_per_ip and not settings.client_ip_header
        self.cap = settings.max_conn_per_ip if capped and self.address_row is not None else 0
        if settings.max_conn_per_ip and not capped:
            self.log.warning(
                "FLASHSALE_MAX_CONN_PER_IP is not applied: with FLASHSALE_CLIENT_IP_HEADER set "
                "the peers are proxies (docs/admission.md)"
            )
        self._connections: dict[Any, _Connection] = {}
        super().init_process()

    def run(self) -> None:
        ggevent.StreamServer = _StreamServer  # the one gunicorn's run() builds its servers of
        if self.probe_port:
            # self.sockets: the listeners as patch() made them (gevent sockets).
            probes = [s for s in self.sockets if _port(s.getsockname()) == self.probe_port]
            self.sockets = [s for s in self.sockets if s not in probes]
            serve_probes(probes)
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        slot = None
        if self.cap and isinstance(addr, tuple):
            slot = self.addresses.open(self.address_row, addr[0], self.cap)
            if slot is None:  # closed unanswered: no request was read, none is refused
                self._refused.inc()
                with contextlib.suppress(OSError):
                    client.close()
                return
        me = getcurrent()
        self._connections[me] = _Connection(client, time.monotonic())
        try:
            super().handle(listener, client, addr)
        finally:
            del self._connections[me]
            if slot is not None:
                self.addresses.close(self.address_row, slot)

    def timeout_ctx(self) -> gevent.Timeout:
        """The deadline of reading the next request's headers (gunicorn reads each request
        inside this context; when it expires, the connection is closed)."""
        conn = self._connections.get(getcurrent())
        if conn is None:
            return super().timeout_ctx()
        if conn.unreader is None:  # the first request: within the header timeout of the accept
            left = conn.accepted + self.header_timeout - time.monotonic()
            return gevent.Timeout(max(left, 0.001), False)
        if not _buffered(conn.unreader) and not _readable(conn.sock, self.cfg.keepalive):
            end_reading(conn.sock)  # idle past the keep-alive: the read ends and so does it
        return gevent.Timeout(self.header_timeout, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> None:
        conn = self._connections.get(getcurrent())
        if conn is not None:
            conn.unreader = req.unreader
        super().handle_request(listener_name, req, sock, addr)
        if conn is not None and req.body is not None:
            # What the app left of the body is this request's, not the next one's: read it now,
            # so that bytes still buffered afterwards are the next request's first.
            with gevent.Timeout(self.header_timeout, False):
                while req.body.read(65536):
                    pass


def _port(name: Any) -> int | None:
    return name[1] if isinstance(name, tuple) else None


def _buffered(unreader: Any) -> bool:
    """Bytes of the next request already read (pipelined behind the last one)."""
    return unreader.buf.seek(0, 2) > 0


def _readable(sock: Any, seconds: float) -> bool:
    try:
        wait_read(sock.fileno(), timeout=seconds)
    except (TimeoutError, OSError):
        return False
    return True


def end_reading(sock: socket.socket) -> None:
    """The handler's next read sees end-of-stream and closes the connection. On the socket
    under gevent's wrapper: gevent's own shutdown() fails the waiting reader with an error
    that gunicorn logs, with a traceback, as a socket error."""
    with contextlib.suppress(OSError):
        getattr(sock, "_sock", sock).shutdown(socket.SHUT_RD)
